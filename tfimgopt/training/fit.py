"""The training loop every stage shares: compile and fit under a strategy, resumably."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from tfimgopt._io import atomic_path
from tfimgopt.compat import keras, tf
from tfimgopt.errors import ConfigError, TrainingError, received

ModelOrBuilder = keras.Model | Callable[[], keras.Model]


def default_loss(dataset: tf.data.Dataset) -> keras.losses.Loss:
    """Cross-entropy on logits matching the dataset's labels (sparse or one-hot/soft)."""
    label_spec = dataset.element_spec[1]
    if label_spec.dtype.is_floating and label_spec.shape.rank == 2:
        return keras.losses.CategoricalCrossentropy(from_logits=True)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def default_metrics(dataset: tf.data.Dataset) -> list[keras.metrics.Metric]:
    """An accuracy metric matching the dataset's labels."""
    label_spec = dataset.element_spec[1]
    if label_spec.dtype.is_floating and label_spec.shape.rank == 2:
        return [keras.metrics.CategoricalAccuracy(name="accuracy")]
    return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]


_OPTIMIZER_BUILDERS = {
    "adam": lambda learning_rate: keras.optimizers.Adam(learning_rate=learning_rate),
    "adamw": lambda learning_rate: keras.optimizers.AdamW(learning_rate=learning_rate),
    "sgd": lambda learning_rate: keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9),
    "rmsprop": lambda learning_rate: keras.optimizers.RMSprop(learning_rate=learning_rate),
}
#: Optimizer names `make_optimizer` (and every training entry point) accepts.
OPTIMIZERS = tuple(_OPTIMIZER_BUILDERS)


def check_optimizer(name: str) -> None:
    """Raises `ConfigError` for an optimizer name `make_optimizer` does not know."""
    if name not in _OPTIMIZER_BUILDERS:
        raise ConfigError(f"Unknown optimizer. Valid names: {sorted(OPTIMIZERS)}. {received('optimizer', name)}")


def make_optimizer(name: str | keras.optimizers.Optimizer,
                   learning_rate: float | keras.optimizers.schedules.LearningRateSchedule):
    """Builds an optimizer by name (`"adam"`, `"sgd"`, `"rmsprop"`, `"adamw"`)."""
    if isinstance(name, keras.optimizers.Optimizer):
        return name
    check_optimizer(name)
    if isinstance(learning_rate, int | float) and not learning_rate > 0:  # or a schedule
        raise ConfigError(f"learning_rate must be > 0. {received('learning_rate', learning_rate)}")
    return _OPTIMIZER_BUILDERS[name](learning_rate)


class AtomicModelCheckpoint(keras.callbacks.Callback):
    """Saves the model after every epoch that improves `monitor`, atomically.

    Keras's own `ModelCheckpoint` writes in place, so a kill mid-save leaves a torn
    file where the last good model was.
    """

    def __init__(self, path: str, monitor: str = "val_loss", mode: str = "min"):
        super().__init__()
        self.path = path
        self.monitor = monitor
        self.mode = mode
        self.best: float | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        value = logs.get(self.monitor, logs.get(self.monitor.removeprefix("val_")))
        if value is not None and self.best is not None:
            better = value < self.best if self.mode == "min" else value > self.best
            if not better:
                return
        self.best = value
        # A model may name the part worth keeping (a Distiller keeps its student).
        target = getattr(self.model, "checkpoint_model", self.model)
        with atomic_path(self.path) as tmp:
            target.save(tmp)


class StopOnDivergence(keras.callbacks.Callback):
    """Stops training with a `TrainingError` the moment the loss is NaN or infinite: a diverged
    run would otherwise train on, save NaN weights and fail much later (at export)."""

    def __init__(self, learning_rate: Any = None):
        super().__init__()
        self.learning_rate = learning_rate
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        import math

        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            rate = f" at learning rate {self.learning_rate:g}" if isinstance(self.learning_rate, int | float) else ""
            raise TrainingError(
                f"Training diverged: the loss became {float(loss)} at epoch {self.epoch + 1}, batch {batch + 1}{rate}. "
                "Lower the learning rate (10x), or check the data for NaN or extreme values. "
                f"Received: loss={float(loss)}")


class StageProgress(keras.callbacks.Callback):
    """One progress bar for a whole training run (epochs, loss, accuracy), redrawn in place on a
    terminal, and one summary line when it ends: what the command line shows instead of
    Keras's line per epoch."""

    WIDTH = 20

    def __init__(self, stream=None):
        super().__init__()
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.began = 0.0
        self.logs: dict[str, float] = {}
        self.done = 0

    def _line(self) -> str:
        import time

        total = max(int(self.params.get("epochs") or 1), 1)
        filled = round(self.WIDTH * self.done / total)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in self.logs.items() if k in ("loss", "accuracy", "val_accuracy"))
        return (f"   [{'#' * filled}{'.' * (self.WIDTH - filled)}] epoch {self.done}/{total}"
                + (f", {shown}" if shown else "") + f" [{time.monotonic() - self.began:.0f}s]")

    def on_train_begin(self, logs=None):
        import time

        self.began = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.done, self.logs = epoch + 1, dict(logs or {})
        if self.tty:
            self.stream.write("\r" + self._line())
            self.stream.flush()

    def on_train_end(self, logs=None):
        self.stream.write(("\r" if self.tty else "") + self._line() + "\n")
        self.stream.flush()


def train(
    model: ModelOrBuilder,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset | None = None,
    epochs: int = 1,
    *,
    optimizer: str | keras.optimizers.Optimizer = "adam",
    learning_rate: float = 1e-3,
    loss: keras.losses.Loss | None = None,
    metrics: Sequence[Any] | None = None,
    strategy: tf.distribute.Strategy | None = None,
    work_dir: str | None = None,
    jit_compile: bool | None = None,
    steps_per_execution: int = 1,
    steps_per_epoch: int | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    compile_model: bool = True,
    verbose: int | str = "auto",
) -> keras.callbacks.History:
    """Compiles and fits a model under a distribution strategy; resumes if interrupted.

    With a `work_dir`, training state is backed up at the end of every epoch
    (`BackupAndRestore`): calling `train` again with the same `work_dir` after a crash
    or a preempted Colab/TPU runtime continues from the last finished epoch instead of
    starting over. The best model so far is kept in `work_dir/best.keras` (written
    atomically) and the per-epoch metrics in `work_dir/history.csv`.

    Args:
        model: A tf_keras model, or a zero-argument function that builds one; pass a
            function when using a strategy so variables are created in its scope.
        train_ds: Batched `(images, labels)` training data.
        val_ds: Batched validation data, evaluated after every epoch.
        epochs: Total number of epochs (including any already done before a resume).
        optimizer: Optimizer name or instance.
        learning_rate: Learning rate for a named optimizer.
        loss: Loss; by default cross-entropy on logits matching the labels.
        metrics: Metrics; by default accuracy matching the labels.
        strategy: A `tf.distribute.Strategy`; the default (current) strategy if None.
        work_dir: Folder for backups, the best checkpoint and the history.
        jit_compile: Compile the train step with XLA (as TPUs do).
        steps_per_execution: Train steps per `tf.function` call.
        steps_per_epoch: Steps per epoch for repeated datasets.
        callbacks: Extra Keras callbacks, run after ours.
        compile_model: Set False to keep a compile you already did.
        verbose: Keras progress output.

    Returns:
        The Keras `History` of this call (only the epochs it ran); `history.model` is
        the trained model (useful when `model` was a builder function).

    Raises:
        ConfigError: for a non-positive `epochs` or an unknown optimizer.

    Example:
        >>> from tfimgopt.data import build_pipeline, load_dataset
        >>> from tfimgopt.models import create_model
        >>> from tfimgopt.training import train
        >>> s = load_dataset("digits", image_size=16)
        >>> model = create_model("tiny_cnn", s.info.image_shape, s.info.num_classes)
        >>> history = train(model, build_pipeline(s.train, 32, training=True), epochs=1, verbose=0)
    """
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ConfigError(f"epochs must be a positive int. {received('epochs', epochs)}")
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        from tfimgopt.compat import is_keras3
        from tfimgopt.keras3 import as_logits, as_tf_keras

        if not isinstance(model, keras.Model) and not is_keras3(model):
            if not callable(model):
                raise ConfigError(f"train takes a model or a function that builds one. "
                                  f"Received: model of type {type(model).__name__}")
            model = model()
        model = as_tf_keras(model, "train")
        if not isinstance(model, keras.Model):
            raise ConfigError(f"train needs a tf_keras model (a Keras 3 model is converted with from_keras3). "
                              f"Received: model of type {type(model).__name__}")
        if compile_model and loss is None:
            model = as_logits(model, "train")  # the default loss is cross-entropy on logits
        if compile_model:
            model.compile(
                optimizer=make_optimizer(optimizer, learning_rate),
                loss=loss or default_loss(train_ds),
                metrics=list(metrics) if metrics is not None else default_metrics(train_ds),
                jit_compile=jit_compile,
                steps_per_execution=steps_per_execution,
            )
    all_callbacks: list[keras.callbacks.Callback] = []
    if work_dir:
        os.makedirs(work_dir, exist_ok=True)
        all_callbacks += [
            keras.callbacks.BackupAndRestore(os.path.join(work_dir, "backup")),
            AtomicModelCheckpoint(
                os.path.join(work_dir, "best.keras"),
                monitor="val_loss" if val_ds is not None else "loss",
            ),
            keras.callbacks.CSVLogger(os.path.join(work_dir, "history.csv"), append=True),
        ]
    all_callbacks += [*callbacks, StopOnDivergence(learning_rate)]
    if verbose == "auto":  # one line per epoch in logs and notebooks' captured output, bars on a terminal
        from tfimgopt._quiet import is_quiet

        if is_quiet():  # the command line: one bar for the whole run
            verbose = 0
            all_callbacks.append(StageProgress())
        else:
            verbose = 1 if sys.stdout.isatty() else 2
    from tfimgopt._quiet import native_output

    with native_output():  # on the command line: XLA's "Compiled cluster using XLA!" and the like held back
        return model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            callbacks=all_callbacks,
            verbose=verbose,
        )
