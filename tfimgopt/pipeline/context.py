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

# A `.keras` archive is checked before anything is extracted: real models are weights that
# barely compress, so a member that expands enormously is a zip bomb, not a model.
MAX_MEMBER_BYTES = 8 << 30
MAX_CONFIG_BYTES = 64 << 20
MAX_EXPANSION = 50


def _check_archive(path: str) -> None:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as err:
        raise ConfigError(f"Not a readable .keras archive ({err}). Received: model={path!r}") from None
    for info in members:
        limit = MAX_CONFIG_BYTES if info.filename.endswith(".json") else MAX_MEMBER_BYTES
        big = info.file_size > 16 << 20
        expands = big and info.file_size > MAX_EXPANSION * max(info.compress_size, 1)
        if info.file_size > limit or expands:
            raise ConfigError(
                f"Refused to load {path}: its member {info.filename!r} expands to {info.file_size:,} bytes from "
                f"{info.compress_size:,} (at most {limit:,} bytes, and {MAX_EXPANSION}x expansion, are accepted). "
                f"Received: model={path!r}")


def _kind(path: str) -> str:
    import zipfile

    if os.path.isdir(path):
        return "savedmodel"
    with open(path, "rb") as f:
        head = f.read(8)
    if head == b"\x89HDF\r\n\x1a\n":
        return "hdf5"
    return "keras" if zipfile.is_zipfile(path) else "unknown"


def saved_by_keras3(path: str) -> bool:
    """Whether a `.keras` archive was written by Keras 3 (its metadata.json says so)."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive, archive.open("metadata.json") as f:
            return str(json.loads(f.read(1 << 16)).get("keras_version", "")).startswith("3.")
    except (KeyError, ValueError, OSError, zipfile.BadZipFile):
        return False


def _loaded_or_refused(load, path: str, what: str) -> Any:
    """Runs a Keras loader, turning its errors into one `ConfigError` (stored code refused, or unreadable)."""
    try:
        return load()
    except ValueError as err:
        if "safe_mode" in str(err) or "lambda" in str(err).lower():
            raise ConfigError(
                f"Refused to load {path}: it contains a Lambda layer or other stored code, which could run "
                "arbitrary Python. Load it with safe_mode=False (CLI: --unsafe) only if you trust the file. "
                f"Received: model={path!r}") from None
        raise ConfigError(f"Cannot load the {what}: {err}. Received: model={path!r}") from None
    except (OSError, KeyError, TypeError) as err:
        raise ConfigError(f"Not a readable {what} ({type(err).__name__}: {err}). Received: model={path!r}") from None


def _load_keras3(path: str, safe_mode: bool) -> keras.Model:
    """A Keras 3 `.keras` file: loaded by Keras 3 (safe mode as asked), then rebuilt in tf_keras."""
    import keras as keras3

    from tfimgopt.keras3 import as_tf_keras

    model = _loaded_or_refused(lambda: keras3.saving.load_model(path, safe_mode=bool(safe_mode), compile=False),
                               path, "Keras 3 model file")
    return as_tf_keras(model, f"loading {os.path.basename(path)}")


def load_model(path: str, *, safe_mode: bool = True, compile: bool = True) -> keras.Model:  # noqa: A002
    """Loads a model file (safe mode by default: nothing stored in the file runs).

    In safe mode only `.keras` archives are accepted, and Keras refuses Lambda layers and
    other stored code in them. A `.keras` file written by Keras 3 is loaded by Keras 3 and
    rebuilt in tf_keras (`tfimgopt.keras3.from_keras3`, outputs checked equal). HDF5 files
    (`.h5`, or HDF5 bytes under any name) and SavedModel folders go through loaders that run
    a Lambda layer's stored code while loading, so they are refused unless `safe_mode=False`.
    The archive's member sizes are checked before anything is extracted.

    Args:
        path: A `.keras` file (or, with `safe_mode=False`, an `.h5` file or SavedModel folder).
        safe_mode: Keep True for files from elsewhere; False runs code stored in the file.
        compile: Restore the training configuration (False: a model for inference only).

    Raises:
        ConfigError: for a missing or unreadable file, or one that needs unsafe loading.
    """
    if not isinstance(path, str | os.PathLike) or not os.path.exists(path):
        raise ConfigError(f"Model file not found. {received('model', path)}")
    path = os.fspath(path)
    kind = _kind(path)
    if kind == "unknown":
        raise ConfigError(f"Not a Keras model file (a .keras archive, an .h5 file or a SavedModel folder). "
                          f"Received: model={path!r}")
    if kind != "keras" and safe_mode:
        what = "an HDF5 file" if kind == "hdf5" else "a SavedModel folder"
        raise ConfigError(
            f"Refused to load {path}: it is {what}, whose loader runs code stored in the file (Lambda layers) "
            "even in safe mode. Save it as .keras (model.save('model.keras')) where it was made, or load it with "
            f"safe_mode=False (CLI: --unsafe) only if you trust the file. Received: model={path!r}")
    if kind == "keras":
        _check_archive(path)
        if saved_by_keras3(path):
            return _load_keras3(path, safe_mode)
    return _loaded_or_refused(lambda: keras.models.load_model(path, safe_mode=bool(safe_mode), compile=compile),
                              path, "Keras model file")


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
    #: The user's own model the baseline adopts (`tfimgopt.pipeline.adopt.UserModel`), or None.
    user: Any = None
    #: What the run settled for the user (input range measured, student picked...), for the report.
    notes: list[str] = dataclasses.field(default_factory=list)
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
