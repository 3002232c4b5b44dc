"""tfimgopt from a Keras 3 project: Keras 3 models in every entry point, and back out.

Runs as a Keras 3 user would: `import keras` first, and `tf.keras` is Keras 3 (the suite
sets no TF_USE_LEGACY_KERAS).
"""

import logging

import keras as keras3  # noqa: I001  (first, as in a Keras 3 project)
import numpy as np
import pytest

from tfimgopt.compat import keras, tf
from tfimgopt.errors import ConfigError
from tfimgopt.keras3 import as_logits, from_keras3, softmax_layer, to_keras3


def _x(n=4, size=16, channels=1, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, channels)).astype("float32")


def _digits(size=16):
    from tfimgopt.data import build_pipeline, load_dataset

    s = load_dataset("digits", image_size=size)
    return build_pipeline(s.train.take(256), 64, training=True), build_pipeline(s.test.take(128), 64)


def _k3_cnn(softmax=False, name="k3_cnn"):
    return keras3.Sequential([
        keras3.Input((16, 16, 1)), keras3.layers.Rescaling(1 / 255.0), keras3.layers.Conv2D(4, 3, activation="relu"),
        keras3.layers.GlobalAveragePooling2D(), keras3.layers.Dense(10, activation="softmax" if softmax else None),
    ], name=name)


def test_tf_keras_is_keras3_here():
    # (importing keras-cv re-registers the same module as "tensorflow.keras": ask the classes)
    assert tf.keras.layers.Dense.__module__.startswith("keras.src.") and keras3.__version__.startswith("3.")


def test_train_converts_a_keras3_model_says_so_and_learns(caplog):
    from tfimgopt.training import train

    train_ds, _ = _digits()
    with caplog.at_level(logging.WARNING, logger="tfimgopt"):
        history = train(_k3_cnn(), train_ds, epochs=2, learning_rate=1e-2, verbose=0)
    assert "train got a Keras 3 model (k3_cnn); converted it to tf_keras with from_keras3" in caplog.text
    assert isinstance(history.model, keras.Model) and history.model.trainable_weights
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_softmax_heads_are_turned_into_logits_for_training_and_distillation(caplog):
    from tfimgopt.distill import Distiller

    model = from_keras3(_k3_cnn(softmax=True))
    assert softmax_layer(model) == model.layers[-1].name
    x = _x()
    with caplog.at_level(logging.WARNING, logger="tfimgopt"):
        logits = as_logits(model, "train")
    assert "the softmax was dropped" in caplog.text and softmax_layer(logits) is None
    np.testing.assert_allclose(tf.nn.softmax(logits(x)).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
    distiller = Distiller(_k3_cnn(softmax=True, name="teacher"), _k3_cnn(name="student"))
    assert softmax_layer(distiller.teacher) is None and isinstance(distiller.student, keras.Model)


def test_augmented_model_of_a_keras3_model_trains():
    from tfimgopt.augment import augmented_model, create_augmentation
    from tfimgopt.training import train

    wrapped = augmented_model(_k3_cnn(), create_augmentation("digits", seed=0))
    assert len(wrapped.trainable_weights) == 4  # conv kernel + bias, dense kernel + bias: nothing silently frozen
    before = [w.numpy().copy() for w in wrapped.trainable_weights]
    train(wrapped, _digits()[0], epochs=1, verbose=0)
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, wrapped.trainable_weights, strict=True))


def test_prune_and_qat_take_keras3_models():
    from tfimgopt.compress import prune, quantize_aware, strip

    pruned = prune(_k3_cnn(), 0.5, skip=[])
    assert pruned.pruned_layers
    qat = quantize_aware(strip(pruned.model))
    assert qat.output_shape == (None, 10)


def test_nested_augmentation_block_and_backbone_are_flattened_with_equal_outputs():
    augment = keras3.Sequential([keras3.layers.RandomFlip("horizontal"), keras3.layers.RandomRotation(0.1)],
                                name="data_augmentation")
    backbone_in = keras3.Input((16, 16, 1))
    y = keras3.layers.Conv2D(8, 3, padding="same", activation="relu")(backbone_in)
    y = keras3.layers.BatchNormalization()(y)
    backbone = keras3.Model(backbone_in, keras3.layers.GlobalAveragePooling2D()(y), name="backbone")
    inputs = keras3.Input((16, 16, 1))
    x = augment(inputs)
    x = keras3.layers.Rescaling(1 / 127.5, offset=-1)(x)
    x = backbone(x)
    outputs = keras3.layers.Dense(3)(keras3.layers.Dropout(0.2)(x))
    model = keras3.Model(inputs, outputs)
    rebuilt = from_keras3(model)  # proves equality itself; checked again here
    x = _x()
    np.testing.assert_allclose(rebuilt(x, training=False).numpy(), np.asarray(model(x, training=False)),
                               rtol=1e-5, atol=1e-5)
    assert not any(isinstance(layer, keras.Model) for layer in rebuilt.layers)  # flat: TFMOT can rewrite it


@pytest.mark.slow
def test_keras_applications_mobilenet_v2_converts_equal():
    model = keras3.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=5)
    rebuilt = from_keras3(model)
    x = _x(2, 32, 3)
    np.testing.assert_allclose(rebuilt(x, training=False).numpy(), np.asarray(model(x, training=False)),
                               rtol=1e-4, atol=1e-5)
    assert softmax_layer(rebuilt) == "predictions"  # keras.applications end in softmax


def test_to_keras3_round_trips_dense_pruned_and_distilled_models():
    from tfimgopt.compress import prune, quantize_aware, strip
    from tfimgopt.models import create_model

    dense = create_model("small_cnn", (16, 16, 1), 10, width=4, dense=16)
    pruned = strip(prune(dense, 0.5).model)
    student = create_model("tiny_cnn", (16, 16, 1), 10)
    x = _x()
    for model in (dense, pruned, student):
        back = to_keras3(model)
        assert type(back).__module__.startswith("keras.")
        np.testing.assert_allclose(np.asarray(back(x, training=False)), model(x, training=False).numpy(),
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="deployment artifact is the int8 TFLite file"):
        to_keras3(quantize_aware(dense))


def test_a_keras3_model_file_loads_through_the_cli_path(tmp_path):
    from tfimgopt.pipeline import load_model

    model = _k3_cnn()
    model.save(str(tmp_path / "k3.keras"))
    loaded = load_model(str(tmp_path / "k3.keras"))
    x = _x()
    assert isinstance(loaded, keras.Model)
    np.testing.assert_allclose(loaded(x).numpy(), np.asarray(model(x)), rtol=1e-5, atol=1e-5)


def test_an_unconvertible_layer_is_named_with_what_to_do():
    model = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(4), keras3.layers.RMSNormalization(name="rms")])
    with pytest.raises(ConfigError, match=r"train takes tf_keras models; converting .*from_keras3 failed: .*layer "
                                          r"'rms' \(RMSNormalization\)"):
        from tfimgopt.training import train

        train(model, tf.data.Dataset.from_tensor_slices((np.zeros((2, 4)), [0, 1])).batch(2), verbose=0)


def test_export_and_verify_take_a_keras3_model_directly(tmp_path):
    from tfimgopt.export import export_tflite, verify_tflite

    model = _k3_cnn()
    x = _x(8)
    blob = export_tflite(model, "float32", path=str(tmp_path / "k3.tflite"))
    assert verify_tflite(blob, model, x)["passed"]
    assert verify_tflite(export_tflite(model, "int8", representative_data=x), model, x)["mode"] == "int8"
