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
from tfimgopt.pipeline.config import RunConfig
from tfimgopt.pipeline.data import PreparedData
from tfimgopt.pipeline.variants import Variant


def load_model(path: str, *, safe_mode: bool = True) -> keras.Model:
    """Loads a model file (safe mode by default: Lambda layers and arbitrary code refused).

    Args:
        path: A `.keras` (or `.h5`) file.
        safe_mode: Keep True for files from elsewhere; False runs code stored in the file.

    Raises:
        ConfigError: for a missing or unreadable file, or one that needs unsafe loading.
    """
    if not isinstance(path, str | os.PathLike) or not os.path.isfile(path):
        raise ConfigError(f"Model file not found. {received('model', path)}")
    try:
        return keras.models.load_model(path, safe_mode=bool(safe_mode))
    except ValueError as err:
        if "safe_mode" in str(err) or "Lambda" in str(err):
            raise ConfigError(
                f"Refused to load {path}: it contains a Lambda layer or other stored code, which could run "
                "arbitrary Python. Load it with safe_mode=False (CLI: --unsafe) only if you trust the file. "
                f"Received: model={os.fspath(path)!r}"
            ) from None
        raise ConfigError(f"Cannot load the model file: {err}. Received: model={os.fspath(path)!r}") from None
    except (OSError, KeyError, TypeError) as err:
        raise ConfigError(f"Not a readable Keras model file ({type(err).__name__}: {err}). "
                          f"Received: model={os.fspath(path)!r}") from None


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
class RunContext:
    """The state stages read and extend, in stage order.

    Attributes:
        config: The validated run config.
        out: The run folder.
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
    out: str
    data: PreparedData
    strategy: Any = None
    log: Callable[[str], None] = print
    records: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    models: dict[str, str] = dataclasses.field(default_factory=dict)
    sparsity: dict[str, float] = dataclasses.field(default_factory=dict)
    variants: list[Variant] = dataclasses.field(default_factory=list)
    failed: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    #: Fingerprint of the stage running now (set by the run); its work folders carry it.
    fingerprint: str = ""
    _loaded: dict[str, keras.Model] = dataclasses.field(default_factory=dict, repr=False)

    def path(self, rel: str) -> str:
        """The absolute path of a run-folder-relative path (refuses one that leaves the folder)."""
        return _io.safe_join(self.out, rel)

    def rel(self, path: str) -> str:
        return os.path.relpath(path, self.out)

    def work_dir(self, name: str) -> str:
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
            if old != self.fingerprint:
                self.log(f"   removing {self.rel(path)}: its backups are from a run with other inputs")
                shutil.rmtree(path)
        _io.write_text(stamp, self.fingerprint)
        return path

    def add_model(self, name: str, rel: str, sparsity: float | None = None) -> None:
        self.models[name] = rel
        self._loaded.pop(name, None)
        if sparsity is not None:
            self.sparsity[name] = sparsity

    @property
    def latest(self) -> str:
        """The most recent model of the run: what the next technique starts from."""
        return list(self.models)[-1]

    def model(self, name: str) -> keras.Model:
        """A model of the run, loaded (in safe mode) once from its file."""
        if name not in self._loaded:
            self._loaded[name] = load_model(self.path(self.models[name]))
        return self._loaded[name]

    def save_model(self, name: str, model: keras.Model) -> str:
        """Writes `models/<name>.keras` atomically; returns its relative path."""
        path = self.path(f"models/{name}.keras")
        _io.write_with(path, model.save)
        return self.rel(path)
