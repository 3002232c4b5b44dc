"""The evaluate stage: every verified variant measured in LiteRT on the test split."""

from __future__ import annotations

import time
from typing import Any

from tfimgopt.errors import VerificationError
from tfimgopt.pipeline.context import RunContext
from tfimgopt.pipeline.stages.base import Stage, register_stage


class EvaluateStage(Stage):
    """Accuracy, size and latency of each variant, in one table against the reference."""

    name = "evaluate"
    order = 90
    settings = ("export.num_threads", "export.latency_runs")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        from tfimgopt.export import compare, get_exporter

        e = ctx.config.export
        results = {}
        # The export stage's table first (baseline, student, pruned...), then what techniques exported.
        variants = sorted(ctx.variants, key=lambda v: v.stage != "export")
        for variant in variants:
            began = time.monotonic()
            result = get_exporter(variant.mode).evaluate(ctx.path(variant.path), ctx.data.test,
                                                         num_threads=e.num_threads, latency_runs=e.latency_runs)
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
