"""tfimgopt augmentation as a Keras 3 layer, for Keras 3 `Sequential` / functional models.

Importing this module imports Keras 3 and registers `Keras3Augmentation` with Keras 3's
serialization (package "tfimgopt"), so a saved Keras 3 model holding one loads after
`import tfimgopt.keras3_layers`. It needs Keras 3's TensorFlow backend: the augmentation
is TensorFlow ops.

Example:
    >>> import keras
    >>> from tfimgopt.keras3_layers import Keras3Augmentation
    >>> model = keras.Sequential([keras.Input((32, 32, 3)), Keras3Augmentation("default", seed=0),
    ...                           keras.layers.Rescaling(1 / 255), keras.layers.Conv2D(8, 3)])
"""

from __future__ import annotations

import keras

from tfimgopt.compat import keras as tf_keras
from tfimgopt.errors import ConfigError


@keras.saving.register_keras_serializable(package="tfimgopt", name="AugmentationLayer")  # the name files hold
class Keras3Augmentation(keras.layers.Layer):
    """A tfimgopt augmentation chain (policy name, spec or `Augmentation`) as a Keras 3 layer.

    Active in `fit` (and when called directly), a pass-through in `predict`/`evaluate`,
    like Keras 3's own preprocessing layers. Seeded exactly like the chain in `tf.data`:
    with `seed=` the layer draws the same stream of per-call seeds as the tf_keras chain,
    and a `seed` passed at call time (what `build_pipeline` passes per batch) gives the
    same images as the pipeline.

    Args:
        spec: What `create_augmentation` takes: a policy name, a list of ops, or an
            `Augmentation`. Label-mixing ops (MixUp, CutMix) need the labels: use them in
            `tf.data` instead.
        seed: Seed of the chain.
        value_range: Pixel range of the images the layer will see.
    """

    def __init__(self, spec="default", *, seed=None, value_range=(0, 255), **kwargs):
        super().__init__(**kwargs)
        if keras.backend.backend() != "tensorflow":
            raise ConfigError(
                "tfimgopt augmentation is TensorFlow ops; inside a Keras 3 model it needs the TensorFlow backend "
                f"(KERAS_BACKEND=tensorflow). On other backends use it in tf.data (build_pipeline). "
                f"Received: backend={keras.backend.backend()!r}")
        from tfimgopt.augment import create_augmentation

        if isinstance(spec, dict) and "class_name" in spec:  # from get_config
            spec = tf_keras.layers.deserialize(spec)
        self.augmentation = create_augmentation(spec, seed=seed, value_range=value_range)
        if self.augmentation.takes_labels:
            raise ConfigError(
                "MixUp/CutMix need the labels, which a layer inside a model does not get; put them in tf.data "
                "(build_pipeline(..., augment=...)). Received: a spec with a label-mixing op")
        self.seed, self.value_range = seed, tuple(value_range)

    def call(self, inputs, training=True, seed=None):
        # The tf_keras chain's own call: plain TensorFlow ops on this layer's tensors.
        return self.augmentation.call(inputs, training=training is not False, seed=seed)

    def compute_output_shape(self, input_shape):
        return tuple(self.augmentation.compute_output_shape(input_shape))

    def get_config(self):
        config = super().get_config()
        config.update(spec=tf_keras.layers.serialize(self.augmentation), seed=self.seed,
                      value_range=list(self.value_range))
        return config


#: The name this layer had (it is not `tfimgopt.augment.AugmentationLayer`, the tf_keras base
#: of the augmentation ops); files saved with it load as `Keras3Augmentation`.
AugmentationLayer = Keras3Augmentation
