"""Model files: load one without running code stored in it (the untrusted-file gate).

`load_model` is what every path that reads a model file goes through: the run adopting
your model, resuming a run folder, `tfimgopt evaluate`, the Keras exporter's artifacts.
"""

from __future__ import annotations

import os
from typing import Any

from tfimgopt.compat import keras
from tfimgopt.errors import ConfigError, received

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
