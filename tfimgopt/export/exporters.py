"""Exporters by name: the formats and modes a model ships in (`export.modes` in a config).

An `Exporter` writes a model as an `Artifact` (a file or a folder) that runs, verifies,
measures and hashes itself. The TFLite modes (`tflite.py`), SavedModel (`savedmodel.py`)
and the Keras file (`keras_file.py`) are the built-in ones; each is one file with one
`register_exporter` call. A new format is the same, in the package or in your own file
loaded with `tfimgopt run --plugin FILE.py`: the run, the config validation, `tfimgopt
export --mode`, `tfimgopt verify` and `tfimgopt evaluate` then pick it up.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from typing import Any

from tfimgopt._registry import Registry
from tfimgopt.errors import ConfigError, received
from tfimgopt.export.artifact import Artifact


class Exporter(abc.ABC):
    """What the run needs of an export format: write an artifact, open one again.

    Attributes:
        name: The registry name (what `export.modes` lists).
        summary: One line for `list_exporters` and the docs.
        suffix: Ending of the artifact's name (`.tflite`; `""` for a folder).
        folder: Run-folder subfolder its artifacts go to.
        needs_calibration: True when `export` wants representative images (`calibration=`).
        every_model: Exported for every model of a run (student, pruned...), not only the
            first one (the baseline).
        backend: The quantization backend it belongs to (`export.backend`), if any.
        replaces: The mode of another backend this one makes instead (`litert_int8`
            replaces `int8` when `export.backend` is `litert`).
        keeps_float_layers: Whether its files can keep chosen layers in float
            (`export.float_layers`); a format that quantizes nothing does trivially.
        reads: Config keys beyond the export section's own that its output depends on (a
            change redoes the export stage when a run lists it).
    """

    name: str
    summary: str = ""
    suffix: str = ""
    folder: str = "exports"
    needs_calibration: bool = False
    every_model: bool = False
    backend: str = ""
    replaces: str | None = None
    keeps_float_layers: bool = True
    reads: tuple[str, ...] = ()

    def check(self) -> None:
        """Raises `ConfigError` when this exporter cannot run here (e.g. a missing package);
        the run calls it before any training."""
        return None

    @abc.abstractmethod
    def export(self, model: Any, path: str, **options: Any) -> Artifact:
        """Writes `model` to `path` atomically and returns the artifact.

        `options` the run passes (use those you need, ignore the rest): `calibration`
        (representative images, when `needs_calibration`), `num_calibration`, `metadata`
        (a `ModelMetadata`: label names and input normalization, or None).
        """

    @abc.abstractmethod
    def open(self, path: str) -> Artifact:
        """The artifact written at `path` earlier (by this exporter)."""

    def artifact_path(self, name: str) -> str:
        """Run-folder-relative path of the artifact of the variant called `name`."""
        return f"{self.folder}/{name}{self.suffix}"

    def recognizes(self, path: str) -> bool:
        """Whether `path` looks like one of this exporter's artifacts (for `tfimgopt evaluate FILE`)."""
        return bool(self.suffix) and os.path.isfile(path) and path.endswith(self.suffix)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


_EXPORTERS: Registry[Exporter] = Registry("exporter")


def register_exporter(exporter: Exporter) -> Exporter:
    """Adds an exporter under `exporter.name`.

    Raises:
        ConfigError: if the name is registered already, or `exporter` is not an `Exporter`.

    Example:
        >>> from tfimgopt.export import TFLiteExporter, get_exporter, register_exporter
        >>> _ = register_exporter(TFLiteExporter("float32_copy", "float32", "the float32 mode again"))
        >>> get_exporter("float32_copy").suffix
        '.tflite'
    """
    if not isinstance(exporter, Exporter):
        raise ConfigError(f"register_exporter takes an Exporter instance (a subclass of "
                          f"tfimgopt.export.Exporter). {received('exporter', exporter)}")
    return _EXPORTERS.register(exporter.name, exporter)


def get_exporter(name: str) -> Exporter:
    """The exporter registered as `name`; an unknown name raises `ConfigError` with close names."""
    return _EXPORTERS.get(name)


def list_exporters(filter: str | None = None, exclude: Sequence[str] = ()) -> list[str]:  # noqa: A002
    """Names of the registered exporters (shell-pattern `filter`, `exclude` patterns)."""
    return _EXPORTERS.names(filter, exclude)


def exporter_for_mode(mode: str, backend: str) -> Exporter:
    """The exporter that makes `mode` with `backend`: the one registered as `mode`, or the
    one that replaces it in that backend (`int8` with `litert` -> `litert_int8`)."""
    exporter = get_exporter(mode)
    if not backend or exporter.backend in ("", backend):
        return exporter
    return next((e for e in _EXPORTERS.entries() if e.replaces == mode and e.backend == backend), exporter)


def exporter_for(path: str) -> Exporter | None:
    """The first registered exporter that recognizes `path` as its artifact, or None."""
    if not isinstance(path, str | os.PathLike) or not os.path.exists(path):
        return None
    return next((e for e in _EXPORTERS.entries() if e.recognizes(os.fspath(path))), None)


def open_artifact(path: str, mode: str | None = None) -> Artifact:
    """The artifact at `path`: opened by the exporter `mode`, or by the first registered
    exporter that recognizes it.

    Raises:
        ConfigError: when `path` does not exist or no exporter recognizes it.
    """
    if not isinstance(path, str | os.PathLike) or not os.path.exists(path):
        raise ConfigError(f"Model file or folder not found. {received('model', path)}")
    path = os.fspath(path)
    if mode is not None:
        return get_exporter(mode).open(path)
    exporter = exporter_for(path)
    if exporter is not None:
        return exporter.open(path)
    raise ConfigError(f"No registered exporter recognizes {path} (exporters: {list_exporters()}). "
                      f"{received('model', path)}")
