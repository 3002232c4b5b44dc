"""Distillation losses: keras.io's `compile(distillation_loss_fn=...)` contract, and Keras-3
style loss objects (logits and feature distillation with a learned projection), checked
against NumPy, with masks, two replicas, XLA and configs."""

import keras as keras3
import numpy as np
import pytest

from tfimgopt.compat import keras, tf
from tfimgopt.distill import Distiller, FeatureDistillation, LogitsDistillation, with_teacher_logits
from tfimgopt.errors import ConfigError

SHAPE = (8, 8, 1)
EPS = 1e-7  # Keras's KLDivergence clips probabilities to [EPS, 1]


def _models(seed=0, student_filters=2):
    keras.utils.set_random_seed(seed)
    teacher = keras.Sequential(
        [keras.Input(SHAPE), keras.layers.Conv2D(4, 3, padding="same", name="t_conv"),
         keras.layers.BatchNormalization(name="t_bn"), keras.layers.ReLU(name="t_relu"),
         keras.layers.Flatten(name="t_flat"), keras.layers.Dense(5, name="t_logits")], name="teacher")
    student = keras.Sequential(
        [keras.Input(SHAPE), keras.layers.Conv2D(student_filters, 3, padding="same", activation="relu",
                                                 name="s_conv"),
         keras.layers.Flatten(name="s_flat"), keras.layers.Dense(5, name="s_logits")], name="student")
    return teacher, student


def _batch(n=8, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *SHAPE)).astype(np.float32), rng.integers(0, 5, n)


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _ce(s, y):
    return -np.log(_softmax(s)[np.arange(len(y)), y])


def _kerasio_kl(t, s, temperature):
    """keras.io: KLDivergence()(softmax(t / T), softmax(s / T)) * T^2, per example."""
    p = np.clip(_softmax(t / temperature), EPS, 1)
    q = np.clip(_softmax(s / temperature), EPS, 1)
    return (p * np.log(p / q)).sum(1) * temperature**2


def _logits(teacher, student, x):
    return teacher.predict(x, verbose=0).astype(np.float64), student.predict(x, verbose=0).astype(np.float64)


@pytest.mark.parametrize("loss", ["tf_keras", "keras3", "function"])
def test_kerasio_two_argument_losses_see_softened_probabilities_scaled_by_t_squared(loss):
    """A user copying keras.io's example gets keras.io's numbers."""
    teacher, student = _models()
    x, y = _batch()
    fn = {"tf_keras": keras.losses.KLDivergence(), "keras3": keras3.losses.KLDivergence(),
          "function": keras.losses.kl_divergence}[loss]
    distiller = Distiller(teacher, student)
    distiller.compile(optimizer="adam", metrics=["accuracy"],
                      student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      distillation_loss_fn=fn, alpha=0.1, temperature=3.0)
    logs = distiller.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    t, s = _logits(teacher, student, x)
    soft, hard = _kerasio_kl(t, s, 3.0), _ce(s, y)
    np.testing.assert_allclose(logs["distillation_loss"], soft.mean(), rtol=1e-4)
    np.testing.assert_allclose(logs["student_loss"], hard.mean(), rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], 0.1 * hard.mean() + 0.9 * soft.mean(), rtol=1e-4)


def test_two_and_three_argument_callables_and_unreadable_ones():
    teacher, student = _models()
    x, y = _batch()
    t, s = _logits(teacher, student, x)
    distiller = Distiller(teacher, student)
    # Two arguments: probabilities in, times T^2 (keras.io); a scalar result is the batch's mean.
    distiller.compile(distillation_loss_fn=lambda p, q: tf.reduce_mean(tf.reduce_sum((p - q) ** 2, -1)),
                      temperature=2.0)
    got = distiller.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)["distillation_loss"]
    want = (((_softmax(t / 2) - _softmax(s / 2)) ** 2).sum(1) * 4).mean()
    np.testing.assert_allclose(got, want, rtol=1e-4)
    # Three arguments: tfimgopt's form, logits and the temperature.
    distiller.compile(distillation_loss_fn=lambda tl, sl, temp: tf.reduce_sum(tf.abs(tl - sl), -1) / temp,
                      temperature=2.0)
    got = distiller.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)["distillation_loss"]
    np.testing.assert_allclose(got, (np.abs(t - s).sum(1) / 2).mean(), rtol=1e-4)
    for bad in (lambda *args: 0.0, lambda p: p, lambda a, b, c, d: a, "kl_divergence"):
        with pytest.raises(ConfigError, match="distillation_loss_fn"):
            distiller.compile(distillation_loss_fn=bad)


def test_logits_distillation_objects_match_numpy_and_the_default():
    teacher, student = _models()
    x, y = _batch()
    t, s = _logits(teacher, student, x)
    default = Distiller(teacher, student, alpha=0.3, temperature=2.0)
    default.compile()
    explicit = Distiller(teacher, student, student_loss_weight=0.3,
                         distillation_losses=[LogitsDistillation(temperature=2.0)])
    explicit.compile()
    a = default.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    b = explicit.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    assert a == pytest.approx(b, rel=1e-6)
    # Any other loss compares the softened logits themselves (Keras 3's rule), without T^2.
    mse = Distiller(teacher, student, distillation_losses=LogitsDistillation(4.0, loss="mse"))
    mse.compile()
    got = mse.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)["distillation_loss"]
    np.testing.assert_allclose(got, ((t / 4 - s / 4) ** 2).mean(1).mean(), rtol=1e-4)


def test_feature_distillation_matches_numpy_and_weights_add_up():
    teacher, student = _models(student_filters=4)  # same width: no projection
    x, y = _batch()
    t, s = _logits(teacher, student, x)
    t_feat = keras.Model(teacher.inputs, teacher.get_layer("t_conv").output).predict(x, verbose=0)
    s_feat = keras.Model(student.inputs, student.get_layer("s_conv").output).predict(x, verbose=0)
    feature = FeatureDistillation("mse", teacher_layer_name="t_conv", student_layer_name="s_conv")
    distiller = Distiller(teacher, student, alpha=0.2,
                          distillation_losses=[LogitsDistillation(3.0), feature], distillation_loss_weights=[1.0, 0.5])
    distiller.compile()
    assert distiller.projections == []
    logs = distiller.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    kl = _kerasio_kl(t, s, 3.0)  # no probability is near 0 here, so clipping changes nothing
    mse = ((t_feat - s_feat) ** 2).reshape(len(x), -1).mean(1)
    np.testing.assert_allclose(logs["distillation_loss"], (kl + 0.5 * mse).mean(), rtol=1e-4)
    np.testing.assert_allclose(logs["loss"], 0.2 * _ce(s, y).mean() + 0.8 * (kl + 0.5 * mse).mean(), rtol=1e-4)


def _feature_distiller(teacher, student, **kwargs):
    return Distiller(teacher, student, alpha=0.3, distillation_losses=[
        LogitsDistillation(2.0), FeatureDistillation("mse", teacher_layer_name="t_conv", student_layer_name="s_conv")],
        **kwargs)


def test_projection_trains_with_the_student_and_is_not_part_of_it(tmp_path):
    teacher, student = _models(student_filters=2)  # 2 student channels -> 4 teacher channels
    params = student.count_params()
    distiller = _feature_distiller(teacher, student)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    (projection,) = distiller.projections
    assert projection.kernel.shape == (2, 4)
    before = projection.kernel.numpy().copy()
    x, y = _batch(32)
    distiller.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert not np.allclose(projection.kernel.numpy(), before)
    assert student.count_params() == params
    assert all("projection" not in w.name for w in student.weights)
    student.save(tmp_path / "student.keras")
    loaded = keras.models.load_model(tmp_path / "student.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), student.predict(x, verbose=0), rtol=1e-6)


def test_feature_losses_train_unlabelled_examples_on_the_soft_terms_alone():
    teacher, student = _models()
    x, _ = _batch(8)
    labels = np.full(8, -1)  # all unlabelled
    distiller = _feature_distiller(teacher, student)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    logs = distiller.evaluate(x, labels, batch_size=8, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["loss"], 0.7 * logs["distillation_loss"], rtol=1e-5)
    history = distiller.fit(tf.data.Dataset.from_tensor_slices(x).batch(8), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def _one_step(strategy, x, y, jit_compile=False, precompute=False):
    with strategy.scope():
        teacher, student = _models()
        distiller = _feature_distiller(teacher, student)
        distiller.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=jit_compile)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    ds = with_teacher_logits(teacher, ds) if precompute else ds
    distiller.fit(ds.batch(len(x)), epochs=1, verbose=0)
    return student.get_weights() + [p.kernel.numpy() for p in distiller.projections]


@pytest.mark.slow
def test_feature_distillation_two_replicas_xla_and_precomputed_logits_give_the_same_update(mirrored):
    x, y = _batch(8)
    single = _one_step(tf.distribute.get_strategy(), x, y)
    for other in (_one_step(mirrored, x, y), _one_step(tf.distribute.get_strategy(), x, y, jit_compile=True),
                  _one_step(tf.distribute.get_strategy(), x, y, precompute=True)):
        for a, b in zip(single, other, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_config_round_trip_keeps_the_losses():
    teacher, student = _models()
    distiller = Distiller(teacher, student, alpha=0.4, distillation_losses=[
        LogitsDistillation(5.0, loss=keras.losses.KLDivergence()),
        FeatureDistillation("cosine_similarity", teacher_layer_name="t_conv", student_layer_name="s_conv")],
        distillation_loss_weights=[1.0, 0.25])
    config = distiller.get_config()
    clone = Distiller.from_config(config)
    again = clone.get_config()["distillation_losses"]
    assert [item["class_name"] for item in again] == ["LogitsDistillation", "FeatureDistillation"]
    assert again[0]["config"]["temperature"] == 5.0 and again[0]["config"]["loss"]["class_name"] == "KLDivergence"
    assert again[1]["config"] == config["distillation_losses"][1]["config"]
    assert clone.distillation_loss_weights == [1.0, 0.25] and clone.alpha == 0.4
    assert [type(loss) for loss in clone.distillation_losses] == [LogitsDistillation, FeatureDistillation]
    assert clone.projections[0].kernel.shape == (2, 4)


@pytest.mark.parametrize("kwargs, message", [
    ({"distillation_losses": [FeatureDistillation(teacher_layer_name="nope", student_layer_name="s_conv")]},
     "The teacher has no layer 'nope'. Its layers: \\['t_conv'"),
    ({"distillation_losses": [FeatureDistillation(teacher_layer_name="t_conv", student_layer_name="s_flat")]},
     "same spatial size"),
    ({"distillation_losses": [FeatureDistillation(teacher_layer_name="t_conv", student_layer_name="s_conv",
                                                  projection=None)]}, "projection=None"),
    ({"distillation_losses": [LogitsDistillation()], "distillation_loss_weights": [1.0, 2.0]},
     "1 number\\(s\\) >= 0"),
    ({"distillation_losses": ["kl"]}, "DistillationLoss objects"),
    ({"alpha": 0.2, "student_loss_weight": 0.5}, "two names for one weight"),
])
def test_bad_losses_are_refused_naming_the_value(kwargs, message):
    teacher, student = _models()
    with pytest.raises(ConfigError, match=message):
        Distiller(teacher, student, **kwargs)


def test_custom_losses_keep_their_settings_out_of_compile():
    teacher, student = _models()
    distiller = Distiller(teacher, student, distillation_losses=LogitsDistillation(2.0))
    with pytest.raises(ConfigError, match="set their temperature and loss there"):
        distiller.compile(temperature=5.0)
    with pytest.raises(ConfigError, match="Unknown logits distillation loss 'klx'"):
        LogitsDistillation(loss="klx")


def test_run_config_chooses_the_losses(digits16, trained_cnn):
    from tfimgopt.data import build_pipeline
    from tfimgopt.distill import distill
    from tfimgopt.distill.tune import make_distiller
    from tfimgopt.models import create_model
    from tfimgopt.pipeline import load_config
    from tfimgopt.pipeline.stages.distill import check_losses

    losses = [{"type": "logits", "temperature": 2.0},
              {"type": "feature", "teacher_layer_name": "conv2", "student_layer_name": "conv1", "weight": 0.5}]
    config = load_config(overrides=[f"distill.losses={losses}", "data.image_size=16"])
    assert config.distill.losses == losses
    train_ds = build_pipeline(digits16.train.take(64), 32, training=True)

    def student():
        return create_model("tiny_cnn", digits16.info.image_shape, 10, filters=4)

    distiller = make_distiller(trained_cnn, student, train_ds, losses=config.distill.losses)
    assert [type(t).__name__ for t in distiller.distillation_losses] == ["LogitsDistillation", "FeatureDistillation"]
    assert distiller.distillation_loss_weights == [1.0, 0.5] and distiller.distillation_losses[0].temperature == 2.0
    assert distiller.projections[0].kernel.shape == (4, 8)  # student conv1 (4) -> teacher conv2 (width 8)
    trained = distill(trained_cnn, student, train_ds, epochs=1, losses=config.distill.losses, verbose=0)
    assert trained.count_params() == student().count_params()  # the projection is not in the student
    # The default table is the plain logits term (keras.io's path), and bad entries fail at load time.
    assert make_distiller(trained_cnn, student, train_ds, losses=[{"type": "logits"}]).projections == []
    with pytest.raises(ConfigError, match="type one of \\['feature', 'logits'\\]"):
        load_config(overrides=['distill.losses=[{"type": "features"}]'])
    with pytest.raises(ConfigError, match="accepted: \\['loss', 'teacher_layer_name'"):
        load_config(overrides=['distill.losses=[{"type": "feature", "teacher_layer": "conv2"}]'])
    # A layer the models lack fails in the run's preflight, before anything trains.
    bad = load_config(overrides=["data.image_size=16",
                                 'distill.losses=[{"type": "feature", "teacher_layer_name": "conv9", '
                                 '"student_layer_name": "conv1"}]'])
    with pytest.raises(ConfigError, match="The teacher has no layer 'conv9'"):
        check_losses(bad, digits16.info)
