"""The export stage: every model of the run through every configured exporter, each file
verified against its Keras model; a file that fails verification is recorded, not fatal."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from tfimgopt.compat import keras
from tfimgopt.errors import ConfigError, DataError
from tfimgopt.pipeline.config import REFERENCE_MODE, RunConfig
from tfimgopt.pipeline.context import RunContext
from tfimgopt.pipeline.data import PreparedData, calibration_images
from tfimgopt.pipeline.stages.base import EXPORTS, Stage, register_stage
from tfimgopt.pipeline.variants import Variant


def failure_reason(check: dict[str, Any]) -> str:
    """Why a verification failed, with its numbers."""
    if "error" in check:
        return f"it does not run: {check['error']}"
    if "relative_diff" not in check:
        return f"verification failed: needed {check.get('criterion')}"
    ties = check.get("near_ties", 0)
    left_out = f" ({ties} near-ties left out)" if ties else ""
    return (f"verification failed: relative logit diff {check['relative_diff']:.2g}, top-1 agreement "
            f"{check['top1_agreement']:.3f} on {check['num_samples']} test images{left_out}; "
            f"needed {check['criterion']}")


def writes_metadata(config: RunConfig) -> bool:
    """Whether exports carry TFLite metadata: `export.metadata` on or auto (the writer needs
    nothing beyond TensorFlow's own dependencies), not off."""
    return config.export.metadata != "off"


def model_metadata(config: RunConfig, data: PreparedData, name: str) -> Any:
    """The `ModelMetadata` an export of the model called `name` carries (None when off)."""
    if not writes_metadata(config):
        return None
    from tfimgopt import __version__
    from tfimgopt.export.metadata import ModelMetadata

    info, e = data.splits.info, config.export
    return ModelMetadata(
        labels=info.class_names, name=e.model_name or f"{name} ({info.name})",
        version=e.model_version, author=e.author, license=e.license, grayscale=info.image_shape[-1] == 1,
        description=f"{info.num_classes}-class image classifier ({name}) trained on {info.name} by tfimgopt "
                    f"{__version__}. Input: {info.image_shape[0]}x{info.image_shape[1]} images, pixels 0..255.")


def export_variant(ctx: RunContext, model: keras.Model, variant: Variant, float_layers: Sequence[str] = ()
                   ) -> dict[str, Any]:
    """Writes one variant, verifies it against `model` on test images, and returns its entry
    (`verify`, timings, `metadata`, and `reason` when it failed)."""
    from tfimgopt.export import get_exporter

    exporter = get_exporter(variant.mode)
    metadata = model_metadata(ctx.config, ctx.data, variant.name)
    began = time.monotonic()
    artifact = exporter.export(model, ctx.path(variant.path),
                               calibration=calibration_images(ctx.data) if exporter.needs_calibration else None,
                               num_calibration=ctx.config.export.num_calibration, metadata=metadata,
                               float_layers=float_layers, validation=ctx.data.val,
                               max_accuracy_drop=ctx.config.export.max_accuracy_drop,
                               objective=ctx.config.export.optimize_for, candidates=ctx.config.export.mixed_candidates,
                               log=ctx.log)
    converted = time.monotonic()
    try:
        check = artifact.verify(model, ctx.data.test, num_samples=64)
    except (RuntimeError, DataError) as err:  # the runtime cannot prepare or run the file: a failed variant
        check = {"passed": False, "error": " ".join(str(err).split())[:300]}
    entry = {**variant.to_dict(), "verify": check, "convert_s": round(converted - began, 2),
             "verify_s": round(time.monotonic() - converted, 2), "metadata": metadata is not None}
    if "error" not in check:  # the quantization debugger: which layers lose most, against the float model
        float_file = ctx.path(exporter.artifact_path(f"{variant.model}_{REFERENCE_MODE}"))
        reference = None
        if os.path.isfile(float_file) and float_file != ctx.path(variant.path):
            with open(float_file, "rb") as f:
                reference = f.read()
        try:
            errors = artifact.layer_errors(model, debug_images(ctx.data), reference)
        except (RuntimeError, ValueError, DataError) as err:
            ctx.log(f"   note: no per-layer errors for {variant.name}: {' '.join(str(err).split())[:200]}")
            errors = None
        if errors is not None:
            entry["layer_errors"] = errors
    if not check["passed"]:
        entry["reason"] = failure_reason(check)
        ctx.log(f"   warning: {variant.name} {entry['reason']}; it is left out of the selection")
    return entry


def debug_images(data: PreparedData, count: int = 32):
    """A few validation images (test images when there is no validation split) for the debugger."""
    import numpy as np

    for split in (data.val, data.test):
        if split is None:
            continue
        batches = [np.asarray(x) for x, _ in split.take(max(1, count))]
        if batches:
            return np.concatenate(batches)[:count].astype(np.float32)
    raise DataError("No validation or test images for the quantization debugger.")


def split_entries(entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`{"files": passed entries, "failed": failed entries}`."""
    return {"files": {n: e for n, e in entries.items() if "reason" not in e},
            "failed": {n: e for n, e in entries.items() if "reason" in e}}


def publish_entries(ctx: RunContext, record: dict[str, Any]) -> None:
    ctx.variants += [Variant.from_dict(e) for e in record["files"].values()]
    ctx.failed.update(record["failed"])


class ExportStage(Stage):
    """Exports every model of the run: the first (the baseline) in every mode of
    `export.modes`, later models in the modes whose exporter has `every_model` (float32 and int8)."""

    name = "export"
    role = EXPORTS
    order = 80
    settings = ("export.modes", "export.backend", "export.float_layers", "export.mixed_candidates",
                "export.num_calibration",
                "export.metadata", "export.model_name", "export.model_version", "export.author", "export.license")

    def inputs(self, config: RunConfig) -> dict[str, Any]:
        """Its settings, and those an exporter it runs also reads (the search's budget)."""
        from tfimgopt.export import exporter_for_mode

        values = super().inputs(config)
        extra = {key for mode in config.export.modes for key in exporter_for_mode(mode, config.export.backend).reads}
        flat = config.to_dict()
        for key in sorted(extra):
            section, _, leaf = key.partition(".")
            values[key] = flat[section][leaf]
        return values

    def preflight(self, ctx: RunContext) -> None:
        from tfimgopt.export import exporter_for_mode

        model_metadata(ctx.config, ctx.data, "check")  # bad label names fail before any training
        e = ctx.config.export
        for mode in e.modes:  # a missing backend package, or float layers a mode cannot keep, fail now
            exporter = exporter_for_mode(mode, e.backend)
            exporter.check()
            if e.float_layers and not exporter.keeps_float_layers:
                fix = (f"drop {mode!r} from export.modes (LiteRT Quantizer has no {mode} recipe here)"
                       if e.backend == "litert" else
                       f"set export.backend: litert (LiteRT Quantizer keeps them float), or drop {mode!r}")
                raise ConfigError(f"export.float_layers {e.float_layers} cannot be kept in float by the converter's "
                                  f"{mode!r} mode (its int8 mode can): {fix}. Received: export.modes={e.modes!r}")

    def planned(self, ctx: RunContext) -> list[Variant]:
        from tfimgopt.export import exporter_for_mode
        from tfimgopt.pipeline.variants import is_reference

        plan = []
        for i, model in enumerate(ctx.models):
            for mode in ctx.config.export.modes:
                exporter = exporter_for_mode(mode, ctx.config.export.backend)
                if i == 0 or exporter.every_model:  # the first model (the reference) in every mode
                    name = f"{model}_{mode}"
                    plan.append(Variant(name, self.name, model, exporter.name, exporter.artifact_path(name),
                                        ctx.sparsity.get(model), is_reference(i == 0, mode)))
        return plan

    def run(self, ctx: RunContext, only: set[str] | None = None) -> dict[str, Any]:
        entries = {v.name: export_variant(ctx, ctx.model(v.model), v, ctx.config.export.float_layers)
                   for v in self.planned(ctx) if only is None or v.name in only}
        return split_entries(entries)

    def resume(self, ctx: RunContext, record: dict[str, Any]) -> dict[str, Any] | None:
        if not record.get("failed"):
            return None
        ctx.log(f"== retrying the export(s) that failed verification last time: {', '.join(record['failed'])}")
        again = self.run(ctx, only=set(record["failed"]))
        return {**record, "files": {**record["files"], **again["files"]}, "failed": again["failed"]}

    def publish(self, ctx: RunContext, record: dict[str, Any]) -> None:
        publish_entries(ctx, record)


register_stage(ExportStage())
