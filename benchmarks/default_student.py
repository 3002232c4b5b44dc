"""Which student should the default run distil? Candidates against one teacher.

Distils the teacher of a finished default run (`tfimgopt run --out RUN`) into candidate
students with the run's own data, augmentation and distillation code (the `distill`
stage), varying one setting at a time, over several student initialisations (`seed`;
the data split and the teacher stay those of the run). Prints validation and test
accuracy, parameters and time per candidate, then a summary table.

Usage: python benchmarks/default_student.py RUN_DIR [--seeds 0 1 2] [--candidates NAME ...]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tfimgopt.pipeline import load_config  # noqa: E402
from tfimgopt.pipeline.context import load_model, test_accuracy  # noqa: E402
from tfimgopt.pipeline.data import prepare_data  # noqa: E402
from tfimgopt.pipeline.stages.distill import train_student  # noqa: E402

COMPACT = ["distill.student=compact_cnn", 'distill.student_options={"filters": 16}']
TINY = ["distill.student=tiny_cnn", 'distill.student_options={"filters": 16}']
FEATURE = ['distill.losses=[{"type": "logits"}, {"type": "feature", "teacher_layer_name": "conv4", '
           '"student_layer_name": "conv2", "weight": 0.5}]']
CANDIDATES = {
    "tiny16 a0.1": [*TINY, "distill.alpha=0.1"],
    "compact16 a0.1": [*COMPACT, "distill.alpha=0.1"],
    "compact16 a0.5": [*COMPACT, "distill.alpha=0.5"],
    "compact16 a0.9": [*COMPACT, "distill.alpha=0.9"],
    "compact16 a0.9 T2": [*COMPACT, "distill.alpha=0.9", "distill.temperature=2"],
    "compact16 a1 (labels only)": [*COMPACT, "distill.alpha=1.0"],
    "compact16 a0.9 25 epochs": [*COMPACT, "distill.alpha=0.9", "distill.epochs=25"],
    "compact16 a0.1 + feature": [*COMPACT, "distill.alpha=0.1", *FEATURE],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a finished default run (its models/baseline.keras is the teacher)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    args = parser.parse_args()
    base = load_config()
    data = prepare_data(base, log=lambda *_: None)
    teacher = load_model(os.path.join(args.run_dir, "models", "baseline.keras"))
    print(f"cores: {os.cpu_count()}; teacher test {test_accuracy(teacher, data.test):.4f}", flush=True)
    rows = {}
    for name in args.candidates:
        for seed in args.seeds:
            config = load_config(overrides=[f"seed={seed}", *CANDIDATES[name]])
            began = time.time()
            with tempfile.TemporaryDirectory() as work:
                student, *_ = train_student(config, data, teacher, work, log=lambda *_: None)
            accuracy = test_accuracy(student, data.test)
            rows.setdefault(name, []).append(accuracy)
            print(f"{name} seed {seed}: params {student.count_params():,} val {test_accuracy(student, data.val):.4f} "
                  f"test {accuracy:.4f} ({time.time() - began:.0f} s)", flush=True)
    print(f"\n| candidate | test accuracy, mean (min-max), {len(args.seeds)} seeds |\n|---|---:|")
    for name, values in rows.items():
        print(f"| {name} | {np.mean(values):.4f} ({min(values):.4f}-{max(values):.4f}) |")


if __name__ == "__main__":
    main()
