"""Does channel pruning make models faster? LiteRT latency of dense vs channel-pruned models.

For each model (the zoo's small_cnn, and MobileNetV2), in one run: train it dense on the
digits (32x32, the same test split for every variant), export float32 and int8 TFLite,
then for each ratio prune channels with `prune_channels_and_finetune` (L1 criterion, in
rounds with fine-tuning) and export the pruned model the same way. Every file is timed in
the LiteRT interpreter with 1 thread (median of `--runs` single-image invokes, after a
warm-up) and evaluated on the test split. Prints ratios against the dense model of the
same precision, and draws the accuracy/latency curve.

Usage: python benchmarks/channel_pruning.py [--models small_cnn mobilenet_v2] [--ratios 0.3 0.5 0.7]
       [--runs 300] [--epochs 20] [--finetune-epochs 5] [--rounds 2] [--criterion l1]
       [--plot benchmarks/channel_pruning.png]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from tfimgopt.augment import create_augmentation
from tfimgopt.compat import keras, tf
from tfimgopt.compress import count_flops, prune_channels_and_finetune
from tfimgopt.data import build_pipeline, load_dataset
from tfimgopt.export import evaluate_tflite, export_tflite
from tfimgopt.models import create_model
from tfimgopt.training import train

OPTIONS = {"small_cnn": {}, "mobilenet_v2": {}}


def measure(model: keras.Model, calibration, test_ds, folder: str, name: str, runs: int) -> dict[str, dict]:
    out = {}
    for mode in ("float32", "int8"):
        path = os.path.join(folder, f"{name}_{mode}.tflite")
        export_tflite(model, mode, calibration if mode == "int8" else None, path, num_calibration=200)
        out[mode] = evaluate_tflite(path, test_ds, num_threads=1, latency_runs=runs, warmup=20)
    return out


def run_model(name: str, ratios: list[float], epochs: int, runs: int, folder: str, finetune_epochs: int,
              rounds: int, criterion: str) -> list[dict]:
    channels = 3 if name.startswith("mobilenet") else 1
    splits = load_dataset("digits", image_size=32, channels=channels, seed=0)
    train_ds = build_pipeline(splits.train, 64, training=True, augment=create_augmentation("digits", seed=0))
    val_ds, test_ds = build_pipeline(splits.val, 256), build_pipeline(splits.test, 1)
    calibration = splits.train.map(lambda x, y: x)
    keras.utils.set_random_seed(0)
    dense = create_model(name, splits.info.image_shape, 10, **OPTIONS[name])
    train(dense, train_ds, val_ds, epochs, verbose=0)
    rows = [{"model": name, "ratio": 0.0, "params": dense.count_params(), "flops": count_flops(dense),
             **measure(dense, calibration, test_ds, folder, f"{name}_dense", runs)}]
    print(f"{name} dense: {rows[0]['params']:,} params, {rows[0]['flops']:,} MACs, "
          f"float32 {rows[0]['float32']['latency_ms_median']:.3f} ms acc {rows[0]['float32']['accuracy']:.4f}, "
          f"int8 {rows[0]['int8']['latency_ms_median']:.3f} ms acc {rows[0]['int8']['accuracy']:.4f}", flush=True)
    for ratio in ratios:
        source = keras.models.clone_model(dense)
        source.set_weights(dense.get_weights())
        result = prune_channels_and_finetune(source, train_ds, val_ds, ratio, steps=rounds, epochs=finetune_epochs,
                                             criterion=criterion, verbose=0)
        row = {"model": name, "ratio": ratio, "params": result.model.count_params(),
               "flops": count_flops(result.model),
               **measure(result.model, calibration, test_ds, folder, f"{name}_c{ratio}", runs)}
        rows.append(row)
        print(f"{name} ratio {ratio}: {row['params']:,} params, {row['flops']:,} MACs, "
              f"float32 {row['float32']['latency_ms_median']:.3f} ms acc {row['float32']['accuracy']:.4f}, "
              f"int8 {row['int8']['latency_ms_median']:.3f} ms acc {row['int8']['accuracy']:.4f}", flush=True)
    return rows


def plot(rows: list[dict], path: str) -> None:
    from _figures import finish, save, subplots

    models = sorted({r["model"] for r in rows})
    fig, axes = subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
    for ax, name in zip(axes[0], models, strict=True):
        mine = [r for r in rows if r["model"] == name]
        for mode, marker in (("float32", "o"), ("int8", "s")):
            xs = [r[mode]["latency_ms_median"] for r in mine]
            ys = [100 * r[mode]["accuracy"] for r in mine]
            ax.plot(xs, ys, marker=marker, label=mode)
            for r, x, y in zip(mine, xs, ys, strict=True):
                ax.annotate("dense" if r["ratio"] == 0 else f"{r['ratio']:.0%}", (x, y), textcoords="offset points",
                            xytext=(4, 4), fontsize=8)
        finish(ax, xlabel="LiteRT latency, 1 thread (ms, median)", ylabel="test accuracy (%)",
               title=f"{name}: channels removed")
    save(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(OPTIONS), choices=list(OPTIONS))
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.3, 0.5, 0.7])
    parser.add_argument("--runs", type=int, default=300, help="timed invokes per file (median)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--finetune-epochs", type=int, default=5, help="fine-tuning epochs per pruning round")
    parser.add_argument("--rounds", type=int, default=2, help="pruning rounds")
    parser.add_argument("--criterion", default="l1", choices=["l1", "bn_gamma"])
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, tensorflow {tf.__version__}, LiteRT 1 thread, {args.runs} invokes, "
          f"{args.rounds} rounds x {args.finetune_epochs} epochs, criterion {args.criterion}")
    start = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            rows += run_model(name, args.ratios, args.epochs, args.runs, folder, args.finetune_epochs, args.rounds,
                              args.criterion)
    print("\n| model | channels removed | params | MACs | float32 ms | x dense | int8 ms | x dense int8 | "
          "float32 acc | int8 acc | int8 drop (points) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        base = next(b for b in rows if b["model"] == r["model"] and b["ratio"] == 0)
        f, i = r["float32"], r["int8"]
        print(f"| {r['model']} | {r['ratio']:.0%} | {r['params']:,} | {r['flops']:,} | {f['latency_ms_median']:.3f} | "
              f"{base['float32']['latency_ms_median'] / f['latency_ms_median']:.2f}x | {i['latency_ms_median']:.3f} | "
              f"{base['int8']['latency_ms_median'] / i['latency_ms_median']:.2f}x | {f['accuracy']:.4f} | "
              f"{i['accuracy']:.4f} | {100 * (base['float32']['accuracy'] - i['accuracy']):+.2f} |")
    if args.plot:
        plot(rows, args.plot)
        print(f"\nfigure: {args.plot}")
    print(f"\nwall time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
