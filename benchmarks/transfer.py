"""Does a pretrained backbone pay with few labels? Transfer learning on the digits, offline.

The mechanism of ImageNet fine-tuning, without a download: a backbone (`small_cnn`) is
pretrained on digits 0-4 (the source task, all their training images, `digits`
augmentation). The target task is digits 5-9 with only 10, 30 or 100 labelled images per
class. Each labelled set is trained three ways, with the same number of optimizer steps,
the same augmentation and the same batch size:

- scratch: random weights, every layer trained (Adam, `--lr`).
- head only: the pretrained convolutions frozen, a new head (`--head`: small_cnn's `fc`
  and `classifier`) trained (`fine_tune` with `epochs=0`): feature extraction.
- fine-tuned: `tfimgopt.training.fine_tune`, the two-phase recipe: the new head first (a
  third of the steps), then the top `--unfreeze` convolutions too at a `--ft-lr-ratio`
  lower, cosine-decayed learning rate.

The pretrained weights go through `create_model(..., weights=path)`, the zoo's loading
code; the head's layers are then re-initialised (the target's 5 classes are other digits,
and small_cnn's `fc` is as task-specific as its classifier).
Accuracy is on the held-out digits 5-9 (30% of each class, never seen in training).
Each seed re-splits the data, re-pretrains the backbone and redraws the labelled sets.

Usage: python benchmarks/transfer.py [--seeds 3] [--labels 10 30 100] [--steps 300]
       [--pretrain-epochs 20] [--head fc classifier] [--unfreeze 2] [--ft-lr-ratio 3]
       [--plot benchmarks/transfer.png]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from tfimgopt.augment import create_augmentation
from tfimgopt.compat import keras, tf
from tfimgopt.data import build_pipeline, load_dataset
from tfimgopt.distill import student_accuracy
from tfimgopt.models import create_model
from tfimgopt.training import fine_tune, train

BATCH = 32
SOURCE = (0, 1, 2, 3, 4)
TARGET = (5, 6, 7, 8, 9)
WAYS = ("scratch", "head only", "fine-tuned")


def _arrays(dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    images, labels = zip(*dataset.as_numpy_iterator(), strict=True)
    return np.stack(images), np.asarray(labels)


def _pick(images, labels, classes, per_class, rng):
    """`per_class` images of each class (all of them when None), relabelled 0..len(classes)-1."""
    keep = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        keep += list(idx if per_class is None else rng.choice(idx, per_class, replace=False))
    keep = np.asarray(keep)
    return images[keep], np.searchsorted(classes, labels[keep])


def _epoch_data(images, labels, steps_per_epoch, seed):
    """A finite dataset whose one pass is `steps_per_epoch` augmented batches (small sets repeat)."""
    reps = max(1, -(-steps_per_epoch * BATCH // len(images)))
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).repeat(reps).take(steps_per_epoch * BATCH)
    return build_pipeline(ds, BATCH, training=True, seed=seed, augment=create_augmentation("digits", seed=seed))


def _new_head(model: keras.Model, head: list[str], seed: int) -> None:
    init = keras.initializers.GlorotUniform(seed=seed)
    for name in head:
        layer = model.get_layer(name)
        kernel, bias = layer.get_weights()
        layer.set_weights([init(kernel.shape).numpy(), np.zeros_like(bias)])


def run_seed(seed: int, labels_per_class: list[int], steps: int, pretrain_epochs: int, lr: float, unfreeze: int,
             folder: str, head: list[str], ratio: float) -> dict[int, dict[str, float]]:
    splits = load_dataset("digits", image_size=32, seed=seed, val_fraction=0.0, test_fraction=0.3)
    train_x, train_y = _arrays(splits.train)
    test_x, test_y = _arrays(splits.test)
    shape = splits.info.image_shape
    rng = np.random.default_rng(seed)
    source_x, source_y = _pick(train_x, train_y, SOURCE, None, rng)
    test_ds = build_pipeline(tf.data.Dataset.from_tensor_slices(_pick(test_x, test_y, TARGET, None, rng)), 512)

    keras.utils.set_random_seed(seed)
    backbone = create_model("small_cnn", shape, len(SOURCE))
    train(backbone, build_pipeline(tf.data.Dataset.from_tensor_slices((source_x, source_y)), BATCH, training=True,
                                   seed=seed, augment=create_augmentation("digits", seed=seed)),
          epochs=pretrain_epochs, learning_rate=lr, verbose=0)
    weights = os.path.join(folder, f"digits0-4_seed{seed}.h5")
    backbone.save_weights(weights)
    print(f"  seed {seed}: backbone on digits 0-4 ({len(source_x)} images), "
          f"accuracy on held-out 0-4: {_source_accuracy(backbone, test_x, test_y):.4f}", flush=True)

    out: dict[int, dict[str, float]] = {}
    epoch_steps = max(1, steps // 15)  # 15 "epochs" of equal length: 5 head + 10 fine-tuning
    for n in labels_per_class:
        x, y = _pick(train_x, train_y, TARGET, n, np.random.default_rng([seed, n]))
        data = _epoch_data(x, y, epoch_steps, seed)
        row = {}
        for way in WAYS:
            keras.utils.set_random_seed(seed + 1)  # the same new classifier for all three
            if way == "scratch":
                model = create_model("small_cnn", shape, len(TARGET))
                train(model, data, epochs=15, learning_rate=lr, verbose=0)
            else:
                model = create_model("small_cnn", shape, len(TARGET), weights=weights)
                _new_head(model, head, seed + 1)
                if way == "head only":
                    fine_tune(model, data, head=head, head_epochs=15, epochs=0, learning_rate=lr, verbose=0)
                else:
                    fine_tune(model, data, head=head, head_epochs=5, epochs=10, unfreeze=unfreeze, learning_rate=lr,
                              fine_tune_learning_rate=lr / ratio, verbose=0)
            row[way] = float(student_accuracy(model, test_ds))
        out[n] = row
        print(f"  seed {seed}, {n} labels/class: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)
    return out


def _source_accuracy(model, test_x, test_y) -> float:
    x, y = _pick(test_x, test_y, SOURCE, None, np.random.default_rng(0))
    return float(student_accuracy(model, build_pipeline(tf.data.Dataset.from_tensor_slices((x, y)), 512)))


def plot(results: dict[int, dict[int, dict[str, float]]], path: str) -> None:
    from _figures import finish, save, subplots

    labels = sorted(next(iter(results.values())))
    fig, ax = subplots(figsize=(6, 4))
    for way, marker in zip(WAYS, "osD", strict=True):
        values = np.array([[results[s][n][way] for n in labels] for s in results])
        ax.errorbar(labels, values.mean(0), yerr=values.std(0), marker=marker, capsize=3, label=way)
    ax.set_xscale("log")
    ax.set_xticks(labels, [str(n) for n in labels])
    finish(ax, xlabel="labelled images per class (digits 5-9)", ylabel="test accuracy",
           title=f"Transfer from digits 0-4 ({len(results)} seeds, mean +- std)")
    save(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--labels", type=int, nargs="+", default=[10, 30, 100])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps of every target model")
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--head", nargs="+", default=["fc", "classifier"], help="layers re-initialised and trained "
                        "in phase 1")
    parser.add_argument("--unfreeze", type=int, default=2, help="layers below the head trained in phase 2")
    parser.add_argument("--ft-lr-ratio", type=float, default=3.0, help="phase 2 learning rate = --lr / this")
    parser.add_argument("--plot", default=None, help="write the accuracy-vs-labels figure here (PNG)")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, tensorflow {tf.__version__}, seeds {args.seeds}, steps {args.steps}, "
          f"labels/class {args.labels}, head {args.head}, unfreeze {args.unfreeze}, "
          f"phase-2 lr = lr / {args.ft_lr_ratio:g}")
    start = time.time()
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(args.seeds):
            results[seed] = run_seed(seed, args.labels, args.steps, args.pretrain_epochs, args.lr, args.unfreeze,
                                     folder, args.head, args.ft_lr_ratio)
    print(f"\n| labels/class | {' | '.join(WAYS)} | fine-tuned > scratch |")
    print("|---:|" + "---:|" * (len(WAYS) + 1))
    for n in args.labels:
        cells = []
        for way in WAYS:
            values = np.array([results[s][n][way] for s in results])
            cells.append(f"{values.mean():.4f} +- {values.std():.4f}")
        wins = sum(results[s][n]["fine-tuned"] > results[s][n]["scratch"] for s in results)
        print(f"| {n} | {' | '.join(cells)} | {wins}/{len(results)} seeds |")
    if args.plot:
        plot(results, args.plot)
        print(f"\nfigure: {args.plot}")
    print(f"\nwall time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
