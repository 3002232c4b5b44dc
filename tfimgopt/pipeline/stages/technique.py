"""One stage per registered compression technique: start from the run's latest model,
apply the technique, then save the result (later stages start from it) or export it."""

from __future__ import annotations

from typing import Any

from tfimgopt.compat import keras
from tfimgopt.compress import Technique
from tfimgopt.compress.techniques import EXPORT_MODEL, KEEP_MODEL
from tfimgopt.pipeline.context import RunContext, test_accuracy
from tfimgopt.pipeline.stages.base import Stage
from tfimgopt.pipeline.stages.export import export_variant, publish_entries, split_entries
from tfimgopt.pipeline.variants import Variant


class TechniqueStage(Stage):
    """The stage of a `tfimgopt.compress.Technique` (name, order and settings are its own)."""

    def __init__(self, technique: Technique):
        self.technique = technique
        self.name = technique.name
        self.order = technique.order
        self.settings = technique.settings + (("export.modes", "export.num_calibration")
                                              if technique.result == EXPORT_MODEL else ())
        self.report_key = technique.report_key

    def enabled(self, config) -> bool:
        return bool(self.technique.enabled(config))

    @property
    def model_name(self) -> str:
        return self.report_key or self.name

    def run(self, ctx: RunContext) -> dict[str, Any]:
        t = self.technique
        source = ctx.latest
        original = ctx.model(source)
        model = keras.models.clone_model(original)  # the loaded source stays as it is
        model.set_weights(original.get_weights())
        work = ctx.work_dir(self.model_name)
        result = t.apply(model, ctx.data.train, ctx.data.val, t.settings_from(ctx.config), work_dir=work,
                         strategy=ctx.strategy)
        record: dict[str, Any] = {"from": source, **result.report, "history": ctx.rel(f"{work}/history.csv")}
        if "target_sparsity" in t.settings_from(ctx.config):
            record["target_sparsity"] = t.settings_from(ctx.config)["target_sparsity"]
        if t.result == KEEP_MODEL:
            record["test_accuracy"] = test_accuracy(result.model, ctx.data.test)
            record["path"] = ctx.save_model(self.model_name, result.model)
            return record
        sparsity = result.report.get("sparsity", ctx.sparsity.get(source))
        entries = {}
        for mode in (m for m in t.export_modes if m in ctx.config.export.modes):
            from tfimgopt.export import get_exporter

            name = f"{source}_{t.variant_tag or t.name}"
            file = f"{name}_{mode}"
            variant = Variant(file, self.name, name, mode, get_exporter(mode).artifact_path(file), sparsity)
            entries[variant.name] = export_variant(ctx, result.model, variant)
        return {**record, **split_entries(entries)}

    def report_row(self, record: dict[str, Any]) -> dict[str, Any]:
        return {"stage": self.name, "model": f"{self.model_name} (from {record['from']})",
                "test_accuracy": record.get("test_accuracy"), "notes": self.technique.describe(record)}

    def publish(self, ctx: RunContext, record: dict[str, Any]) -> None:
        if self.technique.result == KEEP_MODEL:
            ctx.add_model(self.model_name, record["path"], record.get("sparsity"))
        else:
            publish_entries(ctx, record)
        row = self.report_row(record)
        accuracy = "" if row["test_accuracy"] is None else f", test accuracy {row['test_accuracy']:.4f}"
        ctx.log(f"{self.model_name} {record['from']}: {row['notes'] or self.technique.summary}{accuracy}")
