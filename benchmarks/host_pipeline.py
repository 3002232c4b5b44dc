"""Can one host core keep an accelerator fed? JPEG photos to augmented 224x224 batches, first epoch.

Writes `--images` JPEG files of `--size` (default 640x480, quality 90) made offline from
scikit-learn's two bundled photos (random crops, resized up), in 4 class folders, then times
two uncached passes (every image read and decoded every epoch, as on data larger than host
memory; the files themselves sit in the OS page cache) of three pipelines, each without and
with the default augmentation, after a short warm-up on the same iterator (tracing and XLA
compilation are not what a long training pays):

- plain: what a user writes, `read_file -> decode_jpeg -> tf.image.resize (bilinear) -> batch 64
  -> prefetch` (no antialiasing: it aliases when shrinking 3x);
- ours, folder: `load_dataset(folder, image_size=224)` + `build_pipeline(cache=False)` (JPEGs
  decoded at reduced size, then bilinear-resized by less than 2x);
- ours, shards: the folder written once with `write_shards` (224 px JPEGs in TFRecords), then
  `load_dataset(shards)` + `build_pipeline(cache=False)` (decoded at the written size, no resize).

Each figure comes from a fresh process pinned to 1 core or to every core; the pipelines are
timed in `--rounds` interleaved rounds (this host's speed drifts) and the median is reported,
with ratios to the plain pipeline of the same round. The rate a TPU v5e-1 needs is an estimate
(see RESULTS.md): MobileNetV2 at 224 costs 300M multiply-adds forward, about 1.8 GFLOP per
training image; a v5e chip peaks at 197 bf16 TFLOPS and its single-chip VM has 24 vCPUs; at
10-25% of peak it trains 11,000-27,000 images/s.

Usage: python benchmarks/host_pipeline.py [--images 600] [--rounds 3] [--plot benchmarks/host_pipeline.png]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

PEAK_TFLOPS, FLOP_PER_IMAGE, HOST_VCPUS = 197.0, 1.8e9, 24
UTILIZATION = (0.10, 0.25)
PIPELINES = ("plain", "ours, folder", "ours, shards")
TARGET = 224


def write_images(root: str, count: int, size: tuple[int, int]) -> None:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(0)
    photos = load_sample_images().images
    for i in range(count):
        photo = photos[i % 2]
        h, w = photo.shape[:2]
        side = int(rng.integers(200, min(h, w)))
        top, left = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
        crop = Image.fromarray(photo[top:top + side, left:left + side]).resize(size, Image.BICUBIC)
        folder = os.path.join(root, f"class{i % 4}")
        os.makedirs(folder, exist_ok=True)
        crop.save(os.path.join(folder, f"{i:05d}.jpg"), quality=90)


def _plain(root: str, augment):
    import glob

    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(root, "*", "*.jpg")))

    def load(path):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        return tf.cast(tf.image.resize(image, (TARGET, TARGET)), tf.uint8)

    ds = tf.data.Dataset.from_tensor_slices(files).repeat().map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(64)
    if augment is not None:
        ds = ds.map(lambda x: augment(x, training=True), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def measure(source: str, pipeline: str, with_augmentation: bool, passes: int = 2) -> float:
    """Images per second over `passes` uncached passes (every image read and decoded each time),
    after 3 warm-up batches on the same iterator (tracing, XLA compilation, thread pools)."""
    from tfimgopt.augment import create_augmentation
    from tfimgopt.data import build_pipeline, load_dataset

    augment = create_augmentation("default", seed=0) if with_augmentation else None
    if pipeline == "plain":
        ds = _plain(source, augment)
    else:
        splits = load_dataset(source, image_size=TARGET, channels=3, val_fraction=0.0, test_fraction=0.0)
        ds = build_pipeline(splits.train, 64, training=True, cache=False, augment=augment, repeat=True,
                            shuffle_buffer=64)
    iterator = iter(ds)
    for _ in range(3):
        next(iterator)
    batches = max(1, passes * _count(source) // 64)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * 64 / (time.perf_counter() - start)


def _count(source: str) -> int:
    if os.path.isfile(os.path.join(source, "tfimgopt-shards.json")):
        import json

        return json.load(open(os.path.join(source, "tfimgopt-shards.json")))["splits"]["train"]["count"]
    return sum(len(files) for _, _, files in os.walk(source))


def _child(source: str, pipeline: str, augment: bool, cores: int) -> float:
    """Measures in a fresh process pinned to `cores` cores (TensorFlow sizes its thread pools at start)."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = (f"import os, sys; os.sched_setaffinity(0, set(range({cores}))); sys.path.insert(0, {here!r}); "
            f"import host_pipeline as h; print(h.measure({source!r}, {pipeline!r}, {augment!r}))")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def needed_per_core() -> tuple[float, float]:
    low, high = (PEAK_TFLOPS * 1e12 * u / FLOP_PER_IMAGE for u in UTILIZATION)
    return low / HOST_VCPUS, high / HOST_VCPUS


def plot(rates: dict, cores: list[int], path: str) -> None:
    import numpy as np
    from _figures import finish, save, subplots

    fig, ax = subplots(figsize=(8, 4.5))
    labels = [f"{p}{' + aug' if a else ''}" for a in (False, True) for p in PIPELINES]
    width = 0.8 / len(cores)
    for i, n in enumerate(cores):
        per_core = [rates[(p, a, n)] / n for a in (False, True) for p in PIPELINES]
        ax.bar(np.arange(len(labels)) + i * width, per_core, width, label=f"{n} core(s), per core")
    low, high = needed_per_core()
    ax.axhspan(low, high, color="red", alpha=0.15, label="needed per host core, TPU v5e-1 MobileNetV2 (est.)")
    ax.set_xticks(np.arange(len(labels)) + width * (len(cores) - 1) / 2, labels, rotation=20, ha="right")
    finish(ax, ylabel="images / s per core", title=f"First epoch from JPEG files -> {TARGET}x{TARGET}, no cache",
           grid_axis="y", legend_size=8)
    save(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--size", default="640x480", help="width x height of the JPEG files")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    cores = sorted({1, len(os.sched_getaffinity(0))})
    low, high = needed_per_core()
    print(f"cores: {cores[-1]}; needed by a TPU v5e-1 training MobileNetV2 at 224 (est., 10-25% of peak): "
          f"{low * HOST_VCPUS:,.0f}-{high * HOST_VCPUS:,.0f} img/s = {low:,.0f}-{high:,.0f} per host core")
    samples: dict[tuple, list[float]] = {}
    ratios: dict[tuple, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder, shards = os.path.join(tmp, "photos"), os.path.join(tmp, "shards")
        write_images(folder, args.images, (width, height))
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs)
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from tfimgopt.data import write_shards

        began = time.perf_counter()
        write_shards(folder, shards, image_size=TARGET, val_fraction=0.0, test_fraction=0.0, log=lambda _: None)
        written = time.perf_counter() - began
        print(f"{args.images} JPEG files {width}x{height}, {size / args.images / 1024:.0f} KiB each; shards written "
              f"once in {written:.1f} s ({args.images / written:.0f} img/s, all cores)")
        sources = {"plain": folder, "ours, folder": folder, "ours, shards": shards}
        for r in range(args.rounds):
            for n in cores:
                for augment in (False, True):
                    got = {p: _child(sources[p], p, augment, n) for p in PIPELINES}
                    for p, rate in got.items():
                        samples.setdefault((p, augment, n), []).append(rate)
                        ratios.setdefault((p, augment, n), []).append(rate / got["plain"])
            print(f"round {r + 1}/{args.rounds} done", flush=True)
    rates = {key: statistics.median(values) for key, values in samples.items()}
    print("\n| pipeline | augmentation | " + " | ".join(f"{n} core(s) img/s" for n in cores)
          + " | x plain (" + ", ".join(f"{n} core" for n in cores) + ") | per core (1 core) vs needed |")
    print("|---|---|" + "---:|" * (len(cores) + 2))
    for augment in (False, True):
        for p in PIPELINES:
            one = rates[(p, augment, 1)]
            print(f"| {p} | {'default' if augment else 'none'} | "
                  + " | ".join(f"{rates[(p, augment, n)]:,.0f}" for n in cores) + " | "
                  + ", ".join(f"{statistics.median(ratios[(p, augment, n)]):.2f}x" for n in cores)
                  + f" | {one / high:.2f}-{one / low:.2f}x |")
    if args.plot:
        plot(rates, cores, args.plot)
        print(f"\nfigure: {args.plot}")


if __name__ == "__main__":
    main()
