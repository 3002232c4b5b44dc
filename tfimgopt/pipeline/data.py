"""The run's data: splits, batched pipelines, the transfer set, and a fingerprint of it all."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from typing import Any, NamedTuple

from tfimgopt.compat import tf
from tfimgopt.data import Splits, build_pipeline, hold_out_labels, load_dataset, load_unlabelled, with_unlabelled
from tfimgopt.pipeline.config import DEFAULT_IMAGE_SIZE, DataConfig, RunConfig


class PreparedData(NamedTuple):
    """Loaded splits, their batched pipelines, and what augmentation runs in the model."""

    splits: Splits
    train: tf.data.Dataset
    val: tf.data.Dataset
    test: tf.data.Dataset
    transfer: tf.data.Dataset | None = None
    model_augmentation: Any = None
    num_unlabelled: int = 0


def _augmentation(config: RunConfig, strategy):
    from tfimgopt.augment import create_augmentation, split_augmentation

    t = config.train
    spec = t.augment_spec if t.augment_spec is not None else t.augment
    if spec == "auto":  # your model was trained without our augmentation: fine-tuning keeps its data as it was
        from tfimgopt.data import find_source

        source = find_source(config.data.source)  # None for in-memory data, which the config only names
        policy = source.augment if source is not None else "default"
        spec = "none" if t.adopts_file and policy == "default" else policy
    aug = create_augmentation(spec, seed=config.seed)
    return split_augmentation(aug, t.augment_placement, strategy)


def prepare_data(config: RunConfig, log: Callable[[str], None] = print, strategy=None, source: Any = None
                 ) -> PreparedData:
    """Loads `config.data.source` (or `source`, in-memory data that `data.source` only names),
    holds out labels if asked, and builds the pipelines.

    Training batches are augmented in `tf.data` (placement "data") or the augmentation is
    returned for the model (placement "model"); labels become one-hot when MixUp/CutMix
    mix them.  With unlabelled images (a held-out share or a folder) a second training
    pipeline, the transfer set, mixes them in for distillation.
    """
    from tfimgopt.distribute import needs_static_shapes

    d = config.data
    size = d.image_size or DEFAULT_IMAGE_SIZE
    splits = load_dataset(
        d.source if source is None else source, image_size=size, channels=d.channels, val_fraction=d.val_fraction,
        test_fraction=d.test_fraction, seed=config.seed, data_dir=d.data_dir,
        try_gcs=d.try_gcs, download=d.download,
    )
    info = splits.info
    labelled, unlabelled = splits.train, None
    if d.unlabelled_fraction > 0:
        labelled, unlabelled = hold_out_labels(splits.train, 1.0 - d.unlabelled_fraction, seed=config.seed)
    if d.unlabelled_folder:
        extra = load_unlabelled(d.unlabelled_folder, image_size=size, channels=info.image_shape[-1])
        unlabelled = extra if unlabelled is None else unlabelled.concatenate(extra)
    num_unlabelled = int(unlabelled.reduce(0, lambda n, _: n + 1)) if unlabelled is not None else 0
    data_aug, model_aug = _augmentation(config, strategy)
    takes_labels = data_aug is not None and data_aug.takes_labels
    label_mode = "one_hot" if takes_labels else "sparse"
    drop = needs_static_shapes(strategy)

    def training(ds):
        return build_pipeline(ds, d.batch_size, training=True, seed=config.seed, augment=data_aug,
                              label_mode=label_mode, num_classes=info.num_classes, drop_remainder=drop)

    log(
        f"data: {info.name}, {info.num_classes} classes, images {info.image_shape}, examples "
        f"{dict(info.num_examples)}" + (f", {num_unlabelled} unlabelled" if num_unlabelled else "")
        + f"; augmentation: {[type(x).__name__ for x in (data_aug.steps if data_aug else [])]} in tf.data"
        + (f", {[type(x).__name__ for x in model_aug.steps]} in the model" if model_aug else "")
    )
    return PreparedData(
        splits,
        training(labelled),
        build_pipeline(splits.val, d.batch_size, label_mode=label_mode, num_classes=info.num_classes),
        build_pipeline(splits.test, d.batch_size),
        training(with_unlabelled(labelled, unlabelled)) if unlabelled is not None else None,
        model_aug,
        num_unlabelled,
    )


def calibration_images(data: PreparedData) -> tf.data.Dataset:
    """Unbatched training images, the representative data of int8 export."""
    return data.splits.train.map(lambda x, y: x)


def _folder_listing(root: str) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime) of every file under `root`, sorted: cheap, and it changes
    when an image is added, removed, replaced or edited."""
    entries = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            try:
                stat = os.stat(path)
            except OSError:
                continue
            entries.append((os.path.relpath(path, root), stat.st_size, stat.st_mtime_ns))
    return entries


def data_fingerprint(data: DataConfig, seed: int, source: Any = None) -> str:
    """SHA-256 of what decides the run's data: the settings, the seed, for folders the listing
    of their files, for a `.npz` file its bytes, and for in-memory `source` its arrays. A changed
    image folder, file, array or seed makes it differ."""
    from tfimgopt import _io

    state: dict[str, Any] = {"settings": json.loads(json.dumps(vars(data))), "seed": seed}
    for key in ("source", "unlabelled_folder"):
        value = getattr(data, key)
        if isinstance(value, str) and os.path.isdir(value):
            state[f"{key}_files"] = _folder_listing(value)
        elif isinstance(value, str) and os.path.isfile(value):
            state[f"{key}_sha256"] = _io.sha256_file(value)
    if source is not None:
        from tfimgopt.pipeline.adopt import data_digest

        state["in_memory_sha256"] = data_digest(source)
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()
