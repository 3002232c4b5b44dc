"""Shards for big data: any source resized once and re-encoded into TFRecord files with a manifest,
which `load_dataset` reads back with interleaved parallel reads (local folders or `gs://`).

Decoding and resizing full-size photos, not augmentation, is what keeps a host from feeding an
accelerator (benchmarks/RESULTS.md, host pipeline): shards pay that once, and an epoch then
reads small JPEGs sequentially.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

from tfimgopt.compat import tf
from tfimgopt.data.sources import SHARD_FORMAT, SHARD_MANIFEST, is_shard_folder, load_dataset
from tfimgopt.errors import ConfigError, received

#: Default images per shard: files of ~10-30 MB at 224 px, enough of them to interleave.
IMAGES_PER_SHARD = 1024


def _gfile_entries(out: str) -> list[str]:
    try:
        return tf.io.gfile.listdir(out) if tf.io.gfile.isdir(out) else []
    except tf.errors.OpError:
        return []


def write_shards(
    source: Any,
    out: str,
    *,
    image_size: int = 224,
    channels: int | None = None,
    images_per_shard: int = IMAGES_PER_SHARD,
    quality: int = 95,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    data_dir: str | None = None,
    download: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Loads `source` (any `load_dataset` source), resizes every image to `image_size` and writes
    each split as TFRecord shards of JPEG-encoded images plus `tfimgopt-shards.json` (class
    names, image shape, per-split counts, every shard's size and the SHA-256 of its records).

    The folder must be new, empty, or one `write_shards` wrote before (its old shards are
    replaced); a non-empty folder of anything else is refused untouched. Shards are written
    under temporary names and renamed, and the manifest is written last, so an interrupted
    write never leaves a folder that reads as complete.

    Args:
        source: What `load_dataset` takes: "digits", "tfds:<name>", a folder, arrays, a `.npz`.
        out: A local folder or a `gs://bucket/path` (written through `tf.io.gfile`).
        image_size: Square size the images are stored at (read back at this size or smaller).
        channels: 1 or 3; None keeps the source's.
        images_per_shard: Images per TFRecord file.
        quality: JPEG quality of the stored images (95: about 45 dB PSNR against the pixels).
        val_fraction, test_fraction, seed: The split, as in `load_dataset` (fixed in the shards).
        data_dir, download: For TFDS sources.
        log: Where progress lines go.

    Returns:
        The manifest.

    Raises:
        ConfigError: a non-empty folder that is not a shard folder, or bad settings.

    Example:
        >>> from tfimgopt.data import load_dataset, write_shards
        >>> write_shards("tfds:tf_flowers", "gs://my-bucket/flowers224", image_size=224)  # doctest: +SKIP
        >>> splits = load_dataset("gs://my-bucket/flowers224", image_size=224)  # doctest: +SKIP
    """
    if not isinstance(images_per_shard, int) or images_per_shard < 1:
        raise ConfigError(f"images_per_shard must be an int >= 1. {received('images_per_shard', images_per_shard)}")
    if not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ConfigError(f"quality must be an int in [1, 100]. {received('quality', quality)}")
    out = os.fspath(out).rstrip("/")
    entries = _gfile_entries(out)
    ours = is_shard_folder(out)
    if entries and not ours:
        raise ConfigError(f"The shard folder is not empty and holds no {SHARD_MANIFEST}, so nothing in it is "
                          f"touched: choose a new or empty folder. {received('out', out)}")
    splits = load_dataset(source, image_size=image_size, channels=channels, val_fraction=val_fraction,
                          test_fraction=test_fraction, seed=seed, data_dir=data_dir, download=download)
    tf.io.gfile.makedirs(out)
    if ours:  # replacing an earlier write: its manifest goes first, so a half-done rewrite reads as incomplete
        old = json.loads(tf.io.gfile.GFile(f"{out}/{SHARD_MANIFEST}").read())
        tf.io.gfile.remove(f"{out}/{SHARD_MANIFEST}")
        for split in old.get("splits", {}).values():
            for entry in split.get("files", []):
                if tf.io.gfile.exists(f"{out}/{entry['name']}"):
                    tf.io.gfile.remove(f"{out}/{entry['name']}")
    manifest: dict[str, Any] = {
        "format": SHARD_FORMAT, "source": str(source) if isinstance(source, str | os.PathLike) else "in-memory data",
        "image_shape": list(splits.info.image_shape), "class_names": list(splits.info.class_names),
        "encoding": f"jpeg quality {quality}", "seed": seed, "splits": {},
    }
    for name, dataset in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        manifest["splits"][name] = _write_split(dataset, out, name, images_per_shard, quality, log)
    with tf.io.gfile.GFile(f"{out}/.{SHARD_MANIFEST}.tmp", "w") as f:
        f.write(json.dumps(manifest, indent=1))
    tf.io.gfile.rename(f"{out}/.{SHARD_MANIFEST}.tmp", f"{out}/{SHARD_MANIFEST}", overwrite=True)
    counts = {name: split["count"] for name, split in manifest["splits"].items()}
    log(f"wrote {sum(len(s['files']) for s in manifest['splits'].values())} shards to {out}: {counts} images at "
        f"{tuple(manifest['image_shape'])}")
    return manifest


def _write_split(dataset: tf.data.Dataset, out: str, name: str, per_shard: int, quality: int,
                 log: Callable[[str], None]) -> dict[str, Any]:
    def encode(image, label):
        return tf.io.encode_jpeg(image, quality=quality), label

    encoded = dataset.map(encode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    files, count, writer, shard, digest, path = [], 0, None, 0, None, ""

    def close() -> None:
        writer.close()
        final = f"{out}/{name}-{shard:05d}.tfrecord"
        tf.io.gfile.rename(path, final, overwrite=True)
        files.append({"name": os.path.basename(final), "bytes": tf.io.gfile.stat(final).length,
                      "images": in_shard, "records_sha256": digest.hexdigest()})

    in_shard = 0
    for image, label in encoded.as_numpy_iterator():
        if writer is None:
            path = f"{out}/.{name}-{shard:05d}.tfrecord.tmp"
            writer, digest, in_shard = tf.io.TFRecordWriter(path), hashlib.sha256(), 0
        example = tf.train.Example(features=tf.train.Features(feature={
            "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
        }))
        record = example.SerializeToString()
        writer.write(record)
        digest.update(record)
        count, in_shard = count + 1, in_shard + 1
        if in_shard == per_shard:
            close()
            writer, shard = None, shard + 1
    if writer is not None:
        close()
    if files:
        log(f"   {name}: {count} images in {len(files)} shard(s)")
    return {"count": count, "files": files}


__all__ = ["IMAGES_PER_SHARD", "write_shards"]
