"""A per-layer precision search: each weighted layer's weights in float32, float16, int8 or
int4 (LiteRT Quantizer, float activations), chosen by measurement under an accuracy budget.

int16x8 and full-int8 activations are not candidates: their activations are quantized
statically, and a file that mixes them with float layers pays a quantize/dequantize pair at
every boundary; the uniform `int8` and `int16x8` files are measured beside the search instead.

1. Sensitivity: for every layer and every candidate precision, a file with only that layer
   quantized is measured on labelled validation images: accuracy drop against the float32
   file, relative logit error, size, and single-image latency in LiteRT (1 thread).
2. Choice, greedy with backtracking: layers are visited from the least to the most
   sensitive; each takes its best candidate for the objective (size: the fewest bytes;
   latency: the fastest measured, and only candidates faster than float) if the whole file
   with that layer added still holds the budget, measured, else its next candidate, else
   it stays float. A knapsack over the per-layer numbers would assume that the layers'
   errors add up, which they do not (errors compound through the network); each greedy
   step measures the real combined file instead, at most two measurements per layer.

The plan (`{layer: precision}`) and the per-layer table go into the verification record,
so the run's report.json carries them.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from tfimgopt import _io
from tfimgopt.errors import ConfigError
from tfimgopt.export.artifact import check_outputs
from tfimgopt.export.exporters import Exporter, register_exporter
from tfimgopt.export.layers import float_layer_tensors, layer_precisions, layer_tensors, weighted_layers
from tfimgopt.export.litert_recipes import LiteRTArtifact, quantize_plan, require
from tfimgopt.export.tflite import _representative, to_tflite_bytes

#: Weight precisions the search can choose (float32 is "leave it"), and their recipes.
CANDIDATES = {"int4": "dynamic_wi4_afp32", "int8": "dynamic_wi8_afp32", "float16": "float16_weights"}
DEFAULT_CANDIDATES = ("int8", "int4")
BITS = {"int4": 4, "int8": 8, "float16": 16, "float32": 32}
OBJECTIVES = ("size", "latency")
#: A layer counts as faster in a precision when it saves more than this share of the float
#: file's median latency (the spread of a 30-invoke median on 2 cores is about 1%).
LATENCY_NOISE = 0.02


def _labelled(validation: Any, limit: int) -> tuple[np.ndarray, np.ndarray]:
    from tfimgopt._arrays import images_labels

    images, labels = images_labels(validation, limit)
    if labels is None or len(images) == 0:
        raise ConfigError("The precision search measures accuracy: it needs labelled validation images "
                          "(validation=(images, labels) batches). Received: validation without labels")
    return images.astype(np.float32), labels


class _Bench:
    """Accuracy, logit error and latency of candidate files against the float32 file."""

    def __init__(self, float_blob: bytes, images: np.ndarray, labels: np.ndarray, latency_runs: int):
        from tfimgopt._litert import TFLiteRunner

        self.images, self.labels, self.runs = images, labels, latency_runs
        self.runner = TFLiteRunner
        self.reference = self.runner(float_blob).predict(images)
        self.accuracy = float((self.reference.argmax(1) == labels).mean())
        self.latency = self.time(float_blob)

    def time(self, blob: bytes) -> float:
        runner = self.runner(blob)
        image = self.images[0]
        for _ in range(3):
            runner.invoke(image)
        times = []
        for _ in range(self.runs):
            start = time.perf_counter()
            runner.invoke(image)
            times.append((time.perf_counter() - start) * 1000.0)
        return statistics.median(times)

    def measure(self, blob: bytes, with_latency: bool = False) -> dict[str, float]:
        got = self.runner(blob).predict(self.images)
        check = check_outputs(got, self.reference, tolerance=None, min_agreement=0.0, mode="mixed")
        result = {"drop_points": 100.0 * (self.accuracy - float((got.argmax(1) == self.labels).mean())),
                  "relative_error": check["relative_diff"]}
        if with_latency:
            result["latency_delta_ms"] = self.time(blob) - self.latency
        return result


def search(model: Any, validation: Any, *, max_accuracy_drop: float = 1.0, objective: str = "size",
           float_layers: Sequence[str] = (), candidates: Sequence[str] = DEFAULT_CANDIDATES, num_images: int = 256,
           latency_runs: int = 30, log=None) -> dict[str, Any]:
    """Chooses each weighted layer's weight precision (see the module docstring).

    Args:
        model: A tf_keras model.
        validation: Labelled validation images (array pairs or `(images, labels)` batches).
        max_accuracy_drop: The budget, in accuracy points against the float32 file.
        objective: `"size"` or `"latency"`.
        float_layers: Layer names or shell patterns that stay float32 whatever they cost.
        candidates: Precisions besides float32, any of `CANDIDATES`.
        num_images: Validation images used.
        latency_runs: Timed invokes per latency measurement.

    Returns:
        `{"plan": {layer: precision}, "layers": [per-layer rows], "accuracy_drop_points",
        "relative_error", "objective", "budget_points", "measurements", "float_accuracy",
        "blob"}` (`blob`: the chosen file's bytes).
    """
    require()
    unknown = [c for c in candidates if c not in CANDIDATES]
    if unknown or not candidates:
        raise ConfigError(f"candidates must be a non-empty list of {sorted(CANDIDATES)}. "
                          f"Received: candidates={list(candidates)!r}")
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective must be one of {OBJECTIVES}. Received: objective={objective!r}")
    images, labels = _labelled(validation, num_images)
    float_blob = to_tflite_bytes(model, "float32", sparse=False)
    layers = weighted_layers(model)
    tensor_of = layer_tensors(float_blob, layers)
    kept = set()
    if float_layers:
        tensors = set(float_layer_tensors(float_blob, layers, float_layers))
        kept = {layer for layer, tensor in tensor_of.items() if tensor in tensors}
    weights = {layer.name: sum(int(np.prod(w.shape)) for w in layer.weights if w.shape.rank >= 2)
               for layer in model.layers if layer.name in tensor_of}
    bench = _Bench(float_blob, images, labels, latency_runs)
    rows, measured = [], 0
    for layer in layers:
        if layer not in tensor_of or layer in kept:
            continue
        row = {"layer": layer, "weights": weights.get(layer, 0), "candidates": {}}
        for precision, recipe_name in ((p, CANDIDATES[p]) for p in candidates):
            blob = quantize_plan(float_blob, {tensor_of[layer]: recipe_name})
            stored = layer_precisions(blob, layers).get(layer)
            if stored != precision.upper():  # e.g. no int4 depthwise kernel: the layer stayed float
                row.setdefault("unsupported", []).append(precision)
                continue
            result = bench.measure(blob, with_latency=objective == "latency")
            result["weight_bytes"] = weights.get(layer, 0) * BITS[precision] // 8
            row["candidates"][precision] = result
            measured += 1
        if not row["candidates"]:
            continue
        row["sensitivity"] = max(c["drop_points"] + 10 * c["relative_error"] for c in row["candidates"].values())
        rows.append(row)

    def order(row):
        cands = row["candidates"]
        if objective == "size":
            return sorted(cands, key=lambda p: BITS[p])
        # Faster by more than the timing noise: 2% of the float file's latency.
        faster = [p for p in cands if cands[p]["latency_delta_ms"] < -LATENCY_NOISE * bench.latency]
        return sorted(faster, key=lambda p: cands[p]["latency_delta_ms"])

    plan: dict[str, str] = {}
    current = {"drop_points": 0.0, "relative_error": 0.0}
    for row in sorted(rows, key=lambda r: r["sensitivity"]):
        row["chosen"] = "float32"
        for precision in order(row):
            trial = {**plan, row["layer"]: precision}
            result = bench.measure(quantize_plan(float_blob, {tensor_of[k]: CANDIDATES[v] for k, v in trial.items()}))
            measured += 1
            if result["drop_points"] <= max_accuracy_drop + 1e-9:
                plan, current, row["chosen"] = trial, result, precision
                break
            row.setdefault("refused", []).append(precision)  # backtrack: this layer tries its next candidate
        if log is not None:
            log(f"   mixed precision: {row['layer']} -> {row['chosen']}")
    blob = quantize_plan(float_blob, {tensor_of[k]: CANDIDATES[v] for k, v in plan.items()})
    for layer in layers:
        plan.setdefault(layer, "float32")
    return {"plan": plan, "layers": rows, "accuracy_drop_points": current["drop_points"],
            "relative_error": current["relative_error"], "objective": objective, "budget_points": max_accuracy_drop,
            "measurements": measured, "float_accuracy": bench.accuracy, "validation_images": int(len(images)),
            "blob": blob}


class MixedArtifact(LiteRTArtifact):
    """The searched file; verified like an int4 file (its loosest layers are int4)."""

    def __init__(self, path: str, mode: str = "mixed"):
        super().__init__(path, mode, "int4")
        self.search: dict[str, Any] | None = None

    def verify(self, model: Any, images: Any, *, num_samples: int = 64) -> dict[str, Any]:
        check = super().verify(model, images, num_samples=num_samples)
        if self.search is not None:
            check["search"] = {k: v for k, v in self.search.items() if k != "blob"}
        return check


class MixedPrecisionExporter(Exporter):
    """Per-layer weight precision (float32 / int8 / int4) under the run's accuracy budget."""

    name = "mixed"
    summary = ("per-layer weight precision (float32 and export.mixed_candidates: float16, int8, int4) searched "
               "under export.max_accuracy_drop for export.optimize_for (size or latency): LiteRT Quantizer")
    suffix = ".tflite"
    folder = "tflite"
    backend = "litert"
    needs_calibration = True  # the stand-in for labels when no validation images come
    every_model = True  # listed in export.modes, it searches every model of the run (student_mixed, pruned_mixed)
    reads = ("export.max_accuracy_drop", "export.optimize_for")  # its budget and objective

    def check(self) -> None:
        require()

    def export(self, model: Any, path: str, *, validation: Any = None, max_accuracy_drop: float = 1.0,
               objective: str = "size", metadata: Any = None, float_layers: Sequence[str] = (),
               calibration: Any = None, num_calibration: int = 200, log=None,
               candidates: Sequence[str] = DEFAULT_CANDIDATES, **options: Any) -> MixedArtifact:
        if validation is None:
            if calibration is None:
                raise ConfigError("The mixed exporter searches by measured accuracy: pass validation=(images, "
                                  "labels) batches. Received: validation=None")
            # No labels: the float model's own decisions stand in for them (agreement, not accuracy).
            generate = _representative(calibration, model.input_shape, num_calibration, self.name)
            images = np.concatenate([sample[0] for sample in generate()])
            validation = (images, model.predict(images, verbose=0).argmax(1))
        if isinstance(validation, tuple) and len(validation) == 2 and not hasattr(validation[0], "element_spec"):
            from tfimgopt.compat import tf

            validation = tf.data.Dataset.from_tensor_slices(validation).batch(256)
        objective = objective if objective in OBJECTIVES else "size"  # `accuracy` selection: smallest file
        result = search(model, validation, max_accuracy_drop=max_accuracy_drop, objective=objective,
                        float_layers=float_layers, candidates=candidates or DEFAULT_CANDIDATES, log=log)
        blob = result["blob"]
        if metadata is not None:
            from tfimgopt.export.metadata import add_metadata

            blob = add_metadata(blob, metadata)
        _io.write_bytes(path, blob)
        artifact = MixedArtifact(path, self.name)
        artifact.recipe = "per-layer: " + ", ".join(f"{k} {v}" for k, v in result["plan"].items())
        artifact.search = result
        return artifact

    def open(self, path: str) -> MixedArtifact:
        return MixedArtifact(path, self.name)


register_exporter(MixedPrecisionExporter())
