"""Colour augmentation layers: brightness, contrast, saturation, hue, grayscale.

They compute in float32 within the declared `value_range`, clip to it, and return the
input's dtype (rounded for integer images).  Saturation, hue and grayscale need RGB.
"""

from __future__ import annotations

import math

import numpy as np

from tfimgopt.augment._base import (
    AugmentationLayer,
    bernoulli,
    check_probability,
    check_range,
    compiled,
    from_float,
    reduce_spatial,
    register_op,
    to_float,
    uniform,
)
from tfimgopt.compat import tf
from tfimgopt.errors import ConfigError

# ITU-R BT.601 luma, the weights `tf.image.rgb_to_grayscale` uses.
LUMA = (0.2989, 0.5870, 0.1140)
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


class ColorLayer(AugmentationLayer):
    """A layer that changes pixel values but not positions.

    Subclasses implement `adjust(images, seed)` on float32 images in `value_range`; it
    returns float32 (the caller clips).  `Augmentation` chains several `adjust` calls
    with one cast in and one cast out.
    """

    kind = "color"
    needs_rgb = False

    def check_channels(self, images):
        if self.needs_rgb and images.shape[-1] != 3:
            raise ConfigError(
                f"{type(self).__name__} needs RGB images (3 channels). Received: images with "
                f"{images.shape[-1]} channel(s); load the data with channels=3 or drop this op."
            )

    def adjust(self, images, seed):  # pragma: no cover - abstract
        raise NotImplementedError

    def augment(self, images, seed):
        return color_run(self, [self], images, seed[None])


def color_run(owner, layers, images, seeds):
    """Applies colour layers in order with one cast in and out, XLA-compiled and cached on `owner`."""
    for layer in layers:
        layer.check_channels(images)
    cache = owner.__dict__.setdefault("_color_runs", {})  # bypasses Keras attribute tracking
    key = tuple(id(layer) for layer in layers)
    if key not in cache:

        def run(images, seeds):
            x = to_float(images)
            for i, layer in enumerate(layers):
                x = tf.clip_by_value(layer.adjust(x, seeds[i]), *layer.value_range)
            return from_float(x, images.dtype, layers[-1].value_range)

        cache[key] = compiled(run)
    return cache[key](images, seeds)


def grayscale(images: tf.Tensor) -> tf.Tensor:
    """Luma of float RGB images, shape (..., 1)."""
    return tf.reduce_sum(images * tf.constant(LUMA, images.dtype), axis=-1, keepdims=True)


@register_op("random_brightness")
class RandomBrightness(ColorLayer):
    """Adds a random offset to every pixel (Keras `RandomBrightness` semantics).

    Args:
        factor: `f` or `(lower, upper)` within [-1, 1]: the offset is
            `uniform(lower, upper) * (max - min)` of `value_range`.
        **kwargs: `seed`, `value_range`.
    """

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = check_range("factor", factor, low=-1.0, high=1.0)

    def adjust(self, images, seed):
        span = self.value_range[1] - self.value_range[0]
        delta = uniform(seed, [tf.shape(images)[0], 1, 1, 1], *self.factor) * span
        return images + delta

    def get_config(self):
        return {**super().get_config(), "factor": list(self.factor)}


def _scale_range(name, factor, high=10.0):
    """`f` -> `(1 - f, 1 + f)` scale factors, clipped at 0."""
    if isinstance(factor, (int, float)) and not isinstance(factor, bool):
        low, up = check_range(name, factor, low=-1.0, high=high)
        return (max(0.0, 1.0 + low), 1.0 + up)
    pair = check_range(name, factor, low=0.0, high=high + 1.0, symmetric=False)
    return pair


class _ScaleLayer(ColorLayer):
    """A colour layer driven by one random scale factor per image (see `_scale_range`)."""

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor
        self._range = _scale_range("factor", factor)

    def scales(self, images, seed):
        return uniform(seed, [tf.shape(images)[0], 1, 1, 1], *self._range)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@register_op("random_contrast")
class RandomContrast(_ScaleLayer):
    """Scales each channel's deviation from its mean by a random factor.

    Args:
        factor: `f` means factors in `[1 - f, 1 + f]`; a pair `(lower, upper)` gives
            the factors directly (both >= 0).
        **kwargs: `seed`, `value_range`.
    """

    def adjust(self, images, seed):
        scale = self.scales(images, seed)
        mean = reduce_spatial(images) / tf.cast(tf.shape(images)[1] * tf.shape(images)[2], images.dtype)
        return (images - mean) * scale + mean


@register_op("random_saturation")
class RandomSaturation(_ScaleLayer):
    """Blends each image with its grayscale version by a random factor (0 = gray).

    Args:
        factor: `f` means saturation factors in `[1 - f, 1 + f]`; a pair gives them
            directly.
        **kwargs: `seed`, `value_range`.
    """

    needs_rgb = True

    def adjust(self, images, seed):
        gray = grayscale(images)
        return gray + (images - gray) * self.scales(images, seed)


@register_op("random_hue")
class RandomHue(ColorLayer):
    """Rotates each image's hue by a random angle (a rotation in YIQ colour space).

    Args:
        factor: `f` or `(lower, upper)` within [-0.5, 0.5], in fractions of a full turn
            of the colour wheel.
        **kwargs: `seed`, `value_range`.
    """

    needs_rgb = True

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = check_range("factor", factor, low=-0.5, high=0.5)

    def adjust(self, images, seed):
        theta = uniform(seed, [tf.shape(images)[0]], *self.factor) * (2.0 * math.pi)
        cos, sin = tf.cos(theta), tf.sin(theta)
        one, zero = tf.ones_like(cos), tf.zeros_like(cos)
        rotation = tf.reshape(tf.stack([one, zero, zero, zero, cos, -sin, zero, sin, cos], axis=1), [-1, 3, 3])
        to_yiq = tf.constant(_RGB_TO_YIQ, tf.float32)
        from_yiq = tf.constant(np.linalg.inv(np.array(_RGB_TO_YIQ)), tf.float32)
        matrices = from_yiq[None] @ rotation @ to_yiq[None]
        return tf.einsum("bhwc,bdc->bhwd", images, matrices)

    def get_config(self):
        return {**super().get_config(), "factor": list(self.factor)}


@register_op("random_grayscale")
class RandomGrayscale(ColorLayer):
    """Replaces an image by its luma (kept as 3 channels) with probability `rate`.

    Args:
        rate: Probability per image.
        **kwargs: `seed`, `value_range`.
    """

    needs_rgb = True

    def __init__(self, rate=0.2, **kwargs):
        super().__init__(**kwargs)
        self.rate = check_probability("rate", rate)

    def adjust(self, images, seed):
        chosen = bernoulli(seed, [tf.shape(images)[0], 1, 1, 1], self.rate)
        return tf.where(chosen, tf.broadcast_to(grayscale(images), tf.shape(images)), images)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}
