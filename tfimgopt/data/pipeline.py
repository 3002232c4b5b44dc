"""Builds the input pipeline: cache, shuffle, batch, augment, prefetch, in that order."""

from __future__ import annotations

from collections.abc import Callable

from tfimgopt.compat import tf
from tfimgopt.errors import DataError, received

LABEL_MODES = ("sparse", "one_hot")


def build_pipeline(
    dataset: tf.data.Dataset,
    batch_size: int,
    *,
    training: bool = False,
    seed: int | None = 0,
    shuffle_buffer: int = 10_000,
    cache: bool = True,
    drop_remainder: bool = False,
    augment: Callable | None = None,
    label_mode: str = "sparse",
    num_classes: int | None = None,
    repeat: bool = False,
) -> tf.data.Dataset:
    """Batches an unbatched `(image, label)` dataset for training or evaluation.

    The order matters: caching decoded images before the shuffle makes every epoch see
    a fresh order without re-reading files; augmenting after `batch` runs the random ops
    once per batch (vectorized) instead of once per image; `prefetch` comes last so the
    accelerator never waits on the host.

    Args:
        dataset: Unbatched `(image, label)` pairs, e.g. from `load_dataset`.
        batch_size: Examples per batch (the global batch under a distribution strategy).
        training: Shuffles (seeded) and applies `augment` only when True.
        seed: Shuffle seed; the same seed gives the same order every run.
        shuffle_buffer: Shuffle buffer size.
        cache: Caches the examples in memory after loading.
        drop_remainder: Drops the last short batch, for static shapes (TPUs, XLA).
        augment: A callable mapping a batch `(images, labels)` to a new batch, or a
            callable on images alone; applied to training batches only.  A
            `tfimgopt.augment.Augmentation` gets a per-batch seed derived from `seed`,
            so two runs with the same seed see identical augmented batches.
        label_mode: `"sparse"` integer labels or `"one_hot"` float labels (needed by
            MixUp/CutMix, whose labels are soft).
        num_classes: Number of classes, required for `"one_hot"`.
        repeat: Repeats the dataset forever (then pass `steps_per_epoch` to `fit`).

    Returns:
        A batched, prefetched `tf.data.Dataset`.

    Raises:
        DataError: for a non-positive batch size or an unknown label mode.

    Example:
        >>> from tfimgopt.data import build_pipeline, load_dataset
        >>> splits = load_dataset("digits", image_size=16)
        >>> train = build_pipeline(splits.train, 32, training=True)
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise DataError(f"batch_size must be a positive int. {received('batch_size', batch_size)}")
    if label_mode not in LABEL_MODES:
        raise DataError(f"label_mode must be one of {LABEL_MODES}. {received('label_mode', label_mode)}")
    if training and augment is not None and getattr(augment, "takes_labels", False) and label_mode == "sparse":
        # MixUp/CutMix blend labels: they need one-hot rows, so switch when we can.
        if not num_classes:
            raise DataError(
                "This augmentation mixes labels (MixUp/CutMix) and needs one-hot labels: pass num_classes "
                f"(and label_mode='one_hot'). {received('num_classes', num_classes)}"
            )
        label_mode = "one_hot"
    if label_mode == "one_hot" and not num_classes:
        raise DataError(f"label_mode='one_hot' needs num_classes. {received('num_classes', num_classes)}")
    if cache:
        dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if label_mode == "one_hot":
        dataset = dataset.map(
            lambda x, y: (x, tf.one_hot(y, num_classes, dtype=tf.float32)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    if training and augment is not None:
        if getattr(augment, "accepts_seed", False):
            # One stateless seed per batch, from a seeded stream that differs per epoch
            # yet repeats across runs: reproducible even with parallel map calls.
            seeds = tf.data.Dataset.random(seed=0 if seed is None else seed, rerandomize_each_iteration=True)
            dataset = tf.data.Dataset.zip(dataset, seeds.batch(2))
        dataset = dataset.map(_batch_fn(augment), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _batch_fn(augment: Callable) -> Callable:
    """Adapts an augmentation to `(images, labels)` batches (with a seed if it takes one)."""
    takes_labels = getattr(augment, "takes_labels", False)
    if getattr(augment, "accepts_seed", False):
        if takes_labels:
            return lambda batch, seed: augment(batch, seed=seed)
        return lambda batch, seed: (augment(batch[0], seed=seed), batch[1])
    if takes_labels:
        return lambda x, y: augment((x, y))

    def apply(images, labels):
        return augment(images), labels

    return apply
