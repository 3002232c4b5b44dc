"""Augmentation policies: RandAugment, AugMix, MixUp and CutMix, vectorized over the batch.

Written here rather than taken from keras-cv 0.9: on tf_keras its seeded layers gave
different batches on two runs with the same seed (measured), and its backend seed
generator advances a Python counter at trace time, so inside a traced `tf.data` map
some of its draws are constants.  These versions are stateless-seeded, so they are
reproducible, and choose an operation per image without a per-image Python loop: all
geometric choices become one matrix per image (one resampling pass), and the colour
operations are computed for the batch and selected per image.
"""

from __future__ import annotations

import math
import numbers

from tfimgopt.augment._base import (
    AugmentationLayer,
    about_center,
    check_probability,
    check_range,
    fold,
    from_float,
    reduce_spatial,
    register_op,
    to_float,
    translation_matrix,
    uniform,
    warp,
)
from tfimgopt.augment.color import grayscale
from tfimgopt.augment.geometric import image_size
from tfimgopt.compat import tf
from tfimgopt.errors import ConfigError, received

GEOMETRIC_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
COLOR_OPS = ("auto_contrast", "equalize", "solarize", "posterize", "color", "contrast", "brightness", "sharpness")
RANDAUGMENT_OPS = ("identity",) + COLOR_OPS + GEOMETRIC_OPS
# AugMix leaves out the operations that overlap ImageNet-C's corruptions (Hendrycks et al. 2020).
AUGMIX_OPS = ("auto_contrast", "equalize", "posterize", "solarize") + GEOMETRIC_OPS

MAX_ROTATE_DEGREES = 30.0
MAX_SHEAR = 0.3
MAX_TRANSLATE = 0.3  # fraction of the image side
MAX_ENHANCE = 0.9  # colour/contrast/brightness/sharpness factor 1 +- 0.9 * magnitude


# --- colour operations on float images scaled to [0, 1] -------------------------------


def _auto_contrast(u, m):
    low = reduce_spatial(u, tf.reduce_min)
    high = reduce_spatial(u, tf.reduce_max)
    span = high - low
    return tf.where(span > 0, (u - low) / tf.where(span > 0, span, 1.0), u)


def _equalize(u, m):
    """Per image and channel histogram equalization, PIL's `ImageOps.equalize` algorithm."""
    shape = tf.shape(u)
    b, h, w, c = shape[0], shape[1], shape[2], shape[3]
    q = tf.cast(tf.round(tf.clip_by_value(u, 0.0, 1.0) * 255.0), tf.int32)
    q = tf.reshape(tf.transpose(q, [0, 3, 1, 2]), [b, c, h * w])
    offsets = tf.reshape(tf.range(b * c) * 256, [b, c, 1])
    counts = tf.math.bincount(tf.reshape(q + offsets, [-1]), minlength=b * c * 256, maxlength=b * c * 256)
    counts = tf.reshape(counts, [b, c, 256])
    last = tf.reduce_max(tf.where(counts > 0, tf.range(256), -1), axis=-1, keepdims=True)
    last_count = tf.gather(counts, tf.maximum(last, 0), batch_dims=2)
    step = (tf.reduce_sum(counts, axis=-1, keepdims=True) - last_count) // 255
    before = tf.cumsum(counts, axis=-1, exclusive=True)
    lut = tf.minimum((step // 2 + before) // tf.maximum(step, 1), 255)
    lut = tf.where(step > 0, lut, tf.range(256))  # PIL leaves flat histograms alone
    out = tf.cast(tf.gather(lut, q, batch_dims=2), tf.float32) / 255.0
    return tf.transpose(tf.reshape(out, [b, c, h, w]), [0, 2, 3, 1])


def _solarize(u, m):
    threshold = 1.0 - m
    return tf.where(u >= threshold, 1.0 - u, u)


def _posterize(u, m):
    shift = tf.round(4.0 * m)  # keep 8 - shift bits
    step = tf.pow(2.0, shift)
    return tf.floor(tf.round(u * 255.0) / step) * step / 255.0


def _blend(base, u, factor):
    return base + factor * (u - base)


def _color(u, factor):
    if u.shape[-1] != 3:
        return u
    return _blend(grayscale(u), u, factor)


def _contrast(u, factor):
    gray = grayscale(u) if u.shape[-1] == 3 else u
    return _blend(tf.reduce_mean(gray, axis=(1, 2, 3), keepdims=True), u, factor)


def _brightness(u, factor):
    return u * factor


def _sharpness(u, factor):
    channels = u.shape[-1]
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
    blurred = tf.nn.depthwise_conv2d(u, kernel, [1, 1, 1, 1], "SAME")
    return _blend(blurred, u, factor)


_COLOR_FNS = {
    "auto_contrast": (_auto_contrast, False),
    "equalize": (_equalize, False),
    "solarize": (_solarize, False),
    "posterize": (_posterize, False),
    "color": (_color, True),
    "contrast": (_contrast, True),
    "brightness": (_brightness, True),
    "sharpness": (_sharpness, True),
}


def _geometric_matrix(op, m, sign, height, width):
    """Matrices (output -> input) of one geometric op at per-image magnitudes `m`."""
    signed = m * sign
    zero, one = tf.zeros_like(m), tf.ones_like(m)
    if op == "rotate":
        angle = signed * math.radians(MAX_ROTATE_DEGREES)
        linear = tf.stack([tf.cos(angle), -tf.sin(angle), tf.sin(angle), tf.cos(angle)], axis=1)
        return about_center(tf.reshape(linear, [-1, 2, 2]), height, width)
    if op == "shear_x":
        return about_center(tf.reshape(tf.stack([one, signed * MAX_SHEAR, zero, one], 1), [-1, 2, 2]), height, width)
    if op == "shear_y":
        return about_center(tf.reshape(tf.stack([one, zero, signed * MAX_SHEAR, one], 1), [-1, 2, 2]), height, width)
    if op == "translate_x":
        return translation_matrix(signed * MAX_TRANSLATE * tf.cast(width, tf.float32), zero)
    if op == "translate_y":
        return translation_matrix(zero, signed * MAX_TRANSLATE * tf.cast(height, tf.float32))
    raise AssertionError(op)


def apply_random_ops(images, seed, *, ops, rounds, magnitude, active, value_range, fill_value):
    """Applies `rounds` randomly chosen ops from `ops` to each image.

    Args:
        images: A batch of images (any dtype supported by `warp`).
        seed: Stateless seed.
        ops: Names from `RANDAUGMENT_OPS`.
        rounds: Number of ops applied in sequence.
        magnitude: Per-image magnitudes in [0, 1], shape [batch].
        active: Bool [rounds, batch]: which rounds apply to which image.
        value_range: `(min, max)` of the pixel values.
        fill_value: Value of pixels moved in from outside the image.

    Returns:
        float32 images scaled back to `value_range`.

    All geometric choices are composed into one resampling done first; colour ops then
    run in round order (geometric and colour ops commute except on filled borders).
    """
    batch = tf.shape(images)[0]
    height, width = image_size(images)
    choice = tf.random.stateless_uniform([rounds, batch], fold(seed, 1), 0, len(ops), dtype=tf.int32)
    choice = tf.where(active, choice, -1)
    signs = tf.where(tf.random.stateless_uniform([rounds, batch], fold(seed, 2)) < 0.5, -1.0, 1.0)
    geometric = [op for op in ops if op in GEOMETRIC_OPS]
    if geometric:
        total = tf.eye(3, batch_shape=[batch])
        for r in range(rounds):
            step = tf.eye(3, batch_shape=[batch])
            for op in geometric:
                chosen = (choice[r] == ops.index(op))[:, None, None]
                step = tf.where(chosen, _geometric_matrix(op, magnitude, signs[r], height, width), step)
            total = total @ step
        images = warp(images, total, (height, width), interpolation="bilinear", fill_mode="constant",
                      fill_value=fill_value, affine=True)  # rotations, shears, translations
    low, high = value_range
    u = (to_float(images) - low) / (high - low)
    for r in range(rounds):
        for op in ops:
            if op not in _COLOR_FNS:
                continue
            fn, takes_factor = _COLOR_FNS[op]
            arg = 1.0 + MAX_ENHANCE * magnitude * signs[r] if takes_factor else magnitude
            chosen = (choice[r] == ops.index(op))[:, None, None, None]
            u = tf.where(chosen, tf.clip_by_value(fn(u, tf.reshape(arg, [-1, 1, 1, 1])), 0.0, 1.0), u)
    return u * (high - low) + low


def _check_positive_int(name, value, high=16):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or not 1 <= value <= high:
        raise ConfigError(f"{name} must be an int in [1, {high}]. {received(name, value)}")
    return int(value)


def _check_alpha(value):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 < value < math.inf:
        raise ConfigError(f"alpha must be a positive number. {received('alpha', value)}")
    return float(value)


@register_op("randaugment")
class RandAugment(AugmentationLayer):
    """RandAugment (Cubuk et al. 2020): `num_ops` random operations per image.

    Args:
        num_ops: Operations applied to each image, in sequence.
        magnitude: Strength in [0, 1] (1 = rotate 30 degrees, shear 0.3, translate 30%,
            colour factors 1 +- 0.9, solarize everything, posterize to 4 bits).
        magnitude_stddev: Per-image Gaussian jitter of the magnitude.
        rate: Probability that each of the `num_ops` operations is applied.
        ops: Subset of `RANDAUGMENT_OPS` to draw from.
        **kwargs: `seed`, `value_range`.

    Example:
        >>> from tfimgopt.augment import RandAugment
        >>> layer = RandAugment(num_ops=2, magnitude=0.5, seed=0)
    """

    def __init__(self, num_ops=2, magnitude=0.5, magnitude_stddev=0.15, rate=10 / 11, ops=RANDAUGMENT_OPS,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_ops = _check_positive_int("num_ops", num_ops)
        self.magnitude = check_probability("magnitude", magnitude)
        self.magnitude_stddev = check_range("magnitude_stddev", magnitude_stddev, low=0.0, high=1.0,
                                            symmetric=False)[1]
        self.rate = check_probability("rate", rate)
        unknown = [op for op in ops if op not in RANDAUGMENT_OPS] if isinstance(ops, (list, tuple)) else ops
        if not isinstance(ops, (list, tuple)) or not ops or unknown:
            raise ConfigError(f"ops must be a non-empty list drawn from {RANDAUGMENT_OPS}. {received('ops', ops)}")
        self.ops = tuple(ops)

    def augment(self, images, seed):
        batch = tf.shape(images)[0]
        magnitude = self.magnitude + self.magnitude_stddev * tf.random.stateless_normal([batch], fold(seed, 10))
        magnitude = tf.clip_by_value(magnitude, 0.0, 1.0)
        active = tf.random.stateless_uniform([self.num_ops, batch], fold(seed, 11)) < self.rate
        out = apply_random_ops(images, fold(seed, 12), ops=self.ops, rounds=self.num_ops, magnitude=magnitude,
                               active=active, value_range=self.value_range,
                               fill_value=sum(self.value_range) / 2)
        return from_float(out, images.dtype, self.value_range)

    def get_config(self):
        return {**super().get_config(), "num_ops": self.num_ops, "magnitude": self.magnitude,
                "magnitude_stddev": self.magnitude_stddev, "rate": self.rate, "ops": list(self.ops)}


def _beta(seed, shape, alpha):
    a = tf.random.stateless_gamma(shape, fold(seed, 1), alpha=alpha)
    b = tf.random.stateless_gamma(shape, fold(seed, 2), alpha=alpha)
    return a / (a + b)


@register_op("augmix")
class AugMix(AugmentationLayer):
    """AugMix (Hendrycks et al. 2020): a Dirichlet mix of `width` random op chains,
    blended with the original by a Beta-distributed weight.

    Args:
        severity: Op magnitude in [0, 1].
        width: Number of chains mixed.
        depth: Ops per chain; `None` draws 1 to 3 per image and chain.
        alpha: Concentration of the Dirichlet and Beta distributions.
        **kwargs: `seed`, `value_range`.
    """

    def __init__(self, severity=0.3, width=3, depth=None, alpha=1.0, **kwargs):
        super().__init__(**kwargs)
        self.severity = check_probability("severity", severity)
        self.width = _check_positive_int("width", width)
        self.depth = None if depth is None else _check_positive_int("depth", depth)
        self.alpha = _check_alpha(alpha)

    def augment(self, images, seed):
        batch = tf.shape(images)[0]
        weights = tf.random.stateless_gamma([batch, self.width], fold(seed, 1), alpha=self.alpha)
        weights = weights / tf.reduce_sum(weights, axis=1, keepdims=True)
        keep = _beta(fold(seed, 2), [batch], self.alpha)
        magnitude = tf.fill([batch], self.severity)
        rounds = self.depth or 3
        mix = 0.0
        for i in range(self.width):
            chain_seed = fold(seed, 100 + i)
            if self.depth is None:
                depth = tf.random.stateless_uniform([batch], fold(chain_seed, 1), 1, 4, dtype=tf.int32)
            else:
                depth = tf.fill([batch], self.depth)
            active = tf.range(rounds)[:, None] < depth[None, :]
            chain = apply_random_ops(images, fold(chain_seed, 2), ops=AUGMIX_OPS, rounds=rounds,
                                     magnitude=magnitude, active=active, value_range=self.value_range,
                                     fill_value=self.value_range[0])
            mix += weights[:, i, None, None, None] * chain
        out = keep[:, None, None, None] * to_float(images) + (1.0 - keep[:, None, None, None]) * mix
        return from_float(out, images.dtype, self.value_range)

    def get_config(self):
        return {**super().get_config(), "severity": self.severity, "width": self.width, "depth": self.depth,
                "alpha": self.alpha}


class LabelMixLayer(AugmentationLayer):
    """Base of the layers that mix pairs of examples and their (one-hot) labels."""

    kind = "labels"
    takes_labels = True

    def __init__(self, alpha, **kwargs):
        super().__init__(**kwargs)
        self.alpha = _check_alpha(alpha)

    @staticmethod
    def check_labels(labels):
        labels = tf.convert_to_tensor(labels)
        if labels.shape.rank != 2 or not labels.dtype.is_floating:
            raise ConfigError(
                "MixUp and CutMix mix labels, so they need one-hot float labels of shape (batch, classes); "
                "build the pipeline with label_mode='one_hot'. "
                f"Received: labels of dtype {labels.dtype.name} and shape {labels.shape}"
            )
        return labels

    def augment(self, images, seed):
        raise ConfigError(f"{type(self).__name__} needs (images, labels) batches, not images alone.")

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


def _partner(seed, batch):
    return tf.argsort(tf.random.stateless_uniform([batch], seed))


@register_op("mixup")
class MixUp(LabelMixLayer):
    """MixUp (Zhang et al. 2018): convex blends of image pairs and of their labels.

    Args:
        alpha: The blend weight is drawn per example from Beta(alpha, alpha).
        **kwargs: `seed`, `value_range`.
    """

    def __init__(self, alpha=0.2, **kwargs):
        super().__init__(alpha, **kwargs)

    def augment_with_labels(self, images, labels, seed):
        labels = self.check_labels(labels)
        batch = tf.shape(images)[0]
        lam = _beta(fold(seed, 1), [batch], self.alpha)
        partner = _partner(fold(seed, 2), batch)
        x = to_float(images)
        mixed = lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * tf.gather(x, partner)
        lam_y = tf.cast(lam[:, None], labels.dtype)
        return from_float(mixed, images.dtype, self.value_range), lam_y * labels + (1 - lam_y) * tf.gather(
            labels, partner
        )


@register_op("cutmix")
class CutMix(LabelMixLayer):
    """CutMix (Yun et al. 2019): pastes a random box from a partner image; the labels mix
    in proportion to the pasted area.

    Args:
        alpha: The kept area fraction is drawn per example from Beta(alpha, alpha).
        **kwargs: `seed`, `value_range`.
    """

    def __init__(self, alpha=1.0, **kwargs):
        super().__init__(alpha, **kwargs)

    def augment_with_labels(self, images, labels, seed):
        labels = self.check_labels(labels)
        batch = tf.shape(images)[0]
        height, width = image_size(images)
        h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
        lam = _beta(fold(seed, 1), [batch], self.alpha)
        cut = tf.sqrt(1.0 - lam)
        cy = uniform(fold(seed, 2), [batch], 0.0, 1.0) * h
        cx = uniform(fold(seed, 3), [batch], 0.0, 1.0) * w
        y0 = tf.clip_by_value(tf.round(cy - cut * h / 2), 0.0, h)
        y1 = tf.clip_by_value(tf.round(cy + cut * h / 2), 0.0, h)
        x0 = tf.clip_by_value(tf.round(cx - cut * w / 2), 0.0, w)
        x1 = tf.clip_by_value(tf.round(cx + cut * w / 2), 0.0, w)
        rows = tf.range(h)[None, :, None]
        cols = tf.range(w)[None, None, :]
        inside = (
            (rows >= y0[:, None, None]) & (rows < y1[:, None, None])
            & (cols >= x0[:, None, None]) & (cols < x1[:, None, None])
        )
        partner = _partner(fold(seed, 4), batch)
        mixed = tf.where(inside[..., None], tf.gather(images, partner), images)
        kept = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
        kept = tf.cast(kept[:, None], labels.dtype)
        return mixed, kept * labels + (1 - kept) * tf.gather(labels, partner)
