"""Does distillation pay? Teacher vs student from scratch vs distilled students, on digits.

Setting where distillation can matter: 16x16 digits, only 300 labelled training images,
a 4-filter student. Each seed re-splits the data and retrains everything. Students get
the same number of optimizer steps. The "transfer" variant distils with alpha=0 on the
300 labelled images plus the rest of the training split, whose labels it never uses
(alpha=0 switches the hard-label term off), i.e. unlabelled images labelled by the teacher.

Usage: python benchmarks/distillation.py [--seeds 3] [--steps 1000]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from tfimgopt.compat import keras, tf
from tfimgopt.data import load_dataset, split_indices
from tfimgopt.distill import Distiller
from tfimgopt.models import create_model

BATCH = 32


def _arrays(ds):
    xs, ys = zip(*[(x.numpy(), int(y)) for x, y in ds], strict=True)
    return np.stack(xs), np.asarray(ys)


def _fit(model, x, y, steps, lr=1e-3):
    epochs = max(1, round(steps * BATCH / len(x)))
    model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, shuffle=True)
    return epochs


def _accuracy(model, x, y):
    return float((model.predict(x, batch_size=512, verbose=0).argmax(1) == y).mean())


def run_seed(seed: int, labelled: int, steps: int, teacher_epochs: int) -> dict[str, float]:
    splits = load_dataset("digits", image_size=16, seed=seed, val_fraction=0.0, test_fraction=0.2)
    x_pool, y_pool = _arrays(splits.train)
    x_test, y_test = _arrays(splits.test)
    rest, lab = split_indices(y_pool, (labelled / len(y_pool),), seed)
    x_lab, y_lab = x_pool[lab], y_pool[lab]
    x_transfer = np.concatenate([x_lab, x_pool[rest]])
    y_unused = np.concatenate([y_lab, np.zeros(len(rest), np.int64)])  # never read: alpha=0
    shape = splits.info.image_shape
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    keras.utils.set_random_seed(seed)
    base = create_model("small_cnn", shape, 10)
    augment = keras.Sequential(
        [keras.layers.RandomRotation(0.04, seed=seed), keras.layers.RandomTranslation(0.1, 0.1, seed=seed)]
    )
    trainer = keras.Sequential([keras.Input(shape), augment, base])
    trainer.compile(keras.optimizers.Adam(1e-3), ce)
    trainer.fit(x_lab, y_lab, batch_size=BATCH, epochs=teacher_epochs, verbose=0)
    results = {"teacher": _accuracy(base, x_test, y_test)}

    keras.utils.set_random_seed(seed + 1)
    scratch = create_model("tiny_cnn", shape, 10)
    scratch.compile(keras.optimizers.Adam(1e-3), ce)
    _fit(scratch, x_lab, y_lab, steps)
    results["scratch"] = _accuracy(scratch, x_test, y_test)

    variants = {
        "distilled a=0.1 T=4": (0.1, 4.0, x_lab, y_lab),
        "distilled a=0.5 T=2": (0.5, 2.0, x_lab, y_lab),
        "transfer a=0 T=4": (0.0, 4.0, x_transfer, y_unused),
    }
    for name, (alpha, temperature, x, y) in variants.items():
        keras.utils.set_random_seed(seed + 1)  # same student initialisation as scratch
        student = create_model("tiny_cnn", shape, 10)
        distiller = Distiller(base, student)
        distiller.compile(keras.optimizers.Adam(1e-3), alpha=alpha, temperature=temperature)
        _fit(distiller, x, y, steps)
        results[name] = _accuracy(student, x_test, y_test)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--labelled", type=int, default=300)
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps per student")
    parser.add_argument("--teacher-epochs", type=int, default=40)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, tensorflow {tf.__version__}, seeds {args.seeds}")
    start = time.time()
    rows: dict[str, list[float]] = {}
    for seed in range(args.seeds):
        result = run_seed(seed, args.labelled, args.steps, args.teacher_epochs)
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()), flush=True)
        for k, v in result.items():
            rows.setdefault(k, []).append(v)
    teacher = np.mean(rows["teacher"])
    scratch = np.asarray(rows["scratch"])
    print(f"\n| model | accuracy (mean +- std over {args.seeds} seeds) | vs scratch, every seed | gap closed |")
    print("|---|---:|---:|---:|")
    for name, values in rows.items():
        values = np.asarray(values)
        line = f"| {name} | {values.mean():.4f} +- {values.std():.4f} |"
        if name in ("teacher", "scratch"):
            line += " | |"
        else:
            wins = int((values > scratch).sum())
            gap = (values.mean() - scratch.mean()) / (teacher - scratch.mean())
            line += f" {wins}/{len(values)} better | {gap:+.0%} |"
        print(line)
    print(f"\nwall time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
