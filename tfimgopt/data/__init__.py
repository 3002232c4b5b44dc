"""Data sources and input pipelines."""

from tfimgopt.data.pipeline import LABEL_MODES, build_pipeline
from tfimgopt.data.shards import write_shards
from tfimgopt.data.sources import (
    DatasetInfo,
    Source,
    Splits,
    find_source,
    is_shard_folder,
    list_sources,
    load_dataset,
    register_source,
    split_indices,
)
from tfimgopt.data.unlabelled import UNLABELLED, hold_out_labels, load_unlabelled, with_unlabelled

__all__ = [
    "LABEL_MODES",
    "UNLABELLED",
    "DatasetInfo",
    "Source",
    "Splits",
    "build_pipeline",
    "find_source",
    "hold_out_labels",
    "is_shard_folder",
    "list_sources",
    "load_dataset",
    "load_unlabelled",
    "register_source",
    "split_indices",
    "with_unlabelled",
    "write_shards",
]
