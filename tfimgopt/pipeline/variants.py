"""Variants as typed records, chance level, and the measured selection of the one to ship."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from tfimgopt.compat import tf
from tfimgopt.errors import ConfigError
from tfimgopt.pipeline.config import REFERENCE_MODE


@dataclasses.dataclass(frozen=True)
class Variant:
    """One exported file of a run.

    Attributes:
        name: Unique in the run, e.g. `pruned_int8`, `pruned_qat_int8`.
        stage: The stage that wrote it (`export`, `qat`, ...).
        model: The model it was made from (`baseline`, `student`, `pruned`, `pruned_qat`).
        mode: The exporter that wrote it (`float32`, `int8`, ...).
        path: Run-folder-relative path.
        sparsity: Fraction of zero kernel weights of its model, when it was pruned.
        reference: True for the one variant accuracies are measured against: the float32
            export of the baseline, whatever the order of the modes.
    """

    name: str
    stage: str
    model: str
    mode: str
    path: str
    sparsity: float | None = None
    reference: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Variant:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in fields})


def is_reference(first_model: bool, mode: str) -> bool:
    """Whether the variant in `mode` of a model (the run's first, the baseline, or not) is the
    run's reference: the baseline's export in `REFERENCE_MODE`."""
    return first_model and mode == REFERENCE_MODE


def chance_level(test_split: tf.data.Dataset) -> dict[str, Any]:
    """Majority-class accuracy on the test split, and how far above it an accuracy must be to mean anything.

    Returns:
        `{"accuracy", "noise", "test_images", "resolution_points"}`: `noise` is two binomial
        standard deviations of an accuracy at chance on this many images (about a 95% band),
        `resolution_points` what one test image is worth, in accuracy points.
    """
    labels = np.concatenate([np.asarray(y).reshape(len(y), -1).argmax(1) if np.asarray(y).ndim > 1
                             else np.asarray(y) for _, y in test_split.batch(4096).as_numpy_iterator()])
    n = len(labels)
    chance = float(np.bincount(labels.astype(np.int64)).max() / n)
    return {"accuracy": chance, "noise": float(2 * np.sqrt(chance * (1 - chance) / n)), "test_images": n,
            "resolution_points": 100.0 / n}


def at_chance(accuracy: float, chance: dict[str, Any] | None) -> bool:
    """True when `accuracy` is within the noise of chance level."""
    return chance is not None and accuracy <= chance["accuracy"] + chance["noise"]


def _reference_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    marked = [r for r in rows if r.get("reference")]
    if len(marked) != 1:
        raise ConfigError(f"Exactly one row must be marked reference=True (the float32 baseline); "
                          f"{len(marked)} are. Received: rows={[r.get('variant') for r in rows]!r}")
    return marked[0]


def select_variant(rows: list[dict[str, Any]], optimize_for: str, max_accuracy_drop: float,
                   chance: dict[str, Any] | None = None) -> dict[str, Any]:
    """Picks the best variant by measurement among those within `max_accuracy_drop` points.

    `optimize_for`: `"size"` (smallest file), `"latency"` (fastest median) or
    `"accuracy"` (most accurate; ties go to the smaller file). The reference accuracy is
    the row marked `reference` (the float32 baseline's), whatever the order of the rows. A
    variant within the noise of `chance` (see `chance_level`) is never picked: when no
    other is left, the result says "no usable variant" and `variant` is None.

    Example:
        >>> from tfimgopt.pipeline import select_variant
        >>> rows = [{"variant": "baseline_int8", "accuracy": 0.8, "size_bytes": 300, "latency_ms_median": 1.0,
        ...          "size_ratio": 3.3, "latency_ratio": 1.0},
        ...         {"variant": "baseline_float32", "accuracy": 0.9, "size_bytes": 1000, "latency_ms_median": 1.0,
        ...          "size_ratio": 1.0, "latency_ratio": 1.0, "reference": True}]
        >>> select_variant(rows, "size", 1.0)["variant"]
        'baseline_float32'
    """
    reference_row = _reference_row(rows)
    reference = reference_row["accuracy"]
    allowed = [r for r in rows if 100 * (reference - r["accuracy"]) <= max_accuracy_drop + 1e-9]
    usable = [r for r in allowed if not at_chance(r["accuracy"], chance)]
    base = {"optimize_for": optimize_for, "max_accuracy_drop_points": max_accuracy_drop,
            "reference": reference_row["variant"]}
    if not usable:
        return {**base, "variant": None, "path": None, "accuracy": None, "candidates": 0, "reason": (
            f"no usable variant: every variant within {max_accuracy_drop:g} points of {reference_row['variant']} "
            f"({100 * reference:.2f}%) is within the noise of chance level ({100 * chance['accuracy']:.2f}% "
            f"+ {100 * chance['noise']:.2f} points on {chance['test_images']} test images). Train longer, on more "
            "data, or check the labels."
        )}
    key = {
        "size": lambda r: (r["size_bytes"], -r["accuracy"]),
        "latency": lambda r: (r["latency_ms_median"], -r["accuracy"]),
        "accuracy": lambda r: (-r["accuracy"], r["size_bytes"]),
    }[optimize_for]
    best = min(usable, key=key)
    superlative = {"size": "smallest", "latency": "fastest", "accuracy": "most accurate"}[optimize_for]
    return {
        **base, "variant": best["variant"], "path": best.get("path"), "accuracy": best["accuracy"],
        "candidates": len(usable),
        "reason": (
            f"{best['variant']} is the {superlative} of the {len(usable)} variants within "
            f"{max_accuracy_drop:g} accuracy points of {reference_row['variant']} "
            f"({100 * reference:.2f}%): accuracy {100 * best['accuracy']:.2f}%, "
            f"{best['size_bytes'] / 1024:,.1f} KiB ({best['size_ratio']:.1f}x smaller), "
            f"{best['latency_ms_median']:.3f} ms ({best['latency_ratio']:.2f}x the baseline's latency)"
        ),
    }
