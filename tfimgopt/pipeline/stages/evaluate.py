"""The evaluate stage: every verified variant measured (TFLite files in LiteRT) on the test split."""

from __future__ import annotations

import time
from typing import Any

from tfimgopt.errors import VerificationError
from tfimgopt.pipeline.context import RunContext
from tfimgopt.pipeline.stages.base import MEASURES, Stage, register_stage
from tfimgopt.pipeline.stages.export import ExportStage


class EvaluateStage(Stage):
    """Accuracy, size and latency of each variant, in one table against the reference."""

    name = "evaluate"
    role = MEASURES
    order = 90
    settings = ("export.num_threads", "export.latency_runs")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        from tfimgopt.export import compare, open_artifact

        e = ctx.config.export
        results = {}
        # The export stage's table first (baseline, student, pruned...), then what techniques exported.
        variants = sorted(ctx.variants, key=lambda v: v.stage != ExportStage.name)
        for variant in variants:
            began = time.monotonic()
            artifact = open_artifact(ctx.path(variant.path), variant.mode)
            result = artifact.measure(ctx.data.test, num_threads=e.num_threads, latency_runs=e.latency_runs)
            results[variant.name] = {**result, "sparsity": variant.sparsity,
                                     "evaluate_s": round(time.monotonic() - began, 2)}
        reference = next((v.name for v in ctx.variants if v.reference), None)
        if reference is None:
            reason = next((e["reason"] for e in ctx.failed.values() if e.get("reference")), "it was not exported")
            raise VerificationError(f"The reference variant (the float32 baseline) is missing: {reason}. Every "
                                    "other variant is measured against it; rerun to retry the export.")
        table = compare(results, reference)
        by_name = {v.name: v for v in ctx.variants}
        for row in table["rows"]:
            v = by_name[row["variant"]]
            row.update(path=v.path, stage=v.stage, model=v.model, mode=v.mode, reference=v.reference)
        return table


register_stage(EvaluateStage())
