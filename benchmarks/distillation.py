"""Does distillation pay? Teacher vs students from scratch vs distilled students, on digits.

Setting where distillation can matter: 16x16 digits, only 300 labelled training images,
a 4-filter student (`tiny_cnn`), while the rest of the training split (~840 images) is
available without labels. Each seed re-splits the data and retrains everything; every
student gets the same number of optimizer steps and the same initialisation.

Students:
- scratch: hard labels, the 300 labelled images.
- scratch + aug: the same with the `digits` augmentation policy (a fairer baseline for
  the augmented variants).
- distilled: Distiller on the 300 labelled images only.
- transfer: Distiller on the 300 labelled + the unlabelled images (label mask: only the
  distillation term for those).
- transfer + aug: the same, with the `digits` augmentation; the teacher sees each
  augmented image too ("consistent" teaching, Beyer et al. 2022).
- transfer + aug + feature: the same, plus feature distillation from the teacher's
  `conv2` to the student's `conv1` (both at full resolution; a learned 1x1 projection
  widens the student's 4 channels to the teacher's 32), weighted `--feature-weight`.
- tuned: `tune_distillation` (successive halving over alpha x temperature) on the
  transfer + aug setting, picked on a labelled validation split of 10% of the data.

Usage: python benchmarks/distillation.py [--seeds 3] [--first-seed 0] [--steps 6000] [--alpha 0] [--temperature 4]
       [--feature-weight 0.25] [--variants ...]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from tfimgopt.augment import create_augmentation
from tfimgopt.compat import keras, tf
from tfimgopt.data import build_pipeline, hold_out_labels, load_dataset, with_unlabelled
from tfimgopt.distill import distill, student_accuracy, tune_distillation
from tfimgopt.models import create_model
from tfimgopt.training import train

BATCH = 32


def _epochs(steps: int, examples: int) -> int:
    return max(1, round(steps * BATCH / examples))


def run_seed(seed: int, labelled: int, steps: int, teacher_epochs: int, alpha: float, temperature: float,
             variants: list[str], feature_weight: float = 0.25) -> dict[str, float]:
    splits = load_dataset("digits", image_size=16, seed=seed, val_fraction=0.1, test_fraction=0.2)
    lab, unlab = hold_out_labels(splits.train, labelled, seed=seed)
    n_unlab = int(unlab.cardinality())
    transfer = with_unlabelled(lab, unlab)
    shape = splits.info.image_shape
    test_ds = build_pipeline(splits.test, 512)
    val_ds = build_pipeline(splits.val, 512)

    def pipeline(ds, augment):
        aug = create_augmentation("digits", seed=seed) if augment else None
        return build_pipeline(ds, BATCH, training=True, seed=seed, augment=aug)

    def student():
        keras.utils.set_random_seed(seed + 1)  # the same initialisation for every student
        return create_model("tiny_cnn", shape, 10)

    keras.utils.set_random_seed(seed)
    teacher = create_model("small_cnn", shape, 10)
    train(teacher, pipeline(lab, True), epochs=teacher_epochs, verbose=0)
    results = {"teacher": student_accuracy(teacher, test_ds)}

    for name in variants:
        if name.startswith("scratch"):
            model = student()
            data = pipeline(lab, name.endswith("aug"))
            train(model, data, epochs=_epochs(steps, labelled), verbose=0)
        elif name == "tuned":
            data = pipeline(transfer, True)
            result = tune_distillation(
                teacher, student, data, val_ds, alphas=(0.0, 0.5), temperatures=(1.0, 2.0, 4.0),
                epochs=_epochs(steps, labelled + n_unlab), method="halving", seed=seed + 1, verbose=0,
            )
            model = result.student
            name = f"tuned (a={result.alpha:g}, T={result.temperature:g})"
        else:
            examples = lab if name == "distilled" else transfer
            data = pipeline(examples, "aug" in name)
            count = labelled if name == "distilled" else labelled + n_unlab
            losses = [{"type": "logits"}]
            if name.endswith("feature"):
                losses.append({"type": "feature", "teacher_layer_name": "conv2", "student_layer_name": "conv1",
                               "weight": feature_weight})
            model = distill(teacher, student, data, epochs=_epochs(steps, count), alpha=alpha,
                            temperature=temperature, verbose=0, losses=losses)
        results[name] = student_accuracy(model, test_ds)
    return results


VARIANTS = ["scratch", "scratch + aug", "distilled", "transfer", "transfer + aug", "transfer + aug + feature",
            "tuned"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run are first-seed .. first-seed+seeds-1")
    parser.add_argument("--labelled", type=int, default=300)
    parser.add_argument("--steps", type=int, default=6000, help="optimizer steps per student")
    parser.add_argument("--teacher-epochs", type=int, default=150)
    parser.add_argument("--alpha", type=float, default=0.0)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--feature-weight", type=float, default=0.25)
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, tensorflow {tf.__version__}, seeds {args.seeds}, steps {args.steps}, "
          f"alpha {args.alpha}, T {args.temperature}, feature weight {args.feature_weight}")
    start = time.time()
    rows: dict[str, list[float]] = {}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        result = run_seed(seed, args.labelled, args.steps, args.teacher_epochs, args.alpha, args.temperature,
                          args.variants, args.feature_weight)
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()), flush=True)
        for k, v in result.items():
            rows.setdefault(k.split(" (")[0], []).append(v)
    teacher = np.mean(rows["teacher"])
    reference = max((np.asarray(rows[k]) for k in ("scratch", "scratch + aug") if k in rows),
                    key=lambda v: v.mean())
    print(f"\n| model | accuracy (mean +- std, {args.seeds} seeds) | better than best scratch | gap closed |")
    print("|---|---:|---:|---:|")
    for name, values in rows.items():
        values = np.asarray(values)
        line = f"| {name} | {values.mean():.4f} +- {values.std():.4f} |"
        if name == "teacher" or name.startswith("scratch"):
            line += " | |"
        else:
            wins = int((values > reference).sum())
            gap = (values.mean() - reference.mean()) / (teacher - reference.mean())
            line += f" {wins}/{len(values)} seeds | {gap:+.0%} |"
        print(line)
    print(f"\nwall time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
