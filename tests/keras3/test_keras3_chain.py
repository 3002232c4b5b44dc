"""Every Keras 3 model a user is likely to have goes through convert -> prune -> QAT -> int8.

Each model: `from_keras3` (proves outputs equal), BatchNormalization statistics set from
data (random-init MobileNetV3 has logits near 1e-11 in inference mode, which quantize to a
constant and would make any agreement check meaningless), constant 50% pruning for two
steps, strip, quantization-aware training for two steps (activation ranges calibrated from
the images first), full-integer export, and the int8
LiteRT logits compared with the QAT model's. The short fits run eagerly: tracing a
200-layer pruned or fake-quantized graph costs more than two eager steps.
"""

import keras as keras3  # noqa: I001  (first, as in a Keras 3 project)
import numpy as np
import pytest

from tfimgopt.compat import keras


def _images(n=64, size=32):
    from tfimgopt.data import load_dataset

    split = load_dataset("digits", image_size=size).train.take(n).batch(n)
    x, y = next(iter(split))
    return np.repeat(x.numpy().astype("float32"), 3, axis=-1), y.numpy()


def _keras_io_from_scratch(shape=(32, 32, 3), classes=10):
    """keras.io "Image classification from scratch" (make_model), narrowed."""
    layers = keras3.layers
    augment = keras3.Sequential([layers.RandomFlip("horizontal"), layers.RandomRotation(0.1)], name="augment")
    inputs = keras3.Input(shape)
    x = layers.Rescaling(1.0 / 255)(augment(inputs))
    x = layers.Conv2D(16, 3, strides=2, padding="same")(x)
    x = layers.Activation("relu")(layers.BatchNormalization()(x))
    previous = x
    for size in (16, 32):
        x = layers.Activation("relu")(x)
        x = layers.BatchNormalization()(layers.SeparableConv2D(size, 3, padding="same")(x))
        x = layers.Activation("relu")(x)
        x = layers.BatchNormalization()(layers.SeparableConv2D(size, 3, padding="same")(x))
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        residual = layers.Conv2D(size, 1, strides=2, padding="same")(previous)
        x = previous = layers.add([x, residual])
    x = layers.Activation("relu")(layers.BatchNormalization()(layers.SeparableConv2D(64, 3, padding="same")(x)))
    x = layers.Dropout(0.25)(layers.GlobalAveragePooling2D()(x))
    return keras3.Model(inputs, layers.Dense(classes)(x), name="keras_io_from_scratch")


def _keras_io_transfer(shape=(32, 32, 3), classes=10):
    """keras.io transfer learning: augmentation block, a frozen backbone as one layer, a new head."""
    layers = keras3.layers
    augment = keras3.Sequential([layers.RandomFlip("horizontal"), layers.RandomRotation(0.1)], name="augment")
    backbone = keras3.applications.MobileNetV2(input_shape=shape, alpha=0.35, include_top=False, weights=None)
    backbone.trainable = False
    inputs = keras3.Input(shape)
    x = layers.Rescaling(1 / 127.5, offset=-1)(augment(inputs))
    x = layers.GlobalAveragePooling2D()(backbone(x, training=False))
    return keras3.Model(inputs, layers.Dense(classes)(layers.Dropout(0.2)(x)), name="keras_io_transfer")


def _application(name, **kwargs):
    def build(shape=(32, 32, 3), classes=10):
        return getattr(keras3.applications, name)(input_shape=shape, weights=None, classes=classes,
                                                  classifier_activation=None, **kwargs)
    return build


MODELS = {
    "MobileNetV2": _application("MobileNetV2", alpha=0.35),
    "MobileNetV3Small": _application("MobileNetV3Small", minimalistic=False),
    "MobileNetV3Large": _application("MobileNetV3Large", minimalistic=False),
    "EfficientNetB0": _application("EfficientNetB0"),
    "ResNet50": _application("ResNet50"),
    "keras_io_from_scratch": _keras_io_from_scratch,
    "keras_io_transfer": _keras_io_transfer,
}


def _set_batch_norm_statistics(model, x):
    """One training-mode pass with momentum 0: the moving statistics become this batch's
    (frozen layers too: a frozen BatchNormalization ignores training=True)."""
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [(layer.momentum, layer.trainable) for layer in norms]
    for layer in norms:
        layer.momentum, layer.trainable = 0.0, True
    model(x, training=True)
    for layer, (momentum, trainable) in zip(norms, saved, strict=True):
        layer.momentum, layer.trainable = momentum, trainable


def _fit_two_steps(model, x, y, callbacks=()):
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  run_eagerly=True)
    model.fit(x, y, batch_size=len(x) // 2, epochs=1, verbose=0, callbacks=list(callbacks))


@pytest.mark.slow  # 30-90 s a model: the chain runs in CI, not in the fast tier
@pytest.mark.parametrize("name", list(MODELS))
def test_keras3_model_converts_prunes_trains_quantization_aware_and_exports_int8(name):
    from tfimgopt.compress import prune, quantize_aware, strip
    from tfimgopt.compress.prune import prunable_weight_names
    from tfimgopt.export import export_tflite
    from tfimgopt.export.tflite import TFLiteRunner
    from tfimgopt.keras3 import from_keras3

    keras3.utils.set_random_seed(0)  # weights, dropout and the fits: the same numbers every run
    x, y = _images()
    model = from_keras3(MODELS[name]())  # raises unless the outputs are equal
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    _set_batch_norm_statistics(model, x)

    pruned = prune(model, 0.5, schedule="constant", frequency=1)
    _fit_two_steps(pruned.model, x, y, pruned.callbacks)
    stripped = strip(pruned.model)
    for layer_name in pruned.pruned_layers:  # each weight TFMOT prunes (a SeparableConv2D's pointwise kernel)
        layer = stripped.get_layer(layer_name)
        for attribute in prunable_weight_names(layer):
            assert (getattr(layer, attribute).numpy() == 0).mean() > 0.45, (layer_name, attribute)

    qat = quantize_aware(stripped, calibration_data=x)
    _fit_two_steps(qat, x, y)
    want = qat(x, training=False).numpy()
    got = TFLiteRunner(export_tflite(qat, "int8", representative_data=x)).predict(x)
    assert want.std(axis=0).mean() > 1e-3  # the logits depend on the input: the comparison means something
    # Two QAT steps on random weights leave the classes near-tied, so top-1 agreement is noise
    # here (0.73-1.0 measured); the logits are what must agree. Measured with the activation
    # ranges calibrated: correlation 0.91 (the frozen transfer backbone) to 0.999, mean error
    # 0.03-0.33 logit standard deviations; without calibration 0.77-0.98. A wrong conversion gives about 0.
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.9
    assert np.abs(got - want).mean() < 0.4 * want.std()
