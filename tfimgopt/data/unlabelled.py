"""Unlabelled images: held-out labels for experiments, folders without classes, and the
mixed labelled + unlabelled "transfer set" that distillation trains on.

An unlabelled example carries the label `UNLABELLED` (-1); after one-hot encoding its
label row is all zeros.  `tfimgopt.distill.Distiller` applies only the distillation
term to such examples.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from tfimgopt.compat import tf
from tfimgopt.data.sources import IMAGE_EXTENSIONS, _check_image_size, _resize_uint8, split_indices
from tfimgopt.errors import DataError, received

logger = logging.getLogger(__name__)

UNLABELLED = -1


def hold_out_labels(dataset: tf.data.Dataset, labelled: int | float, seed: int = 0):
    """Keeps the labels of a stratified subset and drops the rest (for experiments).

    Args:
        dataset: Unbatched `(image, label)` pairs (e.g. `load_dataset(...).train`).
        labelled: How many examples keep their labels (an int), or which share (a float
            in (0, 1)).
        seed: Seeds the stratified choice.

    Returns:
        `(labelled_ds, unlabelled_ds)`: `(image, label)` pairs, and images alone.

    Raises:
        DataError: if `labelled` is not a positive count below the dataset size or a
            fraction in (0, 1).

    Example:
        >>> from tfimgopt.data import hold_out_labels, load_dataset
        >>> labelled, unlabelled = hold_out_labels(load_dataset("digits").train, 300)
    """
    images, labels = _to_arrays(dataset)
    n = len(labels)
    if isinstance(labelled, bool) or not isinstance(labelled, int | float | np.integer | np.floating):
        raise DataError(f"labelled must be a count or a fraction. {received('labelled', labelled)}")
    fraction = float(labelled) / n if isinstance(labelled, int | np.integer) else float(labelled)
    if not 0.0 < fraction < 1.0:
        raise DataError(
            f"labelled must be a count in [1, {n - 1}] or a fraction in (0, 1) of the {n} examples. "
            f"{received('labelled', labelled)}"
        )
    rest, keep = split_indices(labels, (fraction,), seed)
    return (
        tf.data.Dataset.from_tensor_slices((images[keep], labels[keep])),
        tf.data.Dataset.from_tensor_slices(images[rest]),
    )


def _to_arrays(dataset):
    pairs = list(dataset.as_numpy_iterator())
    if not pairs:
        raise DataError("The dataset is empty. Received: a dataset with 0 examples")
    if not isinstance(pairs[0], tuple) or len(pairs[0]) != 2:
        raise DataError("Expected unbatched (image, label) pairs. Received: elements that are not pairs")
    return np.stack([p[0] for p in pairs]), np.asarray([p[1] for p in pairs], dtype=np.int64)


def with_unlabelled(labelled: tf.data.Dataset, unlabelled: tf.data.Dataset) -> tf.data.Dataset:
    """One unbatched dataset of labelled pairs followed by unlabelled images (label -1).

    Shuffle it (e.g. with `build_pipeline(..., training=True)`) so batches mix both
    kinds.  `unlabelled` may hold images or `(image, label)` pairs whose labels are
    ignored.

    Raises:
        DataError: if the image shapes or dtypes of the two datasets differ.
    """
    spec = unlabelled.element_spec
    if isinstance(spec, tuple):
        unlabelled = unlabelled.map(lambda x, *_: x)
        spec = spec[0]
    image_spec, label_spec = labelled.element_spec
    if spec.dtype != image_spec.dtype or not spec.shape.is_compatible_with(image_spec.shape):
        raise DataError(
            "Labelled and unlabelled images must have the same shape and dtype. "
            f"Received: labelled {image_spec.shape} {image_spec.dtype.name}, unlabelled {spec.shape} {spec.dtype.name}"
        )
    unlabelled = unlabelled.map(lambda x: (x, tf.constant(UNLABELLED, label_spec.dtype)))
    return labelled.concatenate(unlabelled)


def load_unlabelled(folder: str, image_size: int | Sequence[int] = 32, channels: int = 3) -> tf.data.Dataset:
    """Reads every image under `folder` (any depth, no class subfolders needed).

    Unreadable files are skipped with a warning, as `load_dataset` does for folders.

    Returns:
        An unbatched dataset of uint8 images `(height, width, channels)`.

    Raises:
        DataError: for a missing folder, a bad size or channel count, or no images.
    """
    from PIL import Image, UnidentifiedImageError

    size = _check_image_size(image_size)
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3. {received('channels', channels)}")
    if not isinstance(folder, str | os.PathLike) or not os.path.isdir(folder):
        raise DataError(f"The unlabelled image folder does not exist. {received('folder', folder)}")
    paths, skipped = [], []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path = os.path.join(root, name)
            try:
                with Image.open(path) as img:
                    img.load()
            except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
                skipped.append(path)
                continue
            paths.append(path)
    if skipped:
        logger.warning("Skipped %d unreadable image file(s) in %s, e.g. %s", len(skipped), folder, skipped[0])
    if not paths:
        raise DataError(f"No readable images ({', '.join(IMAGE_EXTENSIONS)}) under the folder. "
                        f"{received('folder', folder)}")

    def decode(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
        return _resize_uint8(tf.ensure_shape(image, [None, None, channels]), size)

    return tf.data.Dataset.from_tensor_slices(paths).map(decode, num_parallel_calls=tf.data.AUTOTUNE,
                                                         deterministic=True)
