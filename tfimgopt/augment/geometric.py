"""Geometric augmentation layers: flips, rotation, translation, zoom, crops.

Each layer describes itself as per-image 3x3 matrices (output pixel -> input pixel), so
`Augmentation` can multiply a run of them together and resample each image once.
Used alone, a layer resamples with its own matrices.  Pixel coordinates put pixel
centres at integers and rotate about `((width - 1) / 2, (height - 1) / 2)`, so flips
and quarter turns are exact.
"""

from __future__ import annotations

import math
import numbers

from tfimgopt.augment._base import (
    FILL_MODES,
    INTERPOLATIONS,
    AugmentationLayer,
    about_center,
    bernoulli,
    check_choice,
    check_range,
    fold,
    register_op,
    translation_matrix,
    uniform,
    warp,
)
from tfimgopt.compat import tf
from tfimgopt.errors import ConfigError, received

FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")


def image_size(images: tf.Tensor):
    """(height, width) as Python ints when static, else as scalar tensors."""
    shape = tf.shape(images)
    h = images.shape[1] if images.shape[1] is not None else shape[1]
    w = images.shape[2] if images.shape[2] is not None else shape[2]
    return h, w


class GeometricLayer(AugmentationLayer):
    """A layer whose effect is one resampling through per-image matrices.

    Args:
        interpolation: `"bilinear"` or `"nearest"` (faster; exact for flips and crops).
        fill_mode: How points outside the image are filled: `"reflect"` (the Keras
            default), `"constant"` (fastest), `"wrap"` or `"nearest"`.
        fill_value: The value used by `"constant"` fill.
        seed: Seed of the layer's own random stream (used when the caller passes none).
        value_range: `(min, max)` of the pixel values.
    """

    kind = "geometric"
    #: Layers whose sampling points fall on pixel centres; they fuse with any group.
    exact = False
    #: The layer's matrices are affine (last row `[0, 0, 1]`): the warp then skips the
    #: perspective divide (13% of the warp at 224). Every built-in layer says True; a layer
    #: of your own keeps the general (projective) path unless it says so too.
    affine = False

    def __init__(self, *, interpolation="bilinear", fill_mode="reflect", fill_value=0.0, **kwargs):
        super().__init__(**kwargs)
        self.interpolation = check_choice("interpolation", interpolation, INTERPOLATIONS)
        self.fill_mode = check_choice("fill_mode", fill_mode, FILL_MODES)
        if not isinstance(fill_value, numbers.Real) or isinstance(fill_value, bool) or not math.isfinite(fill_value):
            raise ConfigError(f"fill_value must be a finite number. {received('fill_value', fill_value)}")
        self.fill_value = float(fill_value)

    def transform(self, batch, height, width, seed):
        """Returns `(matrices [batch, 3, 3], (out_height, out_width))` for one call."""
        raise NotImplementedError

    def inference(self, images):
        """What the layer does when `training=False` (identity unless the shape changes)."""
        return images

    def call(self, inputs, training=True, seed=None):
        if training is False:
            return self.inference(inputs)
        return super().call(inputs, training=training, seed=seed)

    def augment(self, images, seed):
        height, width = image_size(images)
        matrices, size = self.transform(tf.shape(images)[0], height, width, seed)
        return warp(images, matrices, size, interpolation=self.interpolation, fill_mode=self.fill_mode,
                    fill_value=self.fill_value, affine=self.affine)

    def get_config(self):
        config = super().get_config()
        config.update(interpolation=self.interpolation, fill_mode=self.fill_mode, fill_value=self.fill_value)
        return config


@register_op("random_flip")
class RandomFlip(GeometricLayer):
    """Flips each image horizontally and/or vertically with probability 1/2 per axis.

    Args:
        mode: `"horizontal"`, `"vertical"` or `"horizontal_and_vertical"`.
        **kwargs: See `GeometricLayer`.

    Example:
        >>> from tfimgopt.augment import RandomFlip
        >>> flipped = RandomFlip("horizontal", seed=0)(images)
    """

    affine = True
    exact = True

    def __init__(self, mode="horizontal", **kwargs):
        super().__init__(**kwargs)
        self.mode = check_choice("mode", mode, FLIP_MODES)

    def transform(self, batch, height, width, seed):
        one = tf.ones([batch])
        sx = tf.where(bernoulli(fold(seed, 1), [batch], 0.5), -one, one) if self.mode != "vertical" else one
        sy = tf.where(bernoulli(fold(seed, 2), [batch], 0.5), -one, one) if self.mode != "horizontal" else one
        linear = tf.reshape(tf.stack([sx, 0 * one, 0 * one, sy], axis=1), [-1, 2, 2])
        return about_center(linear, height, width), (height, width)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@register_op("random_rotation")
class RandomRotation(GeometricLayer):
    """Rotates each image by a random angle; positive angles turn counter-clockwise.

    Args:
        factor: Fraction of a full turn: `f` means angles in `[-f * 360, f * 360]`
            degrees, `(lower, upper)` sets the range (Keras `RandomRotation` semantics).
        **kwargs: See `GeometricLayer`.
    """

    affine = True

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = check_range("factor", factor, low=-1.0, high=1.0)

    def transform(self, batch, height, width, seed):
        angle = uniform(seed, [batch], *self.factor) * (2.0 * math.pi)
        cos, sin = tf.cos(angle), tf.sin(angle)
        linear = tf.reshape(tf.stack([cos, -sin, sin, cos], axis=1), [-1, 2, 2])
        return about_center(linear, height, width), (height, width)

    def get_config(self):
        return {**super().get_config(), "factor": list(self.factor)}


@register_op("random_translation")
class RandomTranslation(GeometricLayer):
    """Shifts each image by a random fraction of its height and width.

    Args:
        height_factor: `f` or `(lower, upper)` as fractions of the height; positive
            values move the content down.
        width_factor: The same for the width; positive values move the content right.
        **kwargs: See `GeometricLayer`.
    """

    affine = True

    def __init__(self, height_factor, width_factor, **kwargs):
        super().__init__(**kwargs)
        self.height_factor = check_range("height_factor", height_factor, low=-1.0, high=1.0)
        self.width_factor = check_range("width_factor", width_factor, low=-1.0, high=1.0)

    def transform(self, batch, height, width, seed):
        dy = uniform(fold(seed, 1), [batch], *self.height_factor) * tf.cast(height, tf.float32)
        dx = uniform(fold(seed, 2), [batch], *self.width_factor) * tf.cast(width, tf.float32)
        return translation_matrix(dx, dy), (height, width)

    def get_config(self):
        return {**super().get_config(), "height_factor": list(self.height_factor),
                "width_factor": list(self.width_factor)}


@register_op("random_zoom")
class RandomZoom(GeometricLayer):
    """Zooms each image about its centre (Keras `RandomZoom` semantics).

    Args:
        height_factor: `f` or `(lower, upper)`; the vertical scale of the sampled area is
            `1 + factor`, so positive values zoom out and negative values zoom in.
        width_factor: The same horizontally; `None` keeps the aspect ratio.
        **kwargs: See `GeometricLayer`.
    """

    affine = True

    def __init__(self, height_factor, width_factor=None, **kwargs):
        super().__init__(**kwargs)
        self.height_factor = check_range("height_factor", height_factor, low=-0.99, high=10.0)
        self.width_factor = (
            None if width_factor is None else check_range("width_factor", width_factor, low=-0.99, high=10.0)
        )

    def transform(self, batch, height, width, seed):
        zy = 1.0 + uniform(fold(seed, 1), [batch], *self.height_factor)
        zx = zy if self.width_factor is None else 1.0 + uniform(fold(seed, 2), [batch], *self.width_factor)
        zero = tf.zeros_like(zx)
        linear = tf.reshape(tf.stack([zx, zero, zero, zy], axis=1), [-1, 2, 2])
        return about_center(linear, height, width), (height, width)

    def get_config(self):
        return {**super().get_config(), "height_factor": list(self.height_factor),
                "width_factor": None if self.width_factor is None else list(self.width_factor)}


def _check_size(name, value):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive int. {received(name, value)}")
    return int(value)


def _center_crop(images, height, width):
    h, w = image_size(images)
    top, left = (h - height) // 2, (w - width) // 2
    return images[:, top : top + height, left : left + width, :]


@register_op("random_crop")
class RandomCrop(GeometricLayer):
    """Crops a random `height` x `width` window from each image (centre crop at inference).

    Args:
        height: Output height in pixels, at most the input height.
        width: Output width in pixels, at most the input width.
        **kwargs: See `GeometricLayer`.
    """

    affine = True
    exact = True

    def __init__(self, height, width, **kwargs):
        super().__init__(**kwargs)
        self.height = _check_size("height", height)
        self.width = _check_size("width", width)

    def _check_input(self, height, width):
        if isinstance(height, int) and isinstance(width, int) and (height < self.height or width < self.width):
            raise ConfigError(
                f"RandomCrop of {self.height}x{self.width} needs images at least that large. "
                f"Received: images of {height}x{width}"
            )

    def transform(self, batch, height, width, seed):
        self._check_input(height, width)
        room_y = tf.cast(height - self.height + 1, tf.float32)
        room_x = tf.cast(width - self.width + 1, tf.float32)
        dy = tf.floor(uniform(fold(seed, 1), [batch], 0.0, 1.0) * room_y)
        dx = tf.floor(uniform(fold(seed, 2), [batch], 0.0, 1.0) * room_x)
        return translation_matrix(-dx, -dy), (self.height, self.width)

    def inference(self, images):
        self._check_input(*image_size(images))
        return _center_crop(images, self.height, self.width)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([input_shape[0], self.height, self.width, input_shape[-1]])

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width}


@register_op("random_resized_crop")
class RandomResizedCrop(GeometricLayer):
    """Inception-style crop: a random area and aspect ratio, resized to a fixed size.

    Args:
        height: Output height.
        width: Output width.
        scale: `(lower, upper)` fraction of the image area the crop covers.
        ratio: `(lower, upper)` aspect ratio (width / height) of the crop.
        **kwargs: See `GeometricLayer`.

    At inference the whole image is resized to `height` x `width`.
    """

    affine = True

    def __init__(self, height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), **kwargs):
        super().__init__(**kwargs)
        self.height = _check_size("height", height)
        self.width = _check_size("width", width)
        self.scale = check_range("scale", scale, low=1e-6, high=1.0, symmetric=False)
        self.ratio = check_range("ratio", ratio, low=1e-3, high=1e3, symmetric=False)
        if self.scale[0] <= 0 or self.ratio[0] <= 0:
            raise ConfigError(f"scale and ratio must be positive. Received: scale={scale}, ratio={ratio}")

    def transform(self, batch, height, width, seed):
        h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
        area = uniform(fold(seed, 1), [batch], *self.scale) * h * w
        log_ratio = uniform(fold(seed, 2), [batch], math.log(self.ratio[0]), math.log(self.ratio[1]))
        crop_w = tf.minimum(tf.sqrt(area * tf.exp(log_ratio)), w)
        crop_h = tf.minimum(tf.sqrt(area / tf.exp(log_ratio)), h)
        x0 = uniform(fold(seed, 3), [batch], 0.0, 1.0) * (w - crop_w)
        y0 = uniform(fold(seed, 4), [batch], 0.0, 1.0) * (h - crop_h)
        sx, sy = crop_w / self.width, crop_h / self.height
        zero, one = tf.zeros_like(sx), tf.ones_like(sx)
        matrices = tf.stack(
            [sx, zero, x0 + 0.5 * sx - 0.5, zero, sy, y0 + 0.5 * sy - 0.5, zero, zero, one], axis=1
        )
        return tf.reshape(matrices, [-1, 3, 3]), (self.height, self.width)

    def inference(self, images):
        resized = tf.image.resize(images, (self.height, self.width))
        return tf.cast(tf.round(resized), images.dtype) if images.dtype.is_integer else tf.cast(resized, images.dtype)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([input_shape[0], self.height, self.width, input_shape[-1]])

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width, "scale": list(self.scale),
                "ratio": list(self.ratio)}
