"""How far float16 and dynamic-range TFLite logits drift from Keras on the zoo's models.

Each model is trained briefly on the offline digits (resized, RGB) so its logits are those
of a model that learned something, exported as float16 and dynamic range, and compared
with its Keras outputs in LiteRT on 64 test images: the relative logit difference
(max |tflite - keras| / max(1, max |keras|)) and the top-1 agreement. These numbers back
`FLOAT_TOLERANCE` / `MIN_AGREEMENT` in tfimgopt/export/tflite.py.

Usage: python benchmarks/verify_tolerance.py [--steps 40]
"""

from __future__ import annotations

import argparse
import os
import time

from tfimgopt.compat import keras
from tfimgopt.data import build_pipeline, load_dataset
from tfimgopt.export import export_tflite, verify_tflite
from tfimgopt.models import create_model
from tfimgopt.training import train

CASES = [
    ("small_cnn", 32, {}), ("small_cnn", 96, {}), ("tiny_cnn", 32, {"filters": 16}),
    ("mobilenet_v2", 32, {"alpha": 0.35}), ("mobilenet_v2", 96, {"alpha": 0.35}),
    ("mobilenet_v2", 224, {"alpha": 0.35}), ("resnet50", 32, {}), ("resnet50", 96, {}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="training steps per model (batch 32)")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}; training steps per model: {args.steps}")
    print("| model | px | mode | relative diff | max abs diff | top-1 agreement | export+verify s |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for name, size, options in CASES:
        keras.utils.set_random_seed(0)
        splits = load_dataset("digits", image_size=size, channels=3)
        train_ds = build_pipeline(splits.train, 32, training=True, seed=0).repeat().take(args.steps)
        model = create_model(name, splits.info.image_shape, 10, **options)
        train(model, train_ds, epochs=1, learning_rate=1e-3, verbose=0)
        for mode in ("float16", "dynamic"):
            began = time.monotonic()
            check = verify_tflite(export_tflite(model, mode), model, splits.test.batch(64), num_samples=64)
            print(f"| {name} | {size} | {mode} | {check['relative_diff']:.2e} | {check['max_abs_diff']:.2e} | "
                  f"{check['top1_agreement']:.3f} | {time.monotonic() - began:.1f} |", flush=True)


if __name__ == "__main__":
    main()
