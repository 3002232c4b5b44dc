"""Training throughput on a GPU (or whatever this machine has): one table for RESULTS.md.

Ready to run unchanged the moment a GPU is lent: `python benchmarks/accelerator.py`. It
measures images per second of `tfimgopt.training.train` (the toolkit's own loop, so what
users get) on synthetic 224x224x3 uint8 images held in memory (the input pipeline is not
what is measured here; `benchmarks/host_pipeline.py` measures that):

- small_cnn, MobileNetV2 and ResNet50, each in float32 and mixed precision (mixed_float16
  on GPUs, mixed_bfloat16 on TPUs, nothing on a CPU);
- with and without XLA (`jit_compile`);
- augmentation (the default policy) placed in the tf.data pipeline vs inside the model;
- the Distiller (ResNet50 teacher -> MobileNetV2 student), steps per second;
- one device vs all of them (MirroredStrategy over every GPU; skipped with one GPU).

Each row: a warm-up fit (tracing, compilation, autotuning), then `--steps` timed steps.
Ratios are against the float32, no-XLA, one-device row of the same model. `--smoke` runs
every code path at 32x32 with a few steps (the test suite runs it on the CPU so the script
cannot rot before a GPU arrives).

Usage: python benchmarks/accelerator.py [--steps 50] [--batch 64] [--models small_cnn mobilenet_v2 resnet50]
       [--smoke] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from tfimgopt.augment import augmented_model, create_augmentation
from tfimgopt.compat import keras, tf
from tfimgopt.distill import Distiller
from tfimgopt.distribute import create_strategy, set_precision, strategy_kind
from tfimgopt.models import create_model
from tfimgopt.training import train

MODELS = ("small_cnn", "mobilenet_v2", "resnet50")


def _data(size: int, batch: int, augment: bool, seed: int = 0) -> tf.data.Dataset:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (batch * 2, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, 10, batch * 2)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch, drop_remainder=True).repeat()
    if augment:
        aug = create_augmentation("default", seed=seed)
        ds = ds.map(lambda a, b: (aug(a, training=True), b), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _mixed(kind: str) -> str:
    return {"gpu": "mixed_float16", "tpu": "mixed_bfloat16"}.get(kind, "")


def measure(model_name: str, size: int, batch: int, steps: int, strategy, *, precision: str, xla: bool,
            augment: str, distil: bool = False) -> float:
    """Images per second over `steps` timed training steps (after a warm-up epoch)."""
    set_precision(precision or "float32")
    try:
        def build():
            keras.utils.set_random_seed(0)
            model = create_model(model_name, (size, size, 3), 10)
            if augment == "model":
                model = augmented_model(model, create_augmentation("default", seed=0))
            return model

        global_batch = batch * strategy.num_replicas_in_sync
        data = _data(size, global_batch, augment == "data")
        warmup = max(2, steps // 5)
        with strategy.scope():
            if distil:
                keras.utils.set_random_seed(0)
                teacher = create_model("resnet50", (size, size, 3), 10)
                model = Distiller(teacher, build())
                model.compile(keras.optimizers.Adam(1e-3), jit_compile=xla)
            else:
                model = build()
        if distil:
            model.fit(data.take(warmup), epochs=1, verbose=0)  # tracing, XLA compilation, tf.data autotuning
        else:
            train(model, data.take(warmup), epochs=1, strategy=strategy, jit_compile=xla, verbose=0)
        start = time.perf_counter()
        if distil:
            model.fit(data.take(steps), epochs=1, verbose=0)
        else:  # the same compiled step: compile_model=False keeps the traced function
            train(model, data.take(steps), epochs=1, strategy=strategy, compile_model=False, verbose=0)
        return steps * global_batch / (time.perf_counter() - start)
    finally:
        set_precision("float32")


def rows_to_run(models, kind: str, devices: int) -> list[dict]:
    mixed = _mixed(kind)
    rows = []
    for name in models:
        for precision in ("", mixed) if mixed else ("",):
            for xla in (False, True):
                rows.append({"model": name, "precision": precision or "float32", "xla": xla, "augment": "none",
                             "devices": 1})
        rows.append({"model": name, "precision": mixed or "float32", "xla": False, "augment": "data", "devices": 1})
        rows.append({"model": name, "precision": mixed or "float32", "xla": False, "augment": "model", "devices": 1})
        if devices > 1:
            rows.append({"model": name, "precision": mixed or "float32", "xla": False, "augment": "none",
                         "devices": devices})
    rows.append({"model": "distiller resnet50 -> mobilenet_v2", "precision": mixed or "float32", "xla": False,
                 "augment": "none", "devices": 1})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=64, help="per-device batch")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--smoke", action="store_true", help="every path at 32x32, 3 steps (CPU check)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.batch, args.size = 3, 4, 32
    gpus = tf.config.list_physical_devices("GPU")
    one = create_strategy("one_device" if gpus else "default", verbose=False)
    kind = strategy_kind(one)
    every = create_strategy("mirrored", verbose=False) if len(gpus) > 1 else None
    names = [d.name for d in gpus] or ["CPU"]
    print(f"devices: {names} ({kind}), cores: {os.cpu_count()}, tensorflow {tf.__version__}, "
          f"{args.size}x{args.size}, batch {args.batch}/device, {args.steps} timed steps")
    rows = rows_to_run(args.models, kind, len(gpus))
    for row in rows:
        distil = row["model"].startswith("distiller")
        model = "mobilenet_v2" if distil else row["model"]
        strategy = every if row["devices"] > 1 else one
        row["images_per_s"] = measure(model, args.size, args.batch, args.steps, strategy,
                                      precision="" if row["precision"] == "float32" else row["precision"],
                                      xla=row["xla"], augment=row["augment"], distil=distil)
        row["steps_per_s"] = row["images_per_s"] / (args.batch * row["devices"])
        print(f"  {row}", flush=True)
    print("\n| model | precision | XLA | augmentation | devices | img/s | steps/s | vs float32, no XLA, 1 device |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for row in rows:
        base = next((b for b in rows if b["model"] == row["model"] and b["precision"] == "float32"
                     and not b["xla"] and b["augment"] == "none" and b["devices"] == 1), row)
        print(f"| {row['model']} | {row['precision']} | {'on' if row['xla'] else 'off'} | {row['augment']} | "
              f"{row['devices']} | {row['images_per_s']:,.0f} | {row['steps_per_s']:.2f} | "
              f"{row['images_per_s'] / base['images_per_s']:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
