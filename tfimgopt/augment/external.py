"""Keras preprocessing layers from other libraries as steps of an `Augmentation` chain.

`create_augmentation` accepts layer instances from tf_keras (`tf_keras.layers.RandomFlip`),
Keras 3 (`keras.layers.RandomRotation`) and keras-cv (`keras_cv.layers.RandAugment`) as
items beside its own op names. They run where they are in the chain, in `tf.data`, with
these limits:

- They are not fused: each is a separate pass over the batch, at that library's speed.
- They seed themselves as that library does (their own `seed=` and generator); the
  per-batch seeds tfimgopt's pipeline passes do not reach them, so a chain holding one is
  only as reproducible as that library (keras-cv is not deterministic on tf_keras).
- They take images only: label-mixing layers (keras-cv `MixUp`, `CutMix`...) are refused;
  use tfimgopt's `"mixup"` / `"cutmix"`.
- Keras 3 and keras-cv layers run in the data pipeline only, not inside a tf_keras model.
"""

from __future__ import annotations

from typing import Any

from tfimgopt.augment._base import AugmentationLayer, from_float
from tfimgopt.compat import is_keras3, keras, tf
from tfimgopt.errors import ConfigError

# keras-cv layers that need the labels (they take {"images", "labels"} dicts).
_LABEL_LAYERS = ("MixUp", "CutMix", "FourierMix", "MosaicMix", "Mosaic", "JitteredResize")


def library_of(layer: Any) -> str | None:
    """`"keras-cv"`, `"keras"` (Keras 3), `"tf_keras"`, or None when `layer` is no Keras layer."""
    if any((c.__module__ or "").startswith("keras_cv") for c in type(layer).__mro__):
        return "keras-cv"
    if is_keras3(layer):
        import keras as keras3

        return "keras" if isinstance(layer, keras3.layers.Layer) else None
    return "tf_keras" if isinstance(layer, keras.layers.Layer) else None


@keras.utils.register_keras_serializable(package="tfimgopt")
class ExternalLayer(AugmentationLayer):
    """One tf_keras, Keras 3 or keras-cv preprocessing layer as a step of a chain (see the module doc).

    Args:
        layer: The layer instance, called as `layer(images, training=True)`.
        value_range: Pixel range of the images; the output is clipped to it and cast back
            to the input dtype (Keras 3 layers return float32 for uint8 input).
    """

    kind = "image"

    def __init__(self, layer, *, value_range=(0, 255), **kwargs):
        kwargs.pop("seed", None)  # the wrapped layer seeds itself
        super().__init__(value_range=value_range, **kwargs)
        library = library_of(layer)
        if library is None or isinstance(layer, AugmentationLayer):
            raise ConfigError(
                "ExternalLayer wraps a tf_keras, Keras 3 or keras-cv preprocessing layer. "
                f"Received: {layer!r}")
        if type(layer).__name__ in _LABEL_LAYERS:
            raise ConfigError(
                f"{library} {type(layer).__name__} needs the labels, which a chain item does not get; use "
                f"tfimgopt's 'mixup' / 'cutmix' ops instead. Received: layer={layer.name!r}")
        self.layer = layer
        self.library = library

    def augment(self, images, seed):
        del seed  # seeded by the wrapped layer itself
        dtype = images.dtype
        out = self.layer(images, training=True)
        return from_float(tf.cast(tf.convert_to_tensor(out), tf.float32), dtype, self.value_range)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(self.layer.compute_output_shape(tuple(input_shape)))

    def get_config(self):
        config = super().get_config()
        if self.library == "tf_keras":
            config["layer"] = keras.layers.serialize(self.layer)
            return config
        raise ConfigError(
            f"A chain holding the {self.library} layer {self.layer.name!r} cannot be saved inside a tf_keras model "
            f"or config; rebuild it in code. Received: layer={self.layer.name!r}")

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(keras.layers.deserialize(config.pop("layer")), **config)


def check_in_model(layers) -> None:
    """Refuses Keras 3 / keras-cv steps in a chain that is about to run inside a tf_keras model."""
    for layer in layers:
        if isinstance(layer, ExternalLayer) and layer.library != "tf_keras":
            raise ConfigError(
                f"The {layer.library} layer {layer.layer.name!r} runs in the data pipeline only, not inside a tf_keras "
                "model: use placement='data' (or a tf_keras layer). "
                f"Received: layer={layer.layer.name!r}")
