"""Keras 3 models are rebuilt in tf_keras with identical outputs, then prunable."""

import keras as keras3
import numpy as np
import pytest

from tfimgopt.compress import from_keras3, prune
from tfimgopt.errors import ConfigError


def _randomize_bn(model):
    for layer in model.layers:
        if isinstance(layer, keras3.layers.BatchNormalization):
            layer.moving_mean.assign(np.full(layer.moving_mean.shape, 0.2, "float32"))
            layer.moving_variance.assign(np.full(layer.moving_variance.shape, 1.7, "float32"))


def test_sequential_rebuilt_with_equal_outputs_and_prunable():
    model = keras3.Sequential([
        keras3.Input((12, 12, 3)), keras3.layers.Rescaling(1 / 255.0), keras3.layers.Conv2D(8, 3, activation="relu"),
        keras3.layers.BatchNormalization(), keras3.layers.MaxPooling2D(), keras3.layers.Flatten(),
        keras3.layers.Dropout(0.3), keras3.layers.Dense(16, activation="relu"), keras3.layers.Dense(4),
    ])
    _randomize_bn(model)
    x = np.random.default_rng(0).integers(0, 256, (5, 12, 12, 3)).astype("float32")
    rebuilt = from_keras3(model)
    np.testing.assert_allclose(rebuilt.predict(x, verbose=0), np.asarray(model.predict(x, verbose=0)),
                               rtol=1e-5, atol=1e-5)
    assert prune(rebuilt, 0.5).pruned_layers  # TFMOT accepts it now


def test_functional_with_branches_rebuilt_with_equal_outputs():
    inputs = keras3.Input((10, 10, 1))
    a = keras3.layers.Conv2D(4, 3, padding="same", name="a")(inputs)
    b = keras3.layers.DepthwiseConv2D(3, padding="same", name="b")(inputs)
    x = keras3.layers.Concatenate()([a, b])
    x = keras3.layers.GlobalAveragePooling2D()(x)
    model = keras3.Model(inputs, keras3.layers.Dense(3)(x))
    x = np.random.default_rng(1).normal(size=(4, 10, 10, 1)).astype("float32")
    rebuilt = from_keras3(model)
    np.testing.assert_allclose(rebuilt.predict(x, verbose=0), np.asarray(model.predict(x, verbose=0)),
                               rtol=1e-5, atol=1e-5)


def test_layer_without_tf_keras_equivalent_is_named():
    model = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(4), keras3.layers.RMSNormalization(name="rms")])
    with pytest.raises(ConfigError, match=r"layer 'rms' \(RMSNormalization\)"):
        from_keras3(model)
