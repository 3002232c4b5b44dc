"""The shared training loop: it learns, writes its work folder, and resumes after a kill."""

import csv
import os
import textwrap

import numpy as np
import pytest

from tests.helpers import run_python
from tfimgopt.compat import keras, tf
from tfimgopt.data import build_pipeline
from tfimgopt.errors import ConfigError
from tfimgopt.models import create_model
from tfimgopt.training import train


def test_train_learns_digits_and_writes_work_dir(digits16, tmp_path):
    keras.utils.set_random_seed(0)
    train_ds = build_pipeline(digits16.train, 32, training=True)
    val_ds = build_pipeline(digits16.val, 64)
    model = create_model("tiny_cnn", digits16.info.image_shape, 10, filters=8)
    history = train(model, train_ds, val_ds, epochs=3, learning_rate=3e-3, work_dir=str(tmp_path), verbose=0)
    assert history.model is model
    assert history.history["val_accuracy"][-1] > 0.8  # chance is 0.1
    assert history.history["loss"][-1] < history.history["loss"][0]
    with open(tmp_path / "history.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2]
    best = keras.models.load_model(tmp_path / "best.keras")
    assert best.count_params() == model.count_params()
    assert not list((tmp_path / "backup").glob("**/*.index"))  # deleted after a finished run
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_builder_function_is_built_in_strategy_scope(digits16, mirrored):
    strategy = mirrored
    train_ds = build_pipeline(digits16.train.take(64), 16, training=True)
    history = train(
        lambda: create_model("tiny_cnn", digits16.info.image_shape, 10), train_ds, epochs=1,
        strategy=strategy, verbose=0,
    )
    model = history.model
    assert isinstance(model.layers[-1].kernel, tf.distribute.DistributedValues)
    assert np.isfinite(history.history["loss"][0])


def test_soft_labels_pick_categorical_loss(digits16):
    train_ds = build_pipeline(digits16.train.take(32), 16, label_mode="one_hot", num_classes=10)
    model = create_model("tiny_cnn", digits16.info.image_shape, 10)
    history = train(model, train_ds, epochs=1, verbose=0)
    assert isinstance(model.loss, keras.losses.CategoricalCrossentropy)
    assert "accuracy" in history.history


@pytest.mark.parametrize(
    "kwargs, message",
    [({"epochs": 0}, "Received: epochs=0"), ({"optimizer": "adagrad"}, "Received: optimizer='adagrad'"),
     ({"learning_rate": -1.0}, "Received: learning_rate=-1.0")],
)
def test_bad_training_arguments(digits16, kwargs, message):
    model = create_model("tiny_cnn", digits16.info.image_shape, 10)
    args = {"epochs": 1, **kwargs}
    with pytest.raises(ConfigError, match=message):
        train(model, build_pipeline(digits16.train.take(8), 8), **args)


_RESUME_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from tfimgopt.compat import keras
    from tfimgopt.data import build_pipeline, load_dataset
    from tfimgopt.models import create_model
    from tfimgopt.training import train

    class DieAfterEpoch(keras.callbacks.Callback):
        def __init__(self, epoch):
            super().__init__()
            self.epoch = epoch
        def on_epoch_end(self, epoch, logs=None):
            if epoch == self.epoch:
                os._exit(17)  # as abrupt as a preempted runtime

    keras.utils.set_random_seed(0)
    s = load_dataset("digits", image_size=8)
    die = int(sys.argv[2]) if len(sys.argv) > 2 else -1
    train(create_model("tiny_cnn", s.info.image_shape, 10), build_pipeline(s.train, 64, training=True),
          build_pipeline(s.val, 64), epochs=3, work_dir=sys.argv[1], callbacks=[DieAfterEpoch(die)], verbose=2)
    print("FINISHED")
    """
)


@pytest.mark.slow
def test_interrupted_training_resumes_from_last_epoch(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(_RESUME_SCRIPT)
    work = tmp_path / "work"
    argv = [str(script), str(work), "1"]
    code = f"import runpy, sys; sys.argv = {argv!r}; runpy.run_path(sys.argv[0], run_name='__main__')"
    first = run_python(code)
    assert first.returncode == 17, first.stderr[-2000:]
    assert "FINISHED" not in first.stdout
    assert list((work / "backup").glob("**/*.index"))

    code = code.replace(", '1']", "]")
    second = run_python(code)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "FINISHED" in second.stdout
    log = second.stdout + second.stderr
    assert "Epoch 3/3" in log and "Epoch 1/3" not in log and "Epoch 2/3" not in log
    with open(work / "history.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2]
