"""The end-to-end job: configuration, stages, variants, report.

The config classes load without TensorFlow (the CLI builds its flags from them before any
command runs); the other names load their modules on first use (PEP 562).
"""

from __future__ import annotations

from tfimgopt._lazy import lazy_attributes
from tfimgopt.pipeline.config import (
    CompressConfig,
    DataConfig,
    DistillConfig,
    ExportConfig,
    RunConfig,
    TrainConfig,
    load_config,
)

_LAZY = {
    "RunContext": "tfimgopt.pipeline.context",
    "load_model": "tfimgopt.models.files",
    "PreparedData": "tfimgopt.pipeline.data",
    "prepare_data": "tfimgopt.pipeline.data",
    "artifact_hashes": "tfimgopt.pipeline.report",
    "run": "tfimgopt.pipeline.run",
    "optimize": "tfimgopt.pipeline.optimize",
    "RunReport": "tfimgopt.pipeline.optimize",
    "VariantResult": "tfimgopt.pipeline.optimize",
    "Stage": "tfimgopt.pipeline.stages",
    "get_stage": "tfimgopt.pipeline.stages",
    "list_stages": "tfimgopt.pipeline.stages",
    "register_stage": "tfimgopt.pipeline.stages",
    "train_classifier": "tfimgopt.pipeline.stages.baseline",
    "Variant": "tfimgopt.pipeline.variants",
    "at_chance": "tfimgopt.pipeline.variants",
    "chance_level": "tfimgopt.pipeline.variants",
    "select_variant": "tfimgopt.pipeline.variants",
    "verify_run": "tfimgopt.pipeline.verify",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())


__all__ = [
    "CompressConfig",
    "DataConfig",
    "DistillConfig",
    "ExportConfig",
    "PreparedData",
    "RunConfig",
    "RunContext",
    "RunReport",
    "Stage",
    "TrainConfig",
    "Variant",
    "VariantResult",
    "artifact_hashes",
    "at_chance",
    "chance_level",
    "get_stage",
    "list_stages",
    "load_config",
    "load_model",
    "optimize",
    "prepare_data",
    "register_stage",
    "run",
    "select_variant",
    "train_classifier",
    "verify_run",
]
