"""Exporters by name: the formats and modes a model ships in (`export.modes` in a config).

TFLite's four conversion modes are the entries today. A new format or mode (ONNX, TF.js,
TFLite int16x8) is one file with an `Exporter` subclass and one `register_exporter` call;
the run, the config validation, the CLI's `--mode` choices and the registry tests then
pick it up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from tfimgopt._registry import Registry
from tfimgopt.compat import keras
from tfimgopt.export import tflite


class Exporter:
    """What the run needs of an export format: write, verify against Keras, measure.

    Attributes:
        name: The registry name (what `export.modes` lists).
        suffix: File extension of the artifact.
        needs_calibration: True when `export` wants representative images.
        every_model: Exported for every model of a run (student, pruned...), not only
            the baseline.
    """

    name: str
    suffix: str = ".tflite"
    needs_calibration: bool = False
    every_model: bool = False

    def export(self, model: keras.Model, path: str | None, calibration: Any = None, *,
               num_calibration: int = 200, metadata: Any = None) -> bytes:
        """Converts `model`, writes it atomically to `path` (if given), returns the bytes.
        `metadata` (a `ModelMetadata`, or None) is what the file tells the app loading it."""
        raise NotImplementedError

    def verify(self, blob: bytes, model: keras.Model, images: Any, *, num_samples: int = 64) -> dict[str, Any]:
        """Compares the artifact with `model` on `images`: a dict with at least `passed` and `criterion`."""
        raise NotImplementedError

    def evaluate(self, path: str, dataset: Any, *, num_threads: int = 1, latency_runs: int = 50) -> dict[str, Any]:
        """Accuracy, `size_bytes`, `gzip_bytes` and `latency_ms_median` of the artifact on `dataset`."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class TFLiteExporter(Exporter):
    """One TFLite conversion mode (see `tfimgopt.export.export_tflite`), checked in LiteRT."""

    name: str
    mode: str
    summary: str
    needs_calibration: bool = False
    every_model: bool = False
    suffix: str = ".tflite"

    def export(self, model, path, calibration=None, *, num_calibration=200, metadata=None):
        return tflite.export_tflite(model, self.mode, calibration if self.needs_calibration else None, path,
                                    num_calibration=num_calibration, metadata=metadata)

    def verify(self, blob, model, images, *, num_samples=64):
        return tflite.verify_tflite(blob, model, images, num_samples=num_samples)

    def evaluate(self, path, dataset, *, num_threads=1, latency_runs=50):
        return tflite.evaluate_tflite(path, dataset, num_threads=num_threads, latency_runs=latency_runs)


_EXPORTERS: Registry[Exporter] = Registry("exporter")


def register_exporter(exporter: Exporter) -> Exporter:
    """Adds an exporter under `exporter.name`.

    Raises:
        ConfigError: if the name is registered already.

    Example:
        >>> from tfimgopt.export import TFLiteExporter, get_exporter, register_exporter
        >>> _ = register_exporter(TFLiteExporter("float32_copy", "float32", "the float32 mode again"))
        >>> get_exporter("float32_copy").suffix
        '.tflite'
    """
    return _EXPORTERS.register(exporter.name, exporter)


def get_exporter(name: str) -> Exporter:
    """The exporter registered as `name`; an unknown name raises `ConfigError` with close names."""
    return _EXPORTERS.get(name)


def list_exporters(filter: str | None = None, exclude: Sequence[str] = ()) -> list[str]:  # noqa: A002
    """Names of the registered exporters (shell-pattern `filter`, `exclude` patterns)."""
    return _EXPORTERS.names(filter, exclude)


for _exporter in (
    TFLiteExporter("float32", "float32", "float weights and activations: the reference", every_model=True),
    TFLiteExporter("dynamic", "dynamic", "int8 weights, float activations (dynamic range)"),
    TFLiteExporter("float16", "float16", "float16 weights (GPU delegates)"),
    TFLiteExporter("int8", "int8", "full integer, calibrated on training images", needs_calibration=True,
                   every_model=True),
    TFLiteExporter("int16x8", "int16x8", "int16 activations, int8 weights: the accuracy-safe integer mode",
                   needs_calibration=True),
):
    register_exporter(_exporter)
