"""The Distiller: loss against NumPy, frozen teacher, soft labels, strategies, XLA."""

import numpy as np
import pytest

from tfimgopt.compat import keras, tf
from tfimgopt.distill import Distiller, distillation_loss, with_teacher_logits
from tfimgopt.errors import ConfigError

SHAPE = (8, 8, 1)


def _models(seed=0):
    keras.utils.set_random_seed(seed)
    teacher = keras.Sequential(
        [keras.Input(SHAPE), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization(),
         keras.layers.ReLU(), keras.layers.Flatten(), keras.layers.Dropout(0.5), keras.layers.Dense(5)],
        name="teacher",
    )
    student = keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(5)], name="student")
    # Give the teacher non-trivial BatchNorm statistics so inference mode matters.
    bn = teacher.layers[1]
    bn.moving_mean.assign(np.full(4, 0.3, np.float32))
    bn.moving_variance.assign(np.full(4, 2.0, np.float32))
    return teacher, student


def _batch(n=8, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *SHAPE)).astype(np.float32), rng.integers(0, 5, n)


def _np_log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _np_loss(t, s, y_onehot, alpha, temperature):
    ce = -(y_onehot * _np_log_softmax(s)).sum(1)
    log_pt = _np_log_softmax(t / temperature)
    kl = (np.exp(log_pt) * (log_pt - _np_log_softmax(s / temperature))).sum(1) * temperature**2
    return ce, kl, alpha * ce + (1 - alpha) * kl


def test_distillation_loss_matches_numpy():
    rng = np.random.default_rng(0)
    t, s = rng.normal(size=(6, 4)) * 3, rng.normal(size=(6, 4)) * 3
    for temperature in (1.0, 2.5, 10.0):
        got = distillation_loss(tf.constant(t), tf.constant(s), temperature).numpy()
        _, want, _ = _np_loss(t, s, np.eye(4)[[0] * 6], 0.0, temperature)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(distillation_loss(tf.constant(t), tf.constant(t), 3.0).numpy(), 0, atol=1e-6)


@pytest.mark.parametrize("soft", [False, True])
def test_reported_losses_match_numpy_for_sparse_and_soft_labels(soft):
    teacher, student = _models()
    x, y = _batch()
    labels = np.eye(5, dtype=np.float32)[y] * 0.8 + 0.04 if soft else y
    distiller = Distiller(teacher, student)
    distiller.compile(metrics=["accuracy"], alpha=0.3, temperature=2.0)
    logs = distiller.evaluate(x, labels, batch_size=8, verbose=0, return_dict=True)
    t = teacher.predict(x, verbose=0)
    s = student.predict(x, verbose=0)
    y_dist = labels if soft else np.eye(5)[y]
    ce, kl, total = _np_loss(t, s, y_dist, 0.3, 2.0)
    np.testing.assert_allclose(logs["student_loss"], ce.mean(), rtol=1e-5)
    np.testing.assert_allclose(logs["distillation_loss"], kl.mean(), rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], total.mean(), rtol=1e-5)
    np.testing.assert_allclose(logs["accuracy"], (s.argmax(1) == y).mean())


def test_alpha_one_equals_plain_cross_entropy_update():
    teacher, student = _models()
    plain = keras.models.clone_model(student)
    plain.set_weights(student.get_weights())
    x, y = _batch()
    distiller = Distiller(teacher, student)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), alpha=1.0, temperature=3.0)
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    plain.compile(optimizer=keras.optimizers.SGD(0.1), loss=ce)
    plain.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(student.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_teacher_is_bit_identical_after_fit_and_student_learns():
    teacher, student = _models()
    before = [w.copy() for w in teacher.get_weights()]
    student_before = [w.copy() for w in student.get_weights()]
    x, y = _batch(32)
    distiller = Distiller(teacher, student, alpha=0.5, temperature=2.0)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    history = distiller.fit(x, y, batch_size=8, epochs=3, verbose=0)
    for a, b in zip(before, teacher.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # includes BatchNorm moving statistics
    assert not np.array_equal(student_before[0], student.get_weights()[0])
    assert {"loss", "student_loss", "distillation_loss", "accuracy"} <= set(history.history)
    assert history.history["loss"][-1] < history.history["loss"][0]
    np.testing.assert_allclose(distiller.predict(x, verbose=0), student.predict(x, verbose=0))


def _one_step(strategy, x, y, jit_compile=False):
    with strategy.scope():
        teacher, student = _models()
        distiller = Distiller(teacher, student)
        distiller.compile(optimizer=keras.optimizers.SGD(0.5), alpha=0.4, temperature=3.0, jit_compile=jit_compile)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x))
    distiller.fit(ds, epochs=1, verbose=0)
    return student.get_weights()


@pytest.mark.slow
def test_two_replicas_give_the_single_device_update(mirrored):
    x, y = _batch(8)
    single = _one_step(tf.distribute.get_strategy(), x, y)
    two = _one_step(mirrored, x, y)
    for a, b in zip(single, two, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_train_step_compiles_with_xla():
    x, y = _batch(8)
    eager = _one_step(tf.distribute.get_strategy(), x, y)
    xla = _one_step(tf.distribute.get_strategy(), x, y, jit_compile=True)
    for a, b in zip(eager, xla, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_precomputed_teacher_logits_give_the_same_update():
    x, y = _batch(8)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    results = []
    for precompute in (False, True):
        teacher, student = _models()
        distiller = Distiller(teacher, student, alpha=0.2, temperature=4.0)
        distiller.compile(optimizer=keras.optimizers.SGD(0.5))
        data = with_teacher_logits(teacher, ds) if precompute else ds
        distiller.fit(data.batch(8), epochs=1, verbose=0)
        results.append(student.get_weights())
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_config_round_trip_and_student_saves_alone(tmp_path):
    teacher, student = _models()
    distiller = Distiller(teacher, student, alpha=0.25, temperature=7.0)
    clone = Distiller.from_config(distiller.get_config())
    assert (clone.alpha, clone.temperature) == (0.25, 7.0)
    assert [type(layer) for layer in clone.student.layers] == [type(layer) for layer in student.layers]
    student.save(tmp_path / "student.keras")
    loaded = keras.models.load_model(tmp_path / "student.keras")
    x, _ = _batch()
    np.testing.assert_allclose(loaded.predict(x, verbose=0), student.predict(x, verbose=0), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": 0}, "Received: temperature=0"),
        ({"temperature": -2.0}, "Received: temperature=-2.0"),
        ({"alpha": 1.5}, "Received: alpha=1.5"),
        ({"alpha": "high"}, "Received: alpha='high'"),
    ],
)
def test_bad_hyper_parameters(kwargs, message):
    teacher, student = _models()
    with pytest.raises(ConfigError, match=message):
        Distiller(teacher, student, **kwargs)
    distiller = Distiller(teacher, student)
    with pytest.raises(ConfigError, match=message):
        distiller.compile(**kwargs)


def test_mismatched_models_rejected():
    teacher, _ = _models()
    other = keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(3)])
    with pytest.raises(ConfigError, match="same number of classes"):
        Distiller(teacher, other)
    with pytest.raises(ConfigError, match="Received: student of type str"):
        Distiller(teacher, "student")
