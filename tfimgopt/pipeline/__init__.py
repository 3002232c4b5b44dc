"""The end-to-end job: configuration, stages, report."""

from tfimgopt.pipeline.config import (
    CompressConfig,
    DataConfig,
    DistillConfig,
    ExportConfig,
    RunConfig,
    TrainConfig,
    load_config,
)
from tfimgopt.pipeline.run import (
    PreparedData,
    artifact_hashes,
    load_model,
    prepare_data,
    run,
    select_variant,
    train_classifier,
)

__all__ = [
    "CompressConfig",
    "DataConfig",
    "DistillConfig",
    "ExportConfig",
    "artifact_hashes",
    "select_variant",
    "PreparedData",
    "RunConfig",
    "TrainConfig",
    "load_config",
    "load_model",
    "prepare_data",
    "run",
    "train_classifier",
]
