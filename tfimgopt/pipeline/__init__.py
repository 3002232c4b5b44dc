"""The end-to-end job: configuration, stages, report."""

from tfimgopt.pipeline.config import DataConfig, RunConfig, TrainConfig, load_config
from tfimgopt.pipeline.run import load_model, run

__all__ = ["DataConfig", "RunConfig", "TrainConfig", "load_config", "load_model", "run"]
