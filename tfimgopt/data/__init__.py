"""Data sources and input pipelines."""

from tfimgopt.data.pipeline import LABEL_MODES, build_pipeline
from tfimgopt.data.sources import DatasetInfo, Splits, list_sources, load_dataset, split_indices

__all__ = [
    "LABEL_MODES",
    "DatasetInfo",
    "Splits",
    "build_pipeline",
    "list_sources",
    "load_dataset",
    "split_indices",
]
