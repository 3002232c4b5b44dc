"""Can one host core keep an accelerator fed? The real input pipeline, from PNG files to batches.

Writes `--images` PNG files (256x256 RGB, smooth colour fields with noise and shapes, so
they compress and decode like photos rather than like noise) into class folders, then
times the pipeline a `tfimgopt run` on that folder builds, stage by stage, without the
cache (every image decoded every epoch, as on a dataset larger than host memory):

1. read + decode PNG + resize to 224x224 (`load_dataset(folder)`);
2. + batch 64 + prefetch (`build_pipeline(training=True)`, no augmentation);
3. + the default augmentation policy (`build_pipeline(..., augment=...)`).

Each stage is measured with the process pinned to 1 core and to every core. The rate a TPU
v5e-1 needs is stated as an estimate (see RESULTS.md): MobileNetV2 at 224 costs 300M
multiply-adds forward (Sandler et al. 2018), so about 1.8 GFLOP per training image
(forward + backward = 3x forward, 2 FLOP per multiply-add); a v5e chip peaks at 197 bf16
TFLOPS (Google Cloud, "TPU v5e" documentation) and its single-chip VM (ct5lp-hightpu-1t)
has 24 vCPUs. At 10-25% of peak, the chip trains 11,000-27,000 images/s.

Usage: python benchmarks/host_pipeline.py [--images 512] [--batches 20] [--plot benchmarks/host_pipeline.png]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

PEAK_TFLOPS, FLOP_PER_IMAGE, HOST_VCPUS = 197.0, 1.8e9, 24
UTILIZATION = (0.10, 0.25)
STAGES = ("decode + resize", "+ batch + prefetch", "+ default augmentation")


def write_images(root: str, count: int, size: int = 256) -> None:
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(count):
        folder = os.path.join(root, f"class{i % 4}")
        os.makedirs(folder, exist_ok=True)
        a, b, c = rng.uniform(0, 1, 3)
        field = np.stack([np.sin(6 * a * xx + 3 * b * yy), np.cos(5 * b * yy + 2 * c * xx), np.sin(4 * c * (xx + yy))],
                         axis=-1)
        pixels = np.clip(127 + 100 * field + rng.normal(0, 6, field.shape), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        for _ in range(4):
            x0, y0 = rng.integers(0, size - 40, 2)
            draw.ellipse([x0, y0, x0 + rng.integers(20, 120), y0 + rng.integers(20, 120)],
                         fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        image.save(os.path.join(folder, f"{i:05d}.png"))


def measure(root: str, stage: int, batches: int) -> float:
    """Images per second of one stage of the pipeline (run in this process)."""
    from tfimgopt.augment import create_augmentation
    from tfimgopt.data import build_pipeline, load_dataset

    splits = load_dataset(root, image_size=224, channels=3, val_fraction=0.0, test_fraction=0.0)
    if stage == 0:
        ds = splits.train.repeat()
        per = 1
    else:
        augment = create_augmentation("default", seed=0) if stage == 2 else None
        ds = build_pipeline(splits.train, 64, training=True, cache=False, augment=augment, repeat=True)
        per = 64
    count = batches * (64 if stage == 0 else 1)
    iterator = iter(ds)
    for _ in range(max(2, count // 5)):  # warm-up: tracing, XLA compilation, autotuning
        next(iterator)
    start = time.perf_counter()
    for _ in range(count):
        next(iterator)
    return count * per / (time.perf_counter() - start)


def _child(root: str, stage: int, batches: int, cores: int) -> float:
    """Measures in a fresh process pinned to `cores` cores (TensorFlow sizes its thread pools at start)."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = (f"import os, sys; os.sched_setaffinity(0, set(range({cores}))); sys.path.insert(0, {here!r}); "
            f"import host_pipeline as h; print(h.measure({root!r}, {stage}, {batches}))")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def needed_per_core() -> tuple[float, float]:
    low, high = (PEAK_TFLOPS * 1e12 * u / FLOP_PER_IMAGE for u in UTILIZATION)
    return low / HOST_VCPUS, high / HOST_VCPUS


def plot(rates: dict[int, list[float]], path: str) -> None:
    import numpy as np
    from _figures import finish, save, subplots

    fig, ax = subplots(figsize=(7, 4))
    width = 0.8 / len(rates)
    for i, (cores, values) in enumerate(sorted(rates.items())):
        per_core = [v / cores for v in values]
        ax.bar(np.arange(len(STAGES)) + i * width, per_core, width, label=f"{cores} core(s), per core")
    low, high = needed_per_core()
    ax.axhspan(low, high, color="red", alpha=0.15, label="needed per host core, TPU v5e-1 MobileNetV2 (est.)")
    ax.set_xticks(np.arange(len(STAGES)) + width * (len(rates) - 1) / 2, STAGES)
    finish(ax, ylabel="images / s per core", title="Input pipeline from PNG files, 224x224, no cache",
           grid_axis="y", legend_size=8)
    save(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batches", type=int, default=20, help="timed batches of 64 per stage")
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    low, high = needed_per_core()
    print(f"cores: {cores}; needed by a TPU v5e-1 training MobileNetV2 at 224 (est., 10-25% of peak): "
          f"{low * HOST_VCPUS:,.0f}-{high * HOST_VCPUS:,.0f} img/s = {low:,.0f}-{high:,.0f} per host core "
          f"({HOST_VCPUS} vCPUs)")
    rates: dict[int, list[float]] = {}
    with tempfile.TemporaryDirectory() as root:
        write_images(root, args.images)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)
        print(f"{args.images} PNG files, 256x256 RGB, {size / args.images / 1024:.0f} KiB each on average")
        for n in sorted({1, cores}):
            rates[n] = [_child(root, stage, args.batches, n) for stage in range(len(STAGES))]
    print("\n| stage | " + " | ".join(f"{n} core(s) img/s" for n in sorted(rates)) + " | per core (1 core) | "
          "vs needed per core |")
    print("|---|" + "---:|" * (len(rates) + 2))
    for i, stage in enumerate(STAGES):
        one = rates[1][i]
        print(f"| {stage} | " + " | ".join(f"{rates[n][i]:,.0f}" for n in sorted(rates)) +
              f" | {one:,.0f} | {one / high:.2f}-{one / low:.2f}x |")
    if args.plot:
        plot(rates, args.plot)
        print(f"\nfigure: {args.plot}")


if __name__ == "__main__":
    main()
