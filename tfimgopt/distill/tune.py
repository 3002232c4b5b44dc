"""Training a student by distillation under a strategy, and choosing alpha and temperature
by measurement (grid search or successive halving on a validation split)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from tfimgopt.compat import keras, tf
from tfimgopt.distill.distiller import Distiller, _check_alpha
from tfimgopt.distill.losses import check_temperature, losses_from_config
from tfimgopt.errors import ConfigError, received

METHODS = ("grid", "halving")


def _soft_labels(dataset: tf.data.Dataset) -> bool:
    spec = dataset.element_spec
    label = spec[1] if isinstance(spec, tuple) and len(spec) > 1 else None
    if isinstance(label, dict):
        label = label.get("label")
    return label is not None and label.dtype.is_floating and label.shape.rank == 2


def make_distiller(teacher, student, train_ds, *, alpha=0.1, temperature=4.0, learning_rate=1e-3,
                   strategy=None, jit_compile=None, losses=None) -> Distiller:
    """Builds and compiles a `Distiller` in `strategy`'s scope (student may be a builder).
    `losses`: loss tables as in a run config's `distill.losses` (None: logits at `temperature`)."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        if not isinstance(student, keras.Model):
            student = student()
        terms = losses_from_config(list(losses), temperature) if losses is not None else {}
        distiller = Distiller(teacher, student, alpha=alpha, temperature=temperature, **terms)
        distiller.build(student.input_shape)  # BackupAndRestore needs a built model to restore into
        soft = _soft_labels(train_ds)
        metric = keras.metrics.CategoricalAccuracy if soft else keras.metrics.SparseCategoricalAccuracy
        distiller.compile(keras.optimizers.Adam(learning_rate), metrics=[metric(name="accuracy")],
                          jit_compile=jit_compile)
    return distiller


def distill(
    teacher: keras.Model,
    student: keras.Model | Callable[[], keras.Model],
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset | None = None,
    epochs: int = 5,
    *,
    alpha: float = 0.1,
    temperature: float = 4.0,
    learning_rate: float = 1e-3,
    strategy: tf.distribute.Strategy | None = None,
    work_dir: str | None = None,
    jit_compile: bool | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int | str = "auto",
    losses: Sequence[dict[str, Any]] | None = None,
) -> keras.Model:
    """Distils `teacher` into `student` with the shared, resumable training loop.

    `train_ds` may mix labelled and unlabelled examples (see `tfimgopt.data.with_unlabelled`).
    With a `work_dir`, training resumes after an interruption and the best student is
    kept in `work_dir/best.keras` (a feature loss's projection restarts on a resume: it
    is not part of the student). `losses`: loss tables as in a run config's
    `distill.losses`, e.g. `[{"type": "logits"}, {"type": "feature", "teacher_layer_name":
    "conv4", "student_layer_name": "conv2", "weight": 0.5}]` (None: logits only).

    Returns:
        The trained student (a plain tf_keras model, ready to save, prune or export).
    """
    from tfimgopt.training import train

    distiller = make_distiller(teacher, student, train_ds, alpha=alpha, temperature=temperature,
                               learning_rate=learning_rate, strategy=strategy, jit_compile=jit_compile,
                               losses=losses)
    train(distiller, train_ds, val_ds, epochs, strategy=strategy, work_dir=work_dir, compile_model=False,
          callbacks=callbacks, verbose=verbose)
    return distiller.student


def student_accuracy(model: keras.Model, dataset: tf.data.Dataset) -> float:
    """Top-1 accuracy of `model` on batched labelled data (sparse or one-hot labels)."""
    correct = total = 0
    for x, y in dataset:
        pred = np.argmax(model(x, training=False).numpy(), axis=-1)
        y = y.numpy()
        y = y.argmax(-1) if y.ndim == 2 else y.reshape(-1)
        correct += int((pred == y).sum())
        total += len(y)
    if not total:
        raise ConfigError("The validation dataset is empty. Received: a dataset with 0 examples")
    return correct / total


class TuneResult(NamedTuple):
    """Outcome of `tune_distillation`."""

    alpha: float
    temperature: float
    val_accuracy: float
    table: list[dict[str, Any]]
    student: keras.Model

    def markdown(self) -> str:
        """The table as Markdown, best row marked."""
        lines = ["| alpha | temperature | epochs | val accuracy |", "|---:|---:|---:|---:|"]
        for row in sorted(self.table, key=lambda r: (-r["val_accuracy"], r["alpha"], r["temperature"])):
            best = " (best)" if (row["alpha"], row["temperature"]) == (self.alpha, self.temperature) else ""
            lines.append(f"| {row['alpha']:g} | {row['temperature']:g} | {row['epochs']} | "
                         f"{row['val_accuracy']:.4f}{best} |")
        return "\n".join(lines)


def tune_distillation(
    teacher: keras.Model,
    student_builder: Callable[[], keras.Model],
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset,
    *,
    alphas: Sequence[float] = (0.0, 0.1, 0.5),
    temperatures: Sequence[float] = (1.0, 2.0, 4.0),
    epochs: int = 4,
    method: str = "halving",
    learning_rate: float = 1e-3,
    strategy: tf.distribute.Strategy | None = None,
    seed: int = 0,
    verbose: int = 1,
    losses: Sequence[dict[str, Any]] | None = None,
) -> TuneResult:
    """Searches alpha and temperature by the student's validation accuracy.

    Every candidate starts from the same student initialisation (`seed`).  `"grid"`
    trains each for `epochs`.  `"halving"` (successive halving) trains all candidates
    for a share of the epochs, keeps the better half, continues them, and so on, so
    only the finalists get the full `epochs`: about `log2(n)` times cheaper than the grid.

    Args:
        teacher: The trained teacher (logits out).
        student_builder: Zero-argument function returning a fresh student.
        train_ds: Batched training data (may mix in unlabelled examples).
        val_ds: Batched labelled validation data.
        alphas: Candidate weights of the hard-label term.
        temperatures: Candidate temperatures.
        epochs: Epochs for a candidate trained to the end.
        method: `"grid"` or `"halving"`.
        learning_rate: Adam learning rate of the student.
        strategy: Distribution strategy for every candidate.
        seed: Seeds each candidate's student initialisation.
        verbose: 1 prints one line per evaluated candidate.
        losses: Loss tables as in `distill`; logits terms without a temperature take
            each candidate's.

    Returns:
        `TuneResult(alpha, temperature, val_accuracy, table, student)`; ties go to the
        earlier candidate in `alphas` x `temperatures` order.

    Raises:
        ConfigError: for an empty or invalid candidate list, a bad method or epochs.
    """
    if method not in METHODS:
        raise ConfigError(f"method must be one of {METHODS}. {received('method', method)}")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ConfigError(f"epochs must be a positive int. {received('epochs', epochs)}")
    if not alphas or not temperatures:
        raise ConfigError(f"alphas and temperatures must be non-empty. Received: alphas={alphas}, "
                          f"temperatures={temperatures}")
    candidates = [(_check_alpha(a), check_temperature(t)) for a, t in itertools.product(alphas, temperatures)]
    live = {}
    for alpha, temperature in candidates:
        keras.utils.set_random_seed(seed)
        live[(alpha, temperature)] = make_distiller(teacher, student_builder, train_ds, alpha=alpha,
                                                    temperature=temperature, learning_rate=learning_rate,
                                                    strategy=strategy, losses=losses)
    rounds = 1 if method == "grid" else max(1, math.ceil(math.log2(len(candidates))))
    per_round = [epochs // rounds + (1 if i < epochs % rounds else 0) for i in range(rounds)]
    trained = dict.fromkeys(live, 0)
    scores: dict[tuple, float] = {}
    for round_index, round_epochs in enumerate(per_round):
        for key in list(live):
            if round_epochs:
                live[key].fit(train_ds, epochs=round_epochs, verbose=0)
                trained[key] += round_epochs
            scores[key] = student_accuracy(live[key].student, val_ds)
            if verbose:
                print(f"[tune] round {round_index + 1}/{rounds}: alpha={key[0]:g} T={key[1]:g} "
                      f"epochs={trained[key]} val_accuracy={scores[key]:.4f}", flush=True)
        if round_index < rounds - 1:
            ranked = sorted(live, key=lambda k: (-scores[k], candidates.index(k)))
            for key in ranked[max(1, math.ceil(len(ranked) / 2)):]:
                del live[key]
    best = min(live, key=lambda k: (-scores[k], candidates.index(k)))
    table = [{"alpha": a, "temperature": t, "epochs": trained[(a, t)], "val_accuracy": scores[(a, t)]}
             for a, t in candidates]
    return TuneResult(best[0], best[1], scores[best], table, live[best].student)
