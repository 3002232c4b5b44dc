"""Data sources and input pipelines."""

from tfimgopt.data.pipeline import LABEL_MODES, build_pipeline
from tfimgopt.data.sources import DatasetInfo, Splits, list_sources, load_dataset, split_indices
from tfimgopt.data.unlabelled import UNLABELLED, hold_out_labels, load_unlabelled, with_unlabelled

__all__ = [
    "LABEL_MODES",
    "UNLABELLED",
    "DatasetInfo",
    "Splits",
    "build_pipeline",
    "hold_out_labels",
    "list_sources",
    "load_dataset",
    "load_unlabelled",
    "split_indices",
    "with_unlabelled",
]
