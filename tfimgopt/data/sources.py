"""Turns a data source (digits, TFDS, image folder, arrays) into train/val/test datasets.

Every source yields unbatched `(image, label)` pairs: `uint8` images of shape
`(height, width, channels)` with values in [0, 255] and `int64` class labels.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from tfimgopt._registry import Registry
from tfimgopt.compat import tf
from tfimgopt.errors import DataError, received

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
#: Largest accepted image side: far above any classifier's input, far below an out-of-memory.
MAX_IMAGE_SIZE = 2048


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset.

    Attributes:
        name: The source it came from (`"digits"`, `"tfds:cifar10"`, a folder path...).
        num_classes: Number of classes; labels lie in `[0, num_classes)`.
        image_shape: `(height, width, channels)` of every image.
        class_names: One name per class, in label order.
        num_examples: Number of examples per split (`"train"`, `"val"`, `"test"`).
        skipped_files: Image files that could not be read and were left out.
    """

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    num_examples: Mapping[str, int]
    skipped_files: tuple[str, ...] = ()


class Splits(NamedTuple):
    """The result of `load_dataset`: three unbatched datasets and their info."""

    train: tf.data.Dataset
    val: tf.data.Dataset
    test: tf.data.Dataset
    info: DatasetInfo


@dataclasses.dataclass(frozen=True)
class Source:
    """A kind of data source `load_dataset` accepts.

    Attributes:
        name: Registry name.
        form: What a user writes, for messages (`"tfds:<name>"`).
        accepts: `fn(source) -> bool`; the first registered source that accepts wins.
        load: `fn(source, size, channels, val_fraction, test_fraction, seed, data_dir,
            try_gcs, download) -> Splits`.
        augment: The augmentation policy `train.augment: auto` means for it.
    """

    name: str
    form: str
    accepts: Any
    load: Any
    augment: str = "default"


_SOURCES: Registry[Source] = Registry("data source")


def register_source(source: Source) -> Source:
    """Adds a kind of data source (checked after the ones registered before it).

    Raises:
        ConfigError: if the name is registered already.
    """
    return _SOURCES.register(source.name, source)


def list_sources() -> list[str]:
    """Names of the kinds of source `load_dataset` accepts.

    Example:
        >>> from tfimgopt.data import list_sources
        >>> list_sources()
        ['arrays', 'dataset', 'digits', 'folder', 'npz', 'shards', 'tfds']
    """
    return _SOURCES.names()


def find_source(source: Any) -> Source | None:
    """The registered kind of source that accepts `source`, or None."""
    return next((s for s in _SOURCES.entries() if s.accepts(source)), None)


def _forms() -> str:
    return ", ".join(s.form for s in _SOURCES.entries())


def load_dataset(
    source: Any = "digits",
    *,
    image_size: int | Sequence[int] = 32,
    channels: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    data_dir: str | None = None,
    try_gcs: bool = False,
    download: bool = True,
) -> Splits:
    """Loads a source as `(train, val, test, info)`.

    Args:
        source: `"digits"` (scikit-learn's bundled handwritten digits, offline),
            `"tfds:<name>"` (a TensorFlow Datasets image-classification dataset), the
            path of a folder holding one subfolder of image files per class, NumPy
            arrays: `(images, labels)` or `{"train": (x, y), "test": (x, y)}`, a `.npz`
            file of them (keys `images`/`labels`, or `x_train`/`y_train` with optional
            `x_val`/`y_val`, `x_test`/`y_test`, plus optional `class_names`), or a finite
            `tf.data.Dataset` of (image, label) pairs, batched or not (read into memory), or
            a shard folder written by `write_shards` (local or `gs://`).
        image_size: Output `(height, width)`, or one int for square images.
        channels: 1 or 3. `None` keeps the source's own count (a folder with both
            grayscale and colour files becomes 3).
        val_fraction: Share of the labelled training data held out for validation
            (and of the whole data for sources without their own test split).
        test_fraction: Share held out for testing where the source has no test split.
        seed: Seeds the split, so the same seed gives the same split.
        data_dir: TFDS data directory (e.g. a `gs://` bucket on a Colab TPU).
        try_gcs: Let TFDS read prepared data from Google's public bucket.
        download: Let TFDS download and prepare data that is not in `data_dir`.
            Needs network access; without it only prepared data can be read.

    Returns:
        `Splits(train, val, test, info)`: unbatched datasets of `(uint8 image, int64
        label)` and a `DatasetInfo`.

    Raises:
        DataError: unknown source or TFDS name, empty or missing folder, labels out of
            range, images of the wrong rank or with NaNs.

    Example:
        >>> from tfimgopt.data import load_dataset
        >>> train, val, test, info = load_dataset("digits", image_size=16)
        >>> info.num_classes
        10
    """
    size = _check_image_size(image_size)
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1, 3 or None. {received('channels', channels)}")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise DataError(f"{name} must be in [0, 1). {received(name, value)}")
    if val_fraction + test_fraction >= 1.0:
        raise DataError(
            "val_fraction + test_fraction must leave training data (sum < 1). "
            f"Received: val_fraction={val_fraction}, test_fraction={test_fraction}"
        )

    kind = find_source(source)
    if kind is None:
        if isinstance(source, str):
            hint = "" if os.sep not in source else f" No folder exists at {source!r}."
            raise DataError(f"Unknown data source.{hint} Accepted: {_forms()}. {received('source', source)}")
        raise DataError(f"Unknown data source type {type(source).__name__}. Accepted: {_forms()}. "
                        f"{received('source', source)}")
    return kind.load(source, size, channels, val_fraction, test_fraction, seed, data_dir, try_gcs, download)


def _check_image_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int | np.integer) and not isinstance(image_size, bool):
        size = (int(image_size), int(image_size))
    elif (
        isinstance(image_size, Sequence)
        and len(image_size) == 2
        and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in image_size)
    ):
        size = (int(image_size[0]), int(image_size[1]))
    else:
        raise DataError(
            f"image_size must be an int or a (height, width) pair of ints. "
            f"{received('image_size', image_size)}"
        )
    if min(size) < 1 or max(size) > MAX_IMAGE_SIZE:
        raise DataError(f"image_size must be between 1 and {MAX_IMAGE_SIZE} pixels a side. "
                        f"{received('image_size', image_size)}")
    return size


def split_indices(
    labels: np.ndarray, fractions: Sequence[float], seed: int
) -> list[np.ndarray]:
    """Splits example indices into consecutive parts, stratified by label where possible.

    Args:
        labels: One label per example.
        fractions: Share of each held-out part; the first returned part gets the rest.
        seed: Seeds the shuffle.

    Returns:
        `len(fractions) + 1` index arrays: the remainder first, then one per fraction.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        start = 0
        for i, fraction in enumerate(fractions, start=1):
            count = int(round(fraction * len(idx)))
            parts[i].extend(idx[start : start + count])
            start += count
        parts[0].extend(idx[start:])
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def check_splits(labels: np.ndarray, parts: Mapping[str, np.ndarray], class_names: Sequence[str], source: str,
                 fractions: Mapping[str, float] | None = None) -> None:
    """Refuses splits a run cannot use: an empty training split, a class with no training
    image, or an empty validation/test split that was asked for (too few images per class).

    Raises:
        DataError: naming the class or split and how many images each class has.
    """
    train = labels[parts["train"]]
    counts = np.bincount(labels, minlength=len(class_names))
    if len(train) == 0:
        raise DataError(f"The training split of {source} is empty. Received: {len(labels)} images")
    absent = [class_names[c] for c in range(len(class_names)) if counts[c] and not np.any(train == c)]
    if absent:
        raise DataError(
            f"Class {absent[0]!r} has no training image after the split ({int(counts[class_names.index(absent[0])])} "
            f"image(s) in all): each class needs at least 3 images (one per split), better 10 or more. "
            f"Received: {source}")
    for split, fraction in (fractions or {}).items():
        if fraction > 0 and len(parts[split]) == 0:
            raise DataError(
                f"The {split} split of {source} is empty: {split}_fraction={fraction:g} of "
                f"{int(counts.min())}-{int(counts.max())} images per class rounds to none. Add images (6 or "
                f"more per class), raise {split}_fraction, or set it to 0. Received: {len(labels)} images")


#: The reductions libjpeg decodes at almost for free (DCT scaling): 1, 1/2, 1/4, 1/8.
JPEG_RATIOS = (1, 2, 4, 8)


def decode_resized(data: tf.Tensor, channels: int, size: tuple[int, int]) -> tf.Tensor:
    """An encoded image (JPEG, PNG, BMP, GIF bytes) decoded to `channels` and resized to `size`, uint8.

    A JPEG larger than the target is decoded at the largest of 1/2, 1/4, 1/8 size that keeps
    every side at least the target (libjpeg's DCT scaling: it averages 2x2, 4x4, 8x8 blocks
    while decoding, so the reduction itself does not alias), then resized the rest of the way:
    bilinear where less than 2x remains (its two taps then cover every source pixel, and at
    exactly 2x it is the 2x2 average), area beyond (sources over 16x the target). A JPEG of
    exactly the target size (shards) is decoded and not resized. That skips most of the
    decoding and the full-size antialiased resize that dominated the input pipeline (4x
    slower than a plain bilinear one on 640x480 photos). Other formats are decoded in full and
    resized antialiased, as before. Against the full decode + antialiased resize the result
    differs by 37 dB PSNR on average on 640x480 photo crops at 224 px (35 dB at worst; 34 dB on
    a whole detailed photo), where the plain `decode_jpeg` + bilinear pipeline is 31 dB (27 dB);
    `tests/data/test_sources.py` and `benchmarks/reduced_decode.py` measure it.
    """

    def jpeg() -> tf.Tensor:
        shape = tf.io.extract_jpeg_shape(data)
        index = tf.zeros([], tf.int32)  # how many reductions still fit: they are nested
        for r in JPEG_RATIOS[1:]:  # libjpeg's output side at ratio r is ceil(side / r)
            fits = tf.logical_and((shape[0] + r - 1) // r >= size[0], (shape[1] + r - 1) // r >= size[1])
            index += tf.cast(fits, tf.int32)
        branches = [lambda r=r: tf.io.decode_jpeg(data, channels=channels, ratio=r) for r in JPEG_RATIOS]
        image = tf.ensure_shape(tf.switch_case(index, branches), [None, None, channels])
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        shrink = tf.logical_and(height >= size[0], width >= size[1])
        near = tf.logical_and(height <= 2 * size[0], width <= 2 * size[1])
        return tf.case([(tf.logical_and(tf.equal(height, size[0]), tf.equal(width, size[1])),
                         lambda: tf.ensure_shape(image, [*size, channels])),
                        (tf.logical_and(shrink, near), lambda: _bilinear_uint8(image, size)),
                        (shrink, lambda: _resize_to(image, size, "area"))],
                       default=lambda: _resize_uint8(image, size), exclusive=False)

    def other() -> tf.Tensor:
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        return _resize_uint8(tf.ensure_shape(image, [None, None, channels]), size)

    return tf.cond(tf.io.is_jpeg(data), jpeg, other)


def _resize_to(image: tf.Tensor, size: tuple[int, int], method: str) -> tf.Tensor:
    resized = tf.image.resize(tf.cast(image, tf.float32), size, method=method)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def _bilinear_uint8(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Bilinear resize of one uint8 image, rounded back to uint8. The raw kernel reads uint8
    directly; its output is a convex combination of pixels, so +0.5 and truncation round it
    (half up) without a clip. Per 320x240 -> 224x224 image: ~0.25 ms against area's ~0.7 ms."""
    resized = tf.raw_ops.ResizeBilinear(images=image[tf.newaxis], size=size, half_pixel_centers=True)[0]
    return tf.cast(resized + 0.5, tf.uint8)


def _resize_uint8(images: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    if tuple(images.shape[-3:-1]) == size:
        return tf.cast(images, tf.uint8)
    resized = tf.image.resize(tf.cast(images, tf.float32), size, antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def _set_channels(images: tf.Tensor, channels: int | None) -> tf.Tensor:
    have = images.shape[-1]
    if channels is None or channels == have:
        return images
    if channels == 3 and have == 1:
        return tf.image.grayscale_to_rgb(images)
    if channels == 1 and have == 3:
        gray = tf.image.rgb_to_grayscale(tf.cast(images, tf.float32))
        return tf.cast(tf.clip_by_value(tf.round(gray), 0.0, 255.0), tf.uint8)
    if channels == 3 and have == 4:
        return images[..., :3]
    raise DataError(f"Cannot convert {have}-channel images to {channels} channels.")


def _from_memory(
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    parts: Mapping[str, np.ndarray],
    class_names: Sequence[str],
) -> Splits:
    datasets = {
        split: tf.data.Dataset.from_tensor_slices((images[idx], labels[idx]))
        for split, idx in parts.items()
    }
    info = DatasetInfo(
        name=name,
        num_classes=len(class_names),
        image_shape=tuple(int(d) for d in images.shape[1:]),
        class_names=tuple(class_names),
        num_examples={split: len(idx) for split, idx in parts.items()},
    )
    return Splits(datasets["train"], datasets["val"], datasets["test"], info)


def _load_digits(size, channels, val_fraction, test_fraction, seed) -> Splits:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # The bundled 8x8 images hold ink counts 0..16; scale them to ordinary 8-bit pixels.
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    images = _set_channels(_resize_uint8(tf.constant(images), size), channels).numpy()
    labels = digits.target.astype(np.int64)
    train, test, val = split_indices(labels, (test_fraction, val_fraction), seed)
    check_splits(labels, {"train": train, "val": val, "test": test}, [str(n) for n in digits.target_names],
                 "digits", {"val": val_fraction, "test": test_fraction})
    names = [str(n) for n in digits.target_names]
    return _from_memory("digits", images, labels, {"train": train, "val": val, "test": test}, names)


def _check_arrays(images: Any, labels: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        images = np.asarray(images)
        labels = np.asarray(labels)
    except ValueError as err:  # a ragged list: images of different sizes
        shapes = sorted({np.shape(x) for x in images}, key=str)[:3] if isinstance(images, list | tuple) else []
        raise DataError(f"{what} images (and labels) must be arrays of one shape; resize the images to one size "
                        f"first ({err}). Received: shapes {shapes}") from None
    if images.dtype == bool:
        raise DataError(f"{what} images are booleans: tfimgopt reads pixels as 0..255 (uint8) or [0, 1] floats, and "
                        "True/False would become near-black 0/1 pixels. Convert them first, e.g. "
                        "images.astype('uint8') * 255 or images.astype('float32'). Received: images.dtype=bool")
    if images.dtype == object or labels.dtype == object:
        raise DataError(f"{what} images and labels must be numeric arrays of one shape. "
                        f"Received: images.dtype={images.dtype}, labels.dtype={labels.dtype}")
    if labels.ndim == 2 and labels.shape[1:] == (1,):  # keras.datasets' (N, 1) labels (CIFAR)
        labels = labels[:, 0]
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise DataError(
            f"{what} images must have shape (N, H, W) or (N, H, W, C) with C in 1, 3, 4. "
            f"{received('images.shape', images.shape)}"
        )
    if len(images) == 0:
        raise DataError(f"{what} has no images. {received('images.shape', images.shape)}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(
            f"{what} labels must be one integer per image ({len(images)} images). "
            f"{received('labels.shape', labels.shape)}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{what} labels must be integers. {received('labels.dtype', labels.dtype)}")
    if np.issubdtype(images.dtype, np.floating):
        if not np.all(np.isfinite(images)):
            bad = int(np.flatnonzero(~np.isfinite(images.reshape(len(images), -1)).all(1))[0])
            raise DataError(f"{what} images contain NaN or infinity. Received: image index {bad}")
        # One rule, no guessing: [0, 1] is scaled to [0, 255]; [0, 255] (with values >= 2)
        # is kept; anything else (negative, standardized, or just above 1) is refused.
        low, high = float(images.min()), float(images.max())
        if low < 0 or high > 255 or 1.0 < high < 2.0:
            raise DataError(
                f"{what} float images must lie in [0, 1] (scaled to 0..255) or in [0, 255]; these lie in "
                f"[{low:g}, {high:g}]. Rescale them first (e.g. (x + 1) / 2 for [-1, 1], or clip an "
                f"overshoot above 1). Received: min={low:g}, max={high:g}")
        scale = 255.0 if high <= 1.0 else 1.0
        images = np.round(images * scale).astype(np.uint8)
    elif images.dtype != np.uint8:
        if images.min() < 0 or images.max() > 255:
            raise DataError(
                f"{what} integer images must lie in [0, 255]. "
                f"Received: min={images.min()}, max={images.max()}"
            )
        images = images.astype(np.uint8)
    return images, labels.astype(np.int64)


def _load_arrays(source, size, channels, val_fraction, test_fraction, seed, name: str = "arrays") -> Splits:
    if isinstance(source, Mapping):
        unknown = set(source) - {"train", "val", "test", "class_names"}
        if unknown or "train" not in source:
            raise DataError(
                "An array source mapping needs a 'train' entry and may have 'val', 'test' "
                f"and 'class_names'. Received: keys={sorted(source)}"
            )
        given = {k: _check_arrays(*source[k], what=f"source[{k!r}]") for k in ("train", "val", "test") if k in source}
        class_names = source.get("class_names")
    else:
        given = {"train": _check_arrays(*source, what="source")}
        class_names = None
    all_labels = np.concatenate([y for _, y in given.values()])
    if class_names is not None:
        num_classes = len(class_names)
        bad = all_labels[(all_labels < 0) | (all_labels >= num_classes)]
        if len(bad):
            raise DataError(f"Labels must lie in [0, {num_classes}) for the {num_classes} class_names. "
                            f"Received: label={int(bad[0])}")
    else:
        # Without class_names the labels are the classes: they must be exactly 0..K-1, so a
        # typo (one label of 10**6) cannot create a million empty classes.
        present = np.unique(all_labels)
        if present[0] < 0:
            raise DataError(f"Labels must be >= 0. Received: label={int(present[0])}")
        num_classes = len(present)
        if present[-1] != num_classes - 1:
            missing = sorted(set(range(int(present[-1]) + 1)) - set(present.tolist()))
            raise DataError(
                f"Labels must be 0..K-1 with every class present; {len(missing):,} label(s) in between are "
                f"missing (first: {missing[:5]}). Pass class_names to declare classes without examples. "
                f"Received: labels {present[:10].tolist()}{'...' if len(present) > 10 else ''}")
    shapes = {x.shape[1:] for x, _ in given.values()}
    if len({s[-1] for s in shapes}) > 1 and channels is None:
        channels = 3
    images, labels, parts, offset = [], [], {}, 0
    for split, (x, y) in given.items():
        x = _set_channels(_resize_uint8(tf.constant(x), size), channels).numpy()
        images.append(x)
        labels.append(y)
        parts[split] = np.arange(offset, offset + len(x))
        offset += len(x)
    images = np.concatenate(images)
    labels = np.concatenate(labels)
    # Fractions are shares of all the data given, as for the other sources.
    missing = [split for split in ("test", "val") if split not in parts]
    fractions = {"test": test_fraction, "val": val_fraction}
    train = parts["train"]
    keep, *held_out = split_indices(labels[train], [fractions[m] for m in missing], seed)
    for split, idx in zip(missing, held_out, strict=True):
        parts[split] = train[idx]
    parts["train"] = train[keep]
    names = class_names if class_names is not None else [str(i) for i in range(num_classes)]
    check_splits(labels, parts, list(names), name, {m: fractions[m] for m in missing})
    return _from_memory(name, images, labels, parts, names)


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.listdir gives undecodable bytes as surrogates
        return False
    return True


def _scan_folder(root: str) -> tuple[list[str], list[str], list[int], list[str], set[int]]:
    """Lists readable image files per class; returns class names, paths, labels, skipped files
    and the channel counts seen.

    Rules: a class is a subfolder (a link to a folder counts) that is not hidden and holds at
    least one readable image; empty subfolders (as archive tools leave) are not classes.
    Files that cannot be decoded, decompression bombs, and names that are not UTF-8 are
    skipped with a warning, never fatal.
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    candidates = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
                        and not d.startswith(".") and d != "__MACOSX")
    if not candidates:
        raise DataError(
            f"The folder has no class subfolders; expected one subfolder of images per "
            f"class, e.g. {root}/cat/1.jpg. {received('source', root)}"
        )
    class_names, paths, labels, skipped, channel_counts, empty = [], [], [], [], set(), []
    for name in candidates:
        folder = os.path.join(root, name)
        if not _utf8(name):
            skipped.append(folder)
            continue
        found = []
        for entry in sorted(os.listdir(folder)):
            path = os.path.join(folder, entry)
            if entry.startswith(".") or not entry.lower().endswith(IMAGE_EXTENSIONS) or not os.path.isfile(path):
                continue
            if not _utf8(entry):
                skipped.append(path)
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    with Image.open(path) as img:
                        mode = img.mode
                        img.load()  # decodes fully: catches truncated files verify() misses
            except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError,
                    Image.DecompressionBombWarning):
                skipped.append(path)
                continue
            channel_counts.add(1 if mode in ("L", "1", "I", "I;16", "F") else 3)
            found.append(path)
        if not found:
            empty.append(name)
            continue
        paths += found
        labels += [len(class_names)] * len(found)
        class_names.append(name)
    if empty:
        logger.warning("Ignored %d subfolder(s) of %s with no readable images (not classes): %s", len(empty), root,
                       ", ".join(empty[:5]))
    return class_names, paths, labels, skipped, channel_counts


def _load_folder(root, size, channels, val_fraction, test_fraction, seed) -> Splits:
    class_names, paths, labels, skipped, channel_counts = _scan_folder(root)
    if skipped:
        logger.warning(
            "Skipped %d unreadable image file(s) in %s, e.g. %s", len(skipped), root, skipped[0]
        )
    if not paths:
        raise DataError(
            f"No readable image files ({', '.join(IMAGE_EXTENSIONS)}) in the class "
            f"subfolders {class_names}. {received('source', root)}"
        )
    if channels is None:
        channels = 3 if 3 in channel_counts else 1
    labels_arr = np.asarray(labels, dtype=np.int64)
    train, test, val = split_indices(labels_arr, (test_fraction, val_fraction), seed)
    check_splits(labels_arr, {"train": train, "val": val, "test": test}, class_names, root,
                 {"val": val_fraction, "test": test_fraction})
    paths_arr = np.asarray(paths)

    def decode(path, label):
        # Fixed channel count converts grayscale<->RGB and drops alpha on the fly.
        return decode_resized(tf.io.read_file(path), channels, size), label

    def make(idx):
        ds = tf.data.Dataset.from_tensor_slices((paths_arr[idx], labels_arr[idx]))
        return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    info = DatasetInfo(
        name=root,
        num_classes=len(class_names),
        image_shape=(size[0], size[1], channels),
        class_names=tuple(class_names),
        num_examples={"train": len(train), "val": len(val), "test": len(test)},
        skipped_files=tuple(skipped),
    )
    return Splits(make(train), make(val), make(test), info)


def _tfds_builder(name, data_dir, try_gcs):
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name, data_dir=data_dir, try_gcs=try_gcs)
    except tfds.core.registered.DatasetNotFoundError:
        known = tfds.list_builders()
        close = difflib.get_close_matches(name.split("/")[0], known, n=5)
        suggestion = f" Did you mean: {', '.join(close)}?" if close else ""
        raise DataError(
            f"TensorFlow Datasets has no dataset named {name!r}.{suggestion} "
            f"See tfds.list_builders() for the {len(known)} valid names. "
            f"{received('source', 'tfds:' + name)}"
        ) from None


def _load_tfds(name, size, channels, val_fraction, seed, data_dir, try_gcs, download) -> Splits:
    import tensorflow_datasets as tfds

    builder = _tfds_builder(name, data_dir, try_gcs)
    features = builder.info.features
    keys = builder.info.supervised_keys
    if (
        not keys
        or not isinstance(features[keys[0]], tfds.features.Image)
        or not isinstance(features[keys[1]], tfds.features.ClassLabel)
    ):
        raise DataError(
            f"tfds:{name} is not an image-classification dataset (its supervised keys are "
            f"{keys}); tfimgopt needs (image, class label) pairs. {received('source', 'tfds:' + name)}"
        )
    image_feature = features[keys[0]]
    label_feature = features[keys[1]]
    # Split metadata exists once a dataset is prepared; before that (or under
    # tfds.testing.mock_data) assume the usual train/test pair.
    splits = set(builder.info.splits.keys()) or {"train", "test"}
    if "train" not in splits:
        raise DataError(f"tfds:{name} has no 'train' split. Received: splits={sorted(splits)}")
    test_split = "test" if "test" in splits else None
    val_split = next((s for s in ("validation", "val") if s in splits), None)
    if test_split is None and val_split is not None:
        test_split, val_split = val_split, None
    pct = int(round(val_fraction * 100))
    if test_split is None:
        # No held-out split at all: carve test and validation out of train.
        test_pct = max(pct, 10)
        split_names = {
            "train": f"train[{test_pct + pct}%:]",
            "val": f"train[{test_pct}%:{test_pct + pct}%]",
            "test": f"train[:{test_pct}%]",
        }
    else:
        split_names = {
            "train": f"train[{pct}%:]" if val_split is None else "train",
            "val": f"train[:{pct}%]" if val_split is None else val_split,
            "test": test_split,
        }
    try:
        datasets = tfds.load(
            name, split=list(split_names.values()), data_dir=data_dir, try_gcs=try_gcs,
            download=download, as_supervised=True, shuffle_files=False,
            # The encoded bytes: `decode_resized` decodes a JPEG at reduced size when that is enough.
            decoders={keys[0]: tfds.decode.SkipDecoding()},
        )
    except AssertionError as err:  # tfds signals "not prepared and download=False" so
        raise DataError(
            f"tfds:{name} is not prepared in data_dir={data_dir!r} and download=False "
            f"(downloads need network access). {err}"
        ) from None
    have = image_feature.shape[-1]
    out_channels = channels if channels is not None else have

    def convert(encoded, label):
        return decode_resized(encoded, out_channels, size), tf.cast(label, tf.int64)

    converted = [
        ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        for ds in datasets
    ]
    num_examples = {}
    for split, spec in split_names.items():
        try:
            num_examples[split] = int(builder.info.splits[spec].num_examples)
        except (KeyError, ValueError, TypeError):
            num_examples[split] = -1
    info = DatasetInfo(
        name=f"tfds:{name}",
        num_classes=int(label_feature.num_classes),
        image_shape=(size[0], size[1], int(out_channels)),
        class_names=tuple(label_feature.names),
        num_examples=num_examples,
    )
    del seed  # TFDS splits are fixed by the dataset's authors.
    return Splits(*converted, info)


#: Key sets a `.npz` file may hold: ours, and the names `keras.datasets` arrays are usually saved under.
NPZ_LAYOUTS = (
    ("images", "labels"),
    ("x_train", "y_train"),
)


def _load_npz(path: str) -> dict[str, Any]:
    """The arrays of a `.npz` file as an array-source mapping (pickled objects refused)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except ValueError as err:  # object arrays need pickle: refused, a pickle can run code
        raise DataError(f"Cannot read {path} without unpickling ({err}); save plain numeric arrays "
                        f"(np.savez(path, images=x, labels=y)). {received('source', path)}") from None
    except (OSError, EOFError) as err:
        raise DataError(f"Not a readable .npz file ({type(err).__name__}: {err}). {received('source', path)}"
                        ) from None
    keys = set(arrays)
    if {"images", "labels"} <= keys:
        mapping: dict[str, Any] = {"train": (arrays["images"], arrays["labels"])}
    elif {"x_train", "y_train"} <= keys:
        mapping = {"train": (arrays["x_train"], arrays["y_train"])}
        for split, (x, y) in {"val": ("x_val", "y_val"), "test": ("x_test", "y_test")}.items():
            if (x in keys) != (y in keys):
                raise DataError(f"{path} has {x if x in keys else y} without {y if x in keys else x}. "
                                f"{received('keys', sorted(keys))}")
            if x in keys:
                mapping[split] = (arrays[x], arrays[y])
    else:
        raise DataError(
            f"{path} holds no arrays under the accepted keys: images + labels, or x_train + y_train (with x_val/"
            f"y_val and x_test/y_test optional), plus class_names optional. {received('keys', sorted(keys))}")
    if "class_names" in keys:
        names = arrays["class_names"]
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise DataError(f"{path}: class_names must be a 1-D array of strings. "
                            f"{received('class_names.dtype', names.dtype)}")
        mapping["class_names"] = [str(n) for n in names.tolist()]
    return mapping


#: The most images a `tf.data.Dataset` source is read into memory for (it is split like arrays).
MAX_DATASET_IMAGES = 2_000_000


def _dataset_arrays(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """A finite `tf.data.Dataset` of (image, label) pairs, batched or not, read into arrays."""
    spec = ds.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise DataError("A tf.data.Dataset source must yield (image, label) pairs. "
                        f"{received('element_spec', spec)}")
    if ds.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise DataError("A tf.data.Dataset source must be finite (drop .repeat()). "
                        f"{received('cardinality', 'infinite')}")
    if spec[0].shape.rank == 4:  # batched: one image per element from here on
        ds = ds.unbatch()
        spec = ds.element_spec
    if spec[0].shape.rank not in (2, 3):
        raise DataError(f"A tf.data.Dataset source yields images of shape (H, W[, C]) or batches of them. "
                        f"{received('image spec', spec[0])}")
    images, labels = [], []
    for image, label in ds.take(MAX_DATASET_IMAGES + 1).as_numpy_iterator():
        images.append(image)
        labels.append(label)
    if len(images) > MAX_DATASET_IMAGES:
        raise DataError(f"A tf.data.Dataset source is read into memory, at most {MAX_DATASET_IMAGES:,} images; "
                        "shard larger data into a folder or TFDS. Received: more images than that")
    if not images:
        raise DataError("The tf.data.Dataset source is empty. Received: 0 elements")
    labels_arr = np.asarray(labels)
    if labels_arr.ndim == 2:  # one-hot (or soft) rows: the class is the largest entry
        labels_arr = labels_arr.argmax(axis=1)
    return np.stack(images), labels_arr


#: The manifest a shard folder holds (`tfimgopt.data.write_shards`); its presence makes a folder a shard source.
SHARD_MANIFEST = "tfimgopt-shards.json"
SHARD_FORMAT = 1


def is_shard_folder(source: Any) -> bool:
    """Whether `source` is a folder (local or `gs://...`) written by `write_shards`."""
    if not isinstance(source, str | os.PathLike):
        return False
    path = os.fspath(source)
    if "://" not in path and not os.path.isdir(path):
        return False
    try:
        return tf.io.gfile.exists(f"{path.rstrip('/')}/{SHARD_MANIFEST}")
    except tf.errors.OpError:
        return False


def read_manifest(root: str) -> dict[str, Any]:
    """The manifest of a shard folder, checked: its format, and every listed shard present at its size."""
    import json

    path = f"{root.rstrip('/')}/{SHARD_MANIFEST}"
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            manifest = json.loads(f.read())
    except (tf.errors.OpError, ValueError) as err:
        raise DataError(f"Cannot read the shard manifest {path} ({err}). {received('source', root)}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != SHARD_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else manifest
        raise DataError(f"{path} is not a tfimgopt shard manifest of format {SHARD_FORMAT}: write the shards again "
                        f"(tfimgopt data shard). {received('format', found)}")
    for split in manifest["splits"].values():
        for entry in split["files"]:
            shard = f"{root.rstrip('/')}/{entry['name']}"
            try:
                size = tf.io.gfile.stat(shard).length
            except tf.errors.NotFoundError:
                raise DataError(f"The shard {shard} listed in the manifest is missing. {received('source', root)}"
                                ) from None
            if size != entry["bytes"]:
                raise DataError(f"The shard {shard} has {size:,} bytes, the manifest says {entry['bytes']:,}: it "
                                f"changed since it was written. {received('source', root)}")
    return manifest


def _load_shards(root, size, channels, seed) -> Splits:
    """Reads a shard folder: the training files interleaved in parallel (in an order `seed`
    fixes), the evaluation splits in the order written; images decoded at reduced size."""
    root = os.fspath(root)
    manifest = read_manifest(root)
    stored = tuple(manifest["image_shape"])
    out_channels = channels or stored[-1]
    features = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}

    exact = tuple(stored[:2]) == tuple(size)

    def parse(record):
        example = tf.io.parse_single_example(record, features)
        # Read at the size written: decode only, 3.5-3.9x the plain folder pipeline (RESULTS.md);
        # `decode_resized` would not resize either, but its header read and branches cost 10-20%.
        if exact:
            image = tf.ensure_shape(tf.io.decode_jpeg(example["image"], channels=stored[-1]), stored)
            return _set_channels(image, out_channels), example["label"]
        return decode_resized(example["image"], out_channels, size), example["label"]

    def split(name: str) -> tf.data.Dataset:
        files = [f"{root.rstrip('/')}/{entry['name']}" for entry in manifest["splits"][name]["files"]]
        if name == "train":
            files = [files[i] for i in np.random.default_rng(seed).permutation(len(files))]
        if not files:
            return tf.data.Dataset.from_tensor_slices((tf.zeros([0, *size, out_channels], tf.uint8),
                                                       tf.zeros([0], tf.int64)))
        if name == "train":  # parallel reads, interleaved in a fixed order
            ds = tf.data.Dataset.from_tensor_slices(files).interleave(
                tf.data.TFRecordDataset, cycle_length=min(len(files), 8), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
        else:  # evaluation splits in the order they were written
            ds = tf.data.TFRecordDataset(files)
        # The manifest knows the count: pipelines (epoch lengths, pruning schedules) need it.
        ds = ds.apply(tf.data.experimental.assert_cardinality(int(manifest["splits"][name]["count"])))
        return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    info = DatasetInfo(
        name=root, num_classes=len(manifest["class_names"]), image_shape=(size[0], size[1], int(out_channels)),
        class_names=tuple(manifest["class_names"]),
        num_examples={name: int(manifest["splits"][name]["count"]) for name in ("train", "val", "test")},
    )
    return Splits(split("train"), split("val"), split("test"), info)


def _is_arrays(source: Any) -> bool:
    return isinstance(source, Mapping) or (isinstance(source, tuple) and len(source) == 2)


for _source in (
    Source("digits", "digits", lambda s: isinstance(s, str) and s == "digits",
           lambda s, size, ch, val, test, seed, *_: _load_digits(size, ch, val, test, seed),
           augment="digits"),  # no flips: a mirrored 2 is not a 2
    Source("tfds", "tfds:<name>", lambda s: isinstance(s, str) and s.startswith("tfds:"),
           lambda s, size, ch, val, test, seed, data_dir, try_gcs, download: _load_tfds(
               s[len("tfds:"):], size, ch, val, seed, data_dir, try_gcs, download)),
    Source("shards", "<shard folder (tfimgopt data shard)>", is_shard_folder,
           lambda s, size, ch, val, test, seed, *_: _load_shards(s, size, ch, seed)),
    Source("folder", "<folder of class subfolders>",
           lambda s: isinstance(s, str | os.PathLike) and os.path.isdir(s) and not is_shard_folder(s),
           lambda s, size, ch, val, test, seed, *_: _load_folder(os.fspath(s), size, ch, val, test, seed)),
    Source("arrays", "(images, labels) arrays", _is_arrays,
           lambda s, size, ch, val, test, seed, *_: _load_arrays(s, size, ch, val, test, seed)),
    Source("npz", "<file.npz>", lambda s: isinstance(s, str | os.PathLike) and os.fspath(s).endswith(".npz")
           and os.path.isfile(s),
           lambda s, size, ch, val, test, seed, *_: _load_arrays(_load_npz(os.fspath(s)), size, ch, val, test, seed,
                                                                 name=os.fspath(s))),
    Source("dataset", "tf.data.Dataset of (image, label)", lambda s: isinstance(s, tf.data.Dataset),
           lambda s, size, ch, val, test, seed, *_: _load_arrays(_dataset_arrays(s), size, ch, val, test, seed,
                                                                 name="dataset")),
):
    register_source(_source)
