"""Unlabelled examples in distillation, the transfer-set data helpers, and the tuner."""

import numpy as np
import pytest

from tests.distill.test_distiller import _batch, _models, _np_loss
from tfimgopt.compat import keras, tf
from tfimgopt.data import UNLABELLED, build_pipeline, hold_out_labels, load_unlabelled, with_unlabelled
from tfimgopt.distill import Distiller, distill, student_accuracy, tune_distillation
from tfimgopt.errors import ConfigError, DataError


def _mixed_labels(y):
    y = y.copy()
    y[1::2] = UNLABELLED  # every other example is unlabelled
    return y


@pytest.mark.parametrize("soft", [False, True])
def test_unlabelled_examples_get_only_the_kl_term(soft):
    teacher, student = _models()
    x, y = _batch(8)
    y_mixed = _mixed_labels(y)
    labelled = y_mixed >= 0
    labels = np.eye(5, dtype=np.float32)[np.maximum(y_mixed, 0)] * labelled[:, None] if soft else y_mixed
    distiller = Distiller(teacher, student)
    distiller.compile(metrics=["accuracy"], alpha=0.3, temperature=2.0)
    logs = distiller.evaluate(x, labels, batch_size=8, verbose=0, return_dict=True)
    t, s = teacher.predict(x, verbose=0), student.predict(x, verbose=0)
    ce, kl, _ = _np_loss(t, s, np.eye(5)[np.maximum(y_mixed, 0)], 0.3, 2.0)
    expected_total = np.where(labelled, 0.3 * ce + 0.7 * kl, 0.7 * kl).mean()
    np.testing.assert_allclose(logs["loss"], expected_total, rtol=1e-5)
    np.testing.assert_allclose(logs["student_loss"], ce[labelled].mean(), rtol=1e-5)
    np.testing.assert_allclose(logs["distillation_loss"], kl.mean(), rtol=1e-5)
    np.testing.assert_allclose(logs["accuracy"], (s.argmax(1) == y)[labelled].mean())


def test_images_only_batches_train_on_the_kl_term_alone():
    teacher, student = _models()
    x, _ = _batch(8)
    distiller = Distiller(teacher, student, alpha=0.5, temperature=2.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    before = student.get_weights()
    history = distiller.fit(tf.data.Dataset.from_tensor_slices(x).batch(8), epochs=1, verbose=0)
    assert history.history["student_loss"] == [0.0]
    assert history.history["loss"][0] == pytest.approx(0.5 * history.history["distillation_loss"][0], rel=1e-5)
    assert not np.allclose(before[0], student.get_weights()[0])


def _one_masked_step(strategy, x, y):
    with strategy.scope():
        teacher, student = _models()
        distiller = Distiller(teacher, student)
        distiller.compile(optimizer=keras.optimizers.SGD(0.5), alpha=0.4, temperature=3.0)
    distiller.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x)), epochs=1, verbose=0)
    return student.get_weights()


@pytest.mark.slow
def test_masked_batch_under_two_replicas_gives_the_single_device_update(mirrored):
    x, y = _batch(8)
    y = _mixed_labels(y)
    y[:4] = UNLABELLED  # replica 0 sees only unlabelled examples, replica 1 a mix
    single = _one_masked_step(tf.distribute.get_strategy(), x, y)
    two = _one_masked_step(mirrored, x, y)
    for a, b in zip(single, two, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_hold_out_and_mix_unlabelled(digits16):
    labelled, unlabelled = hold_out_labels(digits16.train, 100, seed=0)
    labels = np.array([int(y) for _, y in labelled])
    assert len(labels) == 100 and set(labels) == set(range(10))  # stratified
    n_unlabelled = int(unlabelled.cardinality())
    assert n_unlabelled == digits16.info.num_examples["train"] - 100
    mixed = with_unlabelled(labelled, unlabelled)
    ys = np.array([int(y) for _, y in mixed])
    assert (ys == UNLABELLED).sum() == n_unlabelled and (ys >= 0).sum() == 100
    one_hot = next(iter(build_pipeline(mixed, 2000, label_mode="one_hot", num_classes=10)))[1].numpy()
    assert (one_hot.sum(1) == 0).sum() == n_unlabelled
    with pytest.raises(DataError, match="Received: labelled=0"):
        hold_out_labels(digits16.train, 0)
    with pytest.raises(DataError, match="same shape"):
        with_unlabelled(labelled, unlabelled.map(lambda x: x[:8]))


def test_unlabelled_folder_reads_images_without_classes(tmp_path):
    from PIL import Image

    for i, sub in enumerate(["", "a/b", ""]):
        folder = tmp_path / sub
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((10, 12, 3), 40 * i, np.uint8)).save(folder / f"img{i}.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("x")
    images = list(load_unlabelled(str(tmp_path), image_size=8, channels=1))
    assert len(images) == 3 and images[0].shape == (8, 8, 1) and images[0].dtype == tf.uint8
    with pytest.raises(DataError, match="does not exist"):
        load_unlabelled(str(tmp_path / "missing"))


def test_distill_trains_a_student_on_a_transfer_set_and_checkpoints_it(digits16, trained_cnn, tmp_path):
    from tfimgopt.models import create_model

    labelled, unlabelled = hold_out_labels(digits16.train, 200, seed=0)
    train_ds = build_pipeline(with_unlabelled(labelled, unlabelled), 64, training=True)
    val_ds = build_pipeline(digits16.val, 128)
    keras.utils.set_random_seed(0)
    student = distill(trained_cnn, lambda: create_model("tiny_cnn", digits16.info.image_shape, 10), train_ds,
                      val_ds, epochs=3, alpha=0.5, temperature=2.0, learning_rate=3e-3, work_dir=str(tmp_path),
                      verbose=0)
    assert student_accuracy(student, val_ds) > 0.5
    saved = keras.models.load_model(tmp_path / "best.keras")
    assert saved.count_params() == student.count_params()


@pytest.mark.slow
def test_tuner_returns_the_setting_with_the_best_validation_accuracy(digits16, trained_cnn):
    from tfimgopt.models import create_model

    train_ds = build_pipeline(digits16.train, 64, training=True)
    val_ds = build_pipeline(digits16.val, 128)
    result = tune_distillation(
        trained_cnn, lambda: create_model("tiny_cnn", digits16.info.image_shape, 10), train_ds, val_ds,
        alphas=(0.0, 1.0), temperatures=(1.0, 4.0), epochs=2, method="grid", learning_rate=3e-3, verbose=0,
    )
    assert len(result.table) == 4 and all(row["epochs"] == 2 for row in result.table)
    best = max(result.table, key=lambda r: r["val_accuracy"])
    assert result.val_accuracy == best["val_accuracy"]
    assert (result.alpha, result.temperature) in {
        (r["alpha"], r["temperature"]) for r in result.table if r["val_accuracy"] == best["val_accuracy"]}
    assert student_accuracy(result.student, val_ds) == pytest.approx(result.val_accuracy)
    assert "(best)" in result.markdown()

    halving = tune_distillation(
        trained_cnn, lambda: create_model("tiny_cnn", digits16.info.image_shape, 10), train_ds, val_ds,
        alphas=(0.0, 0.5), temperatures=(2.0, 4.0), epochs=2, method="halving", verbose=0,
    )
    assert sorted(row["epochs"] for row in halving.table) == [1, 1, 2, 2]
    finalists = [r for r in halving.table if r["epochs"] == 2]
    assert halving.val_accuracy == max(r["val_accuracy"] for r in finalists)
    with pytest.raises(ConfigError, match="Received: method='random'"):
        tune_distillation(trained_cnn, lambda: None, train_ds, val_ds, method="random")
    with pytest.raises(ConfigError, match="Received: temperature=0"):
        tune_distillation(trained_cnn, lambda: None, train_ds, val_ds, temperatures=(0,))
