"""What stages share during a run: the config, the data, the models made so far, the variants."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from tfimgopt import _io
from tfimgopt.compat import keras
from tfimgopt.errors import ConfigError, received
from tfimgopt.models import create_model
from tfimgopt.models.files import load_model, saved_by_keras3  # noqa: F401  (imported from here before)
from tfimgopt.pipeline.config import RunConfig
from tfimgopt.pipeline.data import PreparedData
from tfimgopt.pipeline.variants import Variant


def build_model(name: str, info, options: dict | None, key: str) -> keras.Model:
    """`create_model` for a run: bad builder options become a `ConfigError` naming the config key."""
    try:
        return create_model(name, info.image_shape, info.num_classes, **(options or {}))
    except TypeError as err:
        raise ConfigError(f"Bad {key} for {name}: {err}. {received(key, options)}") from None


def test_accuracy(model: keras.Model, test_ds) -> float:
    """Top-1 accuracy of a Keras model on the batched test split."""
    from tfimgopt.distill import student_accuracy

    return float(student_accuracy(model, test_ds))


test_accuracy.__test__ = False  # a helper, not a pytest test


@dataclasses.dataclass
class RunFolder:
    """The run folder on disk: paths inside it (never outside), atomic writes, the work
    folders training resumes from, and hashes. Disk is for resuming and for the user; the
    stages of one run hand their models to each other in memory (`RunContext`)."""

    out: str
    log: Callable[[str], None] = print

    def path(self, rel: str) -> str:
        """The absolute path of a run-folder-relative path (refuses one that leaves the folder)."""
        return _io.safe_join(self.out, rel)

    def rel(self, path: str) -> str:
        return os.path.relpath(path, self.out)

    def work_dir(self, name: str, fingerprint: str) -> str:
        """`work/<name>`: epoch backups a training stage resumes from.

        The folder is stamped with the running stage's fingerprint; backups stamped with
        another one (an interrupted run with other settings or data) are removed, so a
        stage never resumes from training it should not continue.
        """
        import shutil

        path = os.path.join(self.out, "work", name)
        stamp = os.path.join(path, ".fingerprint")
        if os.path.isdir(path) and not os.path.islink(path):
            try:
                with open(stamp) as f:
                    old = f.read().strip()
            except OSError:
                old = None
            if old != fingerprint:
                self.log(f"   removing {self.rel(path)}: its backups are from a run with other inputs")
                shutil.rmtree(path)
        _io.write_text(stamp, fingerprint)
        return path

    def save_model(self, rel: str, model: keras.Model) -> str:
        """Writes a model atomically at `rel`; returns `rel`."""
        _io.write_with(self.path(rel), model.save)
        return rel

    def sha256(self, rel: str) -> str:
        """SHA-256 of a file or folder of the run (see `_io.sha256_tree`)."""
        return _io.sha256_tree(self.path(rel))


@dataclasses.dataclass
class RunContext:
    """The state stages read and extend, in stage order; `folder` is where it is kept on disk.

    Attributes:
        config: The validated run config.
        folder: The run folder (`RunFolder`): paths, atomic writes, work folders.
        data: Prepared splits and pipelines.
        strategy: The distribution strategy training runs under.
        log: Where progress lines go.
        records: Stage name -> its record (finished this run or loaded from disk).
        models: Model name -> run-folder-relative `.keras` path, in the order made
            (`baseline`, `student`, `pruned`...); the last one is what later stages start from.
        sparsity: Model name -> measured sparsity, for models that were pruned.
        variants: Exported variants that passed verification.
        failed: Variant name -> why it failed verification (left out of the selection).
    """

    config: RunConfig
    folder: RunFolder
    data: PreparedData
    strategy: Any = None
    log: Callable[[str], None] = print
    records: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    models: dict[str, str] = dataclasses.field(default_factory=dict)
    sparsity: dict[str, float] = dataclasses.field(default_factory=dict)
    variants: list[Variant] = dataclasses.field(default_factory=list)
    failed: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    #: The user's own model the baseline adopts (`tfimgopt.pipeline.adopt.UserModel`), or None.
    user: Any = None
    #: What the run settled for the user (input range measured, student picked...), for the report.
    notes: list[str] = dataclasses.field(default_factory=list)
    #: Fingerprint of the stage running now (set by the run); its work folders carry it.
    fingerprint: str = ""
    #: Models loaded from disk this run, and the seconds that took (the cost models kept in
    #: memory between stages avoid: only a resumed run loads the models of skipped stages).
    loads: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    _loaded: dict[str, keras.Model] = dataclasses.field(default_factory=dict, repr=False)
    _saved: dict[str, keras.Model] = dataclasses.field(default_factory=dict, repr=False)

    def __post_init__(self):
        if isinstance(self.folder, str | os.PathLike):  # RunContext(config, "runs/x", data): a folder path
            self.folder = RunFolder(os.fspath(self.folder), self.log)

    @property
    def out(self) -> str:
        return self.folder.out

    def path(self, rel: str) -> str:
        return self.folder.path(rel)

    def rel(self, path: str) -> str:
        return self.folder.rel(path)

    def work_dir(self, name: str) -> str:
        """`work/<name>` for the running stage (see `RunFolder.work_dir`)."""
        return self.folder.work_dir(name, self.fingerprint)

    def add_model(self, name: str, rel: str, sparsity: float | None = None) -> None:
        """Adds a model of the run: kept in memory when this run saved it (`save_model` or
        `keep`), otherwise loaded from `rel` when a stage first asks for it."""
        self.models[name] = rel
        self._loaded.pop(name, None)
        if rel in self._saved:
            self._loaded[name] = self._saved.pop(rel)
        if sparsity is not None:
            self.sparsity[name] = sparsity

    @property
    def reference(self) -> str:
        """The run's first model (the baseline): the teacher, and the accuracy reference."""
        return next(iter(self.models))

    @property
    def latest(self) -> str:
        """The most recent model of the run: what the next technique starts from."""
        return list(self.models)[-1]

    def model(self, name: str) -> keras.Model:
        """A model of the run: the one in memory, or loaded (in safe mode) once from its file."""
        if name not in self._loaded:
            import time

            began = time.monotonic()
            self._loaded[name] = load_model(self.path(self.models[name]))
            self.loads.append((name, round(time.monotonic() - began, 2)))
        return self._loaded[name]

    def keep(self, rel: str, model: keras.Model) -> None:
        """Hands the model just saved at `rel` to later stages in memory. A model trained
        under several replicas holds distributed variables, so it is reloaded from its file
        instead (outside the strategy, as a resumed run would)."""
        if self.strategy is None or self.strategy.num_replicas_in_sync == 1:
            self._saved[rel] = model

    def save_model(self, name: str, model: keras.Model) -> str:
        """Writes `models/<name>.keras` atomically and keeps the model in memory; returns its relative path."""
        rel = self.folder.save_model(f"models/{name}.keras", model)
        self.keep(rel, model)
        return rel
