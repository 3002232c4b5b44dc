"""The two-phase fine-tuning recipe: what is frozen stays put, BatchNorm statistics included."""

import numpy as np
import pytest

from tfimgopt.compat import keras, tf
from tfimgopt.errors import ConfigError
from tfimgopt.training import fine_tune


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    x = inputs
    for i in (1, 2):
        x = keras.layers.Conv2D(4, 3, padding="same", name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="classifier")(x))
    for i in (1, 2):  # "pretrained" statistics, far from what this data gives
        bn = model.get_layer(f"bn{i}")
        bn.moving_mean.assign(np.full(4, 0.5, np.float32))
        bn.moving_variance.assign(np.full(4, 3.0, np.float32))
    return model


def _data(n=64, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(2.0, 4.0, size=(n, 8, 8, 1)).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, rng.integers(0, 3, n))).batch(16)


def _weights(model, name):
    return [w.copy() for w in model.get_layer(name).get_weights()]


def _changed(before, model, name):
    return not all(np.array_equal(a, b) for a, b in zip(before, model.get_layer(name).get_weights(), strict=True))


def test_phase_one_trains_the_head_only_and_batchnorm_statistics_stay_put():
    model = _model()
    before = {name: _weights(model, name) for name in ("conv1", "bn1", "conv2", "bn2", "classifier")}
    result = fine_tune(model, _data(), head_epochs=2, epochs=0, learning_rate=0.05, verbose=0)
    assert result.fine_tune_history is None and result.unfrozen == []
    assert _changed(before["classifier"], model, "classifier")
    for name in ("conv1", "bn1", "conv2", "bn2"):  # bn: gamma, beta, moving mean and variance
        assert not _changed(before[name], model, name), name
    assert all(layer.trainable for layer in model.layers)  # handed back trainable


def test_phase_two_unfreezes_the_top_layers_but_not_batchnorm():
    model = _model()
    before = {name: _weights(model, name) for name in ("conv1", "bn1", "conv2", "bn2")}
    result = fine_tune(model, _data(), head_epochs=1, epochs=2, unfreeze=1, fine_tune_learning_rate=0.05,
                       verbose=0)
    assert result.unfrozen == ["conv2"]
    assert _changed(before["conv2"], model, "conv2")
    for name in ("conv1", "bn1", "bn2"):
        assert not _changed(before[name], model, name), name
    # Cosine decay over the phase's 8 steps (2 epochs x 4 batches): the last step ran at step 7's rate.
    last = float(result.fine_tune_history.model.optimizer.learning_rate)
    np.testing.assert_allclose(last, 0.05 * 0.5 * (1 + np.cos(np.pi * 7 / 8)), rtol=1e-5)


def test_step_schedule_and_a_named_optimizer():
    result = fine_tune(_model(), _data(), head_epochs=1, epochs=2, unfreeze=1, fine_tune_learning_rate=0.05,
                       schedule="step", optimizer="sgd", verbose=0)
    optimizer = result.fine_tune_history.model.optimizer
    assert isinstance(optimizer, keras.optimizers.SGD)
    # 8 steps: 0.05 for steps 0-3, 0.005 for 4-5, 0.0005 for 6-7 (the last ran at step 7).
    schedule = keras.optimizers.schedules.deserialize(optimizer.get_config()["learning_rate"])
    np.testing.assert_allclose([float(schedule(s)) for s in (0, 3, 4, 5, 6, 7)],
                               [0.05, 0.05, 0.005, 0.005, 0.0005, 0.0005], rtol=1e-6)
    np.testing.assert_allclose(float(optimizer.learning_rate), 0.0005, rtol=1e-6)


def test_a_classifier_behind_augmentation_layers_is_the_one_frozen():
    from tfimgopt.augment import augmented_model, create_augmentation

    inner = _model()
    wrapped = augmented_model(inner, create_augmentation("flip"))
    before = {name: _weights(inner, name) for name in ("conv1", "bn1", "conv2", "bn2", "classifier")}
    result = fine_tune(wrapped, _data(), head_epochs=1, epochs=1, unfreeze=1, fine_tune_learning_rate=0.05, verbose=0)
    assert result.unfrozen == ["conv2"]
    assert _changed(before["classifier"], inner, "classifier") and _changed(before["conv2"], inner, "conv2")
    for name in ("conv1", "bn1", "bn2"):
        assert not _changed(before[name], inner, name), name


@pytest.mark.slow
def test_a_finished_phase_one_is_reused_on_a_rerun(tmp_path):
    model = _model()
    first = fine_tune(model, _data(), head_epochs=1, epochs=0, work_dir=str(tmp_path), verbose=0)
    assert first.head_history is not None and (tmp_path / "head_done.h5").is_file()
    again = _model()  # a fresh process after an interruption: same architecture, other weights
    second = fine_tune(again, _data(), head_epochs=1, epochs=0, work_dir=str(tmp_path), verbose=0)
    assert second.head_history is None
    for a, b in zip(model.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_under_two_replicas(mirrored):
    result = fine_tune(_model, _data(), head_epochs=1, epochs=1, unfreeze=2, strategy=mirrored, verbose=0)
    assert result.unfrozen == ["conv1", "conv2"] and np.isfinite(result.fine_tune_history.history["loss"][-1])


@pytest.mark.parametrize("kwargs, message", [
    ({"head": ("dense",)}, "\\['dense'\\] not found. Its last layers: .*'classifier'"),
    ({"head_epochs": 0}, "head_epochs must be an int >= 1"),
    ({"unfreeze": -1}, "unfreeze must be an int >= 0"),
    ({"schedule": "linear"}, "schedule must be one of \\('cosine', 'step', 'constant'\\)"),
    ({"optimizer": "adagrad"}, "Unknown optimizer. Valid names: .*'sgd'"),
    ({"fine_tune_learning_rate": 0}, "fine_tune_learning_rate must be a number > 0"),
])
def test_bad_settings_are_refused_naming_the_value(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        fine_tune(_model(), _data(), verbose=0, **kwargs)
