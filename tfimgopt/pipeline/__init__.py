"""The end-to-end job: configuration, stages, report."""

from tfimgopt.pipeline.config import DataConfig, RunConfig, TrainConfig, load_config
from tfimgopt.pipeline.run import PreparedData, load_model, prepare_data, run, train_classifier

__all__ = [
    "DataConfig",
    "PreparedData",
    "RunConfig",
    "TrainConfig",
    "load_config",
    "load_model",
    "prepare_data",
    "run",
    "train_classifier",
]
