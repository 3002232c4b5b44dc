"""Fine-tuning a pretrained backbone in two phases, Keras's transfer-learning recipe:

1. the head alone, with everything below it frozen (BatchNormalization layers then run in
   inference mode, so their statistics stay those of the pretrained model);
2. the top `unfreeze` layers with weights below the head as well, at a lower learning
   rate with a cosine, step or constant schedule. BatchNormalization stays frozen in inference
   mode here too: updating its statistics on a small dataset wrecks what was learned.

Both phases use the shared training loop (`train`): under a strategy, with backups, and
resumable after an interruption with the same `work_dir`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

from tfimgopt import _io
from tfimgopt.compat import keras, tf
from tfimgopt.errors import ConfigError, received
from tfimgopt.training.fit import check_optimizer, make_optimizer, train

SCHEDULES = ("cosine", "step", "constant")
HEAD_DONE = "head_done.h5"  # HDF5 weights (a .weights.h5 name would mean the Keras 3 format)


@dataclasses.dataclass
class FineTuneResult:
    """What `fine_tune` did.

    Attributes:
        model: The fine-tuned model (the one passed in, or built by the builder).
        head_history: Keras history of phase 1 (None when a finished phase 1 was reused).
        fine_tune_history: Keras history of phase 2 (None when `epochs` is 0).
        unfrozen: Names of the layers below the head trained in phase 2.
    """

    model: keras.Model
    head_history: Any
    fine_tune_history: Any
    unfrozen: list[str]


def _check_count(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}. {received(name, value)}")
    return value


def _steps(dataset: tf.data.Dataset) -> int:
    steps = int(dataset.cardinality())
    if steps == tf.data.INFINITE_CARDINALITY:
        raise ConfigError("fine_tune needs a finite training dataset (one epoch = one pass); this one repeats "
                          "forever. Received: train_ds with infinite cardinality")
    if steps < 0:  # unknown (e.g. after filter): count once
        steps = sum(1 for _ in dataset)
    return max(1, steps)


def layers_to_unfreeze(model: keras.Model, head: Sequence[str], count: int) -> list[keras.layers.Layer]:
    """The top `count` layers with weights below the head, BatchNormalization excluded."""
    below = [layer for layer in _network(model, head).layers if layer.name not in head and layer.weights
             and not isinstance(layer, keras.layers.BatchNormalization)]
    return below[len(below) - count:] if count else []


def _network(model: keras.Model, head: Sequence[str]) -> keras.Model:
    """The model whose layers include the head: `model` itself, or a model nested in it
    (a classifier wrapped with augmentation layers in front, `augmented_model`)."""
    if any(layer.name in head for layer in model.layers):
        return model
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            inner = _network(layer, head)
            if any(child.name in head for child in inner.layers):
                return inner
    return model


def _schedule(name: str, rate: float, total: int):
    if name == "cosine":
        return keras.optimizers.schedules.CosineDecay(rate, total)
    if name == "step":
        half = max(0, total // 2 - 1)  # the last step at the full rate (boundaries are inclusive)
        return keras.optimizers.schedules.PiecewiseConstantDecay(
            [half, max(half + 1, total * 3 // 4 - 1)], [rate, rate / 10, rate / 100])
    return rate


def fine_tune(
    model: keras.Model | Callable[[], keras.Model],
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset | None = None,
    *,
    head: Sequence[str] = ("classifier",),
    head_epochs: int = 5,
    epochs: int = 5,
    unfreeze: int = 20,
    learning_rate: float = 1e-3,
    fine_tune_learning_rate: float = 1e-4,
    schedule: str = "cosine",
    optimizer: str = "adam",
    strategy: tf.distribute.Strategy | None = None,
    work_dir: str | None = None,
    jit_compile: bool | None = None,
    verbose: int | str = "auto",
) -> FineTuneResult:
    """Trains the head of a pretrained model, then its top layers (two phases).

    Args:
        model: A tf_keras model with pretrained weights below its head (e.g.
            `create_model("mobilenet_v2", ..., weights="imagenet")`), or a zero-argument
            builder (pass one under a strategy, so variables are created in its scope).
        train_ds: Batched `(images, labels)` training data (finite).
        val_ds: Batched validation data, evaluated after every epoch.
        head: Names of the layers trained in phase 1 (the zoo's classifier is
            `"classifier"`). They may belong to a model nested in `model` (a classifier
            behind augmentation layers): that model's layers are the ones frozen.
        head_epochs: Epochs of phase 1 (>= 1).
        epochs: Epochs of phase 2 (0 stops after phase 1).
        unfreeze: Layers with weights below the head (counted from the top, BatchNorm
            excluded) trained in phase 2.
        learning_rate: Learning rate of phase 1.
        fine_tune_learning_rate: Starting learning rate of phase 2 (typically 10-100x
            lower than phase 1's).
        schedule: Phase 2's learning rate: `"cosine"` (decays to 0 over the phase),
            `"step"` (divided by 10 at half the phase and again at three quarters) or
            `"constant"`.
        optimizer: `"adam"`, `"adamw"`, `"sgd"` or `"rmsprop"`, a fresh one for each phase.
        strategy: Distribution strategy of both phases.
        work_dir: Backups and best checkpoints (`work_dir/head`, `work_dir/fine_tune`); a
            rerun with the same folder resumes, and skips a finished phase 1.
        jit_compile: Compile the train steps with XLA.
        verbose: Keras progress output.

    Returns:
        A `FineTuneResult`.

    Raises:
        ConfigError: unknown head layer names (lists the layers), bad counts, schedule or
            learning rates.

    Example:
        >>> from tfimgopt.data import build_pipeline, load_dataset
        >>> from tfimgopt.models import create_model
        >>> from tfimgopt.training import fine_tune
        >>> s = load_dataset("digits", image_size=16)
        >>> model = create_model("small_cnn", s.info.image_shape, 10, width=4, dense=16)
        >>> result = fine_tune(model, build_pipeline(s.train, 64, training=True), head_epochs=1, epochs=1,
        ...                    unfreeze=1, verbose=0)
        >>> result.unfrozen
        ['fc']
    """
    _check_count(head_epochs, "head_epochs", 1)
    _check_count(epochs, "epochs", 0)
    _check_count(unfreeze, "unfreeze", 0)
    if schedule not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {SCHEDULES}. {received('schedule', schedule)}")
    for name, value in (("learning_rate", learning_rate), ("fine_tune_learning_rate", fine_tune_learning_rate)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigError(f"{name} must be a number > 0. {received(name, value)}")
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        if not isinstance(model, keras.Model):
            model = model()
    head = list(head)
    check_optimizer(optimizer)  # an unknown name fails before training
    network = _network(model, head)
    names = [layer.name for layer in network.layers]
    missing = [name for name in head if name not in names]
    if missing or not head:
        raise ConfigError(f"head must name layers of the model; {missing or 'none'} not found. Its last layers: "
                          f"{names[-5:]}. {received('head', head)}")
    sub = (lambda name: os.path.join(work_dir, name)) if work_dir else (lambda name: None)

    # Phase 1: the head alone. Frozen BatchNormalization runs in inference mode.
    done = os.path.join(work_dir, HEAD_DONE) if work_dir else None
    for layer in model.layers:  # whatever wraps the network (augmentation) has nothing to train
        layer.trainable = layer is network
    for layer in network.layers:
        layer.trainable = layer.name in head
    head_history = None
    if done and os.path.isfile(done):
        model.load_weights(done)
    else:
        head_history = train(model, train_ds, val_ds, head_epochs, optimizer=optimizer, learning_rate=learning_rate,
                             strategy=strategy, work_dir=sub("head"), jit_compile=jit_compile, verbose=verbose)
        if done:
            with _io.atomic_path(done) as tmp:
                model.save_weights(tmp)

    # Phase 2: the top layers too, at a lower, decaying learning rate; BatchNorm stays frozen.
    unfrozen = layers_to_unfreeze(model, head, unfreeze) if epochs else []
    fine_history = None
    if epochs:
        for layer in unfrozen:
            layer.trainable = True
        total = epochs * _steps(train_ds)
        with strategy.scope():
            rate = _schedule(schedule, fine_tune_learning_rate, total)
            phase_two = make_optimizer(optimizer, rate)
        fine_history = train(model, train_ds, val_ds, epochs, optimizer=phase_two, strategy=strategy,
                             work_dir=sub("fine_tune"), jit_compile=jit_compile, verbose=verbose)
    for layer in [*model.layers, *network.layers]:
        layer.trainable = True  # the model leaves as it came: trainable (BatchNorm included)
    return FineTuneResult(model, head_history, fine_history, [layer.name for layer in unfrozen])
