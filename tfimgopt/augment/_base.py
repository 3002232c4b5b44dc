"""Shared machinery of the augmentation layers: seeds, value ranges, argument checks, the warp.

Every layer draws its randomness from stateless ops keyed by a per-call seed, so a
pipeline that passes seeds (see `tfimgopt.data.build_pipeline`) produces the same
batches on every run, even with parallel `map` calls.  Without an explicit seed a layer
draws one from its own seeded `tf.random.Generator` (the "model" placement).
"""

from __future__ import annotations

import math
import numbers
import os

from tfimgopt._registry import Registry
from tfimgopt.compat import keras, tf
from tfimgopt.errors import ConfigError, received

INTERPOLATIONS = ("nearest", "bilinear")

OPS: Registry[type] = Registry("augmentation op")
POLICIES: Registry[list] = Registry("augmentation policy")


def register_op(name: str):
    """Class decorator: makes an `AugmentationLayer` an op of specs and configs under `name`.

    The class is also registered as Keras-serializable (package "tfimgopt"), so models
    holding it save and load. A name registered already raises `ConfigError`.

    Example:
        >>> from tfimgopt.augment import AugmentationLayer, create_augmentation, register_op
        >>> @register_op("invert")
        ... class Invert(AugmentationLayer):
        ...     def augment(self, images, seed):
        ...         low, high = self.value_range
        ...         return high + low - images
        >>> create_augmentation(["invert"]).steps[0].__class__.__name__
        'Invert'
    """

    def add(cls: type) -> type:
        OPS.register(name, cls)
        return keras.utils.register_keras_serializable(package="tfimgopt")(cls)

    return add


def register_policy(name: str, spec: list) -> list:
    """Registers a named policy: a spec list of op names or `{"op": name, **parameters}`.

    A name registered already raises `ConfigError`; the ops are checked when the policy is built.
    """
    if not isinstance(spec, list):
        raise ConfigError(f"A policy is a list of ops. {received('spec', spec)}")
    return POLICIES.register(name, spec)
FILL_MODES = ("constant", "reflect", "wrap", "nearest")


def check_range(name: str, value, *, low: float, high: float, symmetric: bool = True) -> tuple[float, float]:
    """Turns `factor` or `(lower, upper)` into a validated `(lower, upper)` pair.

    A single number `f` means `(-f, f)` when `symmetric`, else `(0, f)`.
    """
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        pair = (-float(value), float(value)) if symmetric else (0.0, float(value))
        if symmetric and value < 0:
            raise ConfigError(f"{name} must be non-negative when given as one number. {received(name, value)}")
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value
    ):
        pair = (float(value[0]), float(value[1]))
    else:
        raise ConfigError(f"{name} must be a number or a (lower, upper) pair of numbers. {received(name, value)}")
    if not all(math.isfinite(v) for v in pair) or pair[0] > pair[1]:
        raise ConfigError(f"{name} must be finite with lower <= upper. {received(name, value)}")
    if pair[0] < low or pair[1] > high:
        raise ConfigError(f"{name} must lie within [{low}, {high}]. {received(name, value)}")
    return pair


def check_choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {tuple(choices)}. {received(name, value)}")
    return value


def check_seed(seed) -> int | None:
    if seed is not None and (not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0):
        raise ConfigError(f"seed must be a non-negative int or None. {received('seed', seed)}")
    return None if seed is None else int(seed)


def check_value_range(value_range) -> tuple[float, float]:
    if (
        not isinstance(value_range, (tuple, list))
        or len(value_range) != 2
        or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value_range)
        or not value_range[0] < value_range[1]
    ):
        raise ConfigError(
            f"value_range must be a (min, max) pair with min < max, e.g. (0, 255) or (0, 1). "
            f"{received('value_range', value_range)}"
        )
    return (float(value_range[0]), float(value_range[1]))


def check_probability(name: str, value) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1]. {received(name, value)}")
    return float(value)


def fold(seed: tf.Tensor, salt: int) -> tf.Tensor:
    """A new stateless seed derived from `seed` and an integer `salt`."""
    return tf.random.experimental.stateless_fold_in(seed, salt)


def uniform(seed, shape, low, high) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, seed, minval=low, maxval=high, dtype=tf.float32)


def bernoulli(seed, shape, rate) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, seed) < rate


def as_seed(seed) -> tf.Tensor:
    """Normalizes a seed to an int64 tensor of shape [2] (stateless ops' convention)."""
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    if seed.shape.rank == 0:
        seed = tf.stack([seed, tf.constant(0, tf.int64)])
    return tf.reshape(seed, [2])


def check_images(images: tf.Tensor, layer: str) -> tf.Tensor:
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4:
        raise ConfigError(
            f"{layer} works on batches of images shaped (batch, height, width, channels); batch the "
            f"dataset before augmenting. Received: images with shape {images.shape}"
        )
    return images


def to_float(images: tf.Tensor) -> tf.Tensor:
    return images if images.dtype == tf.float32 else tf.cast(images, tf.float32)


def from_float(images: tf.Tensor, dtype: tf.DType, value_range) -> tf.Tensor:
    """Casts back to the caller's dtype, rounding and saturating integer types."""
    images = tf.clip_by_value(images, value_range[0], value_range[1])
    if dtype == tf.float32:
        return images
    if dtype.is_integer:
        return tf.saturate_cast(tf.round(images), dtype)
    return tf.cast(images, dtype)


def reduce_spatial(images: tf.Tensor, reduce=tf.reduce_sum) -> tf.Tensor:
    """`reduce(images, axis=(1, 2), keepdims=True)`: a per-image, per-channel sum, min or max.

    With static sizes the pixels are regrouped as rows of `k` whole pixels (`k * channels`
    contiguous values) and reduced over the rows first: XLA vectorizes that along the row,
    where reducing straight over (height, width) strides by the channel count (measured
    1.5x faster for the 224x224 RGB contrast pass). Sums may differ from the direct
    reduction in the last bits (another order of additions); min and max are the same.
    """
    _, height, width, channels = images.shape
    if None in (height, width, channels):
        return reduce(images, axis=(1, 2), keepdims=True)
    pixels = height * width
    longest = max(128, pixels // 32)  # about 32 rows (measured at 224x224: 5.4 ms vs 7.3 with k <= 128)
    k = max(d for d in range(1, min(pixels, longest) + 1) if pixels % d == 0)
    rows = reduce(tf.reshape(images, [-1, pixels // k, k * channels]), axis=1)
    return tf.reshape(reduce(tf.reshape(rows, [-1, k, channels]), axis=1), [-1, 1, 1, channels])


def _xla_enabled() -> bool:
    return os.environ.get("TFIMGOPT_AUGMENT_XLA", "1") != "0"


def compiled(fn):
    """`fn` compiled with XLA (fused loops on the host CPU, a GPU or a TPU host).

    TensorFlow's own image kernels run one op at a time; XLA fuses the resampling and
    the colour arithmetic into single passes, several times faster on CPU (see
    benchmarks/RESULTS.md).  `TFIMGOPT_AUGMENT_XLA=0` turns it off.
    """
    jitted = tf.function(fn, jit_compile=True, autograph=False)
    return lambda *args: (jitted if _xla_enabled() else fn)(*args)


def _reflect(i, n):
    """TF's "reflect" fill: (d c b a | a b c d | d c b a)."""
    i = tf.math.floormod(i, 2 * n)
    return tf.where(i >= n, 2 * n - 1 - i, i)


def _gather_warp(images, transforms, output_size, interpolation, fill_mode, fill_value, affine=False):
    """Resampling by gathers: the same maths as `ImageProjectiveTransformV3`, XLA-friendly.

    `affine=True` promises that the transforms' perspective terms are 0 (every built-in
    geometric layer): the per-pixel divide by `k = 1` is left out, the same result and
    13% faster at 224x224 (benchmarks/RESULTS.md, issue 35).
    """
    batch = tf.shape(images)[0]
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    out_h, out_w = output_size
    # Broadcast row and column indices, not a meshgrid: XLA folds a meshgrid into two
    # constant images and reads them back per pixel (measured: the warp 17% slower at 224).
    xs = tf.range(out_w, dtype=tf.float32)[None, None, :]
    ys = tf.range(out_h, dtype=tf.float32)[None, :, None]
    t = transforms[:, :, None, None]
    sx = t[:, 0] * xs + t[:, 1] * ys + t[:, 2]
    sy = t[:, 3] * xs + t[:, 4] * ys + t[:, 5]
    if not affine:
        k = t[:, 6] * xs + t[:, 7] * ys + 1.0
        sx, sy = sx / k, sy / k
    padded = fill_mode == "constant" and interpolation != "nearest"
    # fill_value is exactly a value of the image dtype: fill in that dtype, no float copy.
    exact = images.dtype.is_floating or (float(fill_value).is_integer()
                                         and images.dtype.min <= fill_value <= images.dtype.max)
    if padded:
        # A one-pixel border of fill_value: clipping a coordinate to [-1, size] then reads
        # the border wherever the sample is outside, with no per-neighbour masks (measured:
        # masks made bilinear constant fill 1.6x slower than reflect). Nearest sampling has
        # one neighbour: its mask is cheaper than copying the image into a border.
        source = images if exact else tf.cast(images, tf.float32)
        source = tf.pad(source, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=tf.cast(fill_value, source.dtype))
        stride = width + 2
        flat = tf.reshape(source, [-1, channels])
        base = (tf.range(batch) * ((height + 2) * stride) + stride + 1)[:, None, None]
    else:
        stride = width
        flat = tf.reshape(images, [-1, channels])
        base = (tf.range(batch) * (height * width))[:, None, None]

    def sample(iy, ix, dtype=tf.float32):
        inside = None
        if fill_mode == "reflect":
            iy, ix = _reflect(iy, height), _reflect(ix, width)
        elif fill_mode == "wrap":
            iy, ix = tf.math.floormod(iy, height), tf.math.floormod(ix, width)
        elif padded:
            iy, ix = tf.clip_by_value(iy, -1, height), tf.clip_by_value(ix, -1, width)
        else:
            if fill_mode == "constant":
                inside = (iy >= 0) & (iy < height) & (ix >= 0) & (ix < width)
            iy, ix = tf.clip_by_value(iy, 0, height - 1), tf.clip_by_value(ix, 0, width - 1)
        values = tf.cast(tf.gather(flat, base + iy * stride + ix), dtype)
        return values if inside is None else tf.where(inside[..., None], values, tf.cast(fill_value, dtype))

    if interpolation == "nearest":
        iy, ix = tf.cast(tf.floor(sy + 0.5), tf.int32), tf.cast(tf.floor(sx + 0.5), tf.int32)
        if exact:  # copies of source pixels: no arithmetic, so none of the float round trip
            return sample(iy, ix, images.dtype)
        out = sample(iy, ix)
    else:
        x0, y0 = tf.floor(sx), tf.floor(sy)
        fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
        x0, y0 = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
        top = sample(y0, x0) * (1.0 - fx) + sample(y0, x0 + 1) * fx
        bottom = sample(y0 + 1, x0) * (1.0 - fx) + sample(y0 + 1, x0 + 1) * fx
        out = top * (1.0 - fy) + bottom * fy
    if images.dtype.is_integer:
        return tf.saturate_cast(tf.floor(out + 0.5), images.dtype)
    return tf.cast(out, images.dtype)


_compiled_warps: dict = {}


def warp(
    images: tf.Tensor,
    matrices: tf.Tensor,
    output_size: tuple,
    *,
    interpolation: str = "bilinear",
    fill_mode: str = "reflect",
    fill_value: float = 0.0,
    affine: bool = False,
) -> tf.Tensor:
    """Resamples `images` through per-image 3x3 matrices mapping output to input pixels.

    One pass for any chain of flips, rotations, shears, translations, zooms and crops.
    With static image sizes it runs as one XLA-compiled gather kernel; otherwise it
    falls back to TensorFlow's `ImageProjectiveTransformV3` (same sampling rules).
    `affine=True` (the matrices' last row is `[0, 0, 1]`) skips the perspective divide.
    """
    flat = tf.cast(tf.reshape(matrices, [-1, 9])[:, :8] / matrices[:, 2:3, 2], tf.float32)
    static = all(isinstance(s, int) for s in output_size) and None not in images.shape[1:]
    if static:
        key = (tuple(output_size), interpolation, fill_mode, float(fill_value), bool(affine))
        if key not in _compiled_warps:
            _compiled_warps[key] = compiled(
                lambda x, t: _gather_warp(x, t, key[0], interpolation, fill_mode, float(fill_value), key[4])
            )
        return _compiled_warps[key](images, flat)
    out_shape = tf.stack([tf.cast(s, tf.int32) for s in output_size])
    dtype = images.dtype
    if dtype not in (tf.uint8, tf.int32, tf.int64, tf.float16, tf.bfloat16, tf.float32, tf.float64):
        images = tf.cast(images, tf.float32)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=flat, output_shape=out_shape, fill_value=tf.constant(fill_value, tf.float32),
        interpolation=interpolation.upper(), fill_mode=fill_mode.upper(),
    )
    return tf.cast(out, dtype)


def translation_matrix(dx: tf.Tensor, dy: tf.Tensor) -> tf.Tensor:
    """Matrices (output -> input) that move image content by (+dx, +dy) pixels."""
    one, zero = tf.ones_like(dx), tf.zeros_like(dx)
    return tf.reshape(tf.stack([one, zero, -dx, zero, one, -dy, zero, zero, one], axis=1), [-1, 3, 3])


def about_center(linear: tf.Tensor, height, width) -> tf.Tensor:
    """Embeds per-image 2x2 maps (output -> input) acting about the image centre into 3x3 matrices."""
    cx = (tf.cast(width, tf.float32) - 1.0) / 2.0
    cy = (tf.cast(height, tf.float32) - 1.0) / 2.0
    a, b, c, d = linear[:, 0, 0], linear[:, 0, 1], linear[:, 1, 0], linear[:, 1, 1]
    tx = cx - a * cx - b * cy
    ty = cy - c * cx - d * cy
    zero, one = tf.zeros_like(a), tf.ones_like(a)
    return tf.reshape(tf.stack([a, b, tx, c, d, ty, zero, zero, one], axis=1), [-1, 3, 3])


class AugmentationLayer(keras.layers.Layer):
    """Base of tfimgopt's augmentation layers.

    Subclasses implement `augment(images, seed)` on a 4-D batch (and geometric layers
    `transform(...)`, colour layers `adjust(...)`, so `Augmentation` can fuse them).
    Layers are active when `training` is True (the default outside a model), and pass
    images through unchanged at inference.
    """

    kind = "image"  # "geometric", "color", "image" or "labels"
    takes_labels = False

    def __init__(self, *, seed: int | None = None, value_range=(0, 255), **kwargs):
        super().__init__(**kwargs)
        self.seed = check_seed(seed)
        self.value_range = check_value_range(value_range)
        self._generator = None

    def _call_seed(self, seed):
        if seed is not None:
            return as_seed(seed)
        if self._generator is None:
            with tf.init_scope():
                self._generator = (
                    tf.random.Generator.from_seed(self.seed)
                    if self.seed is not None
                    else tf.random.Generator.from_non_deterministic_state()
                )
        return self._generator.make_seeds(1)[:, 0]

    def call(self, inputs, training=True, seed=None):
        if training is False:
            return inputs
        seed = self._call_seed(seed)
        if self.takes_labels:
            images, labels = inputs
            return self.augment_with_labels(check_images(images, type(self).__name__), labels, seed)
        return self.augment(check_images(inputs, type(self).__name__), seed)

    def augment(self, images, seed):  # pragma: no cover - abstract
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(seed=self.seed, value_range=list(self.value_range))
        return config
