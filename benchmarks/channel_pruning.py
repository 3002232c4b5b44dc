"""Does channel pruning make models faster? LiteRT latency of dense vs channel-pruned models.

For each model (the zoo's small_cnn, and MobileNetV2), in one run: train it dense on the
digits (32x32, the same test split for every variant), export float32 and int8 TFLite,
then for each ratio prune channels with `prune_channels_and_finetune` (L1 criterion, in
rounds with fine-tuning) and export the pruned model the same way. Every file is evaluated
on the test split, then all files are timed together at the end in the LiteRT interpreter
with 1 thread: `--timing-rounds` interleaved rounds of `--runs / --timing-rounds`
single-image invokes per file, so a slow spell of a shared host hits every file alike. The
latency is the median of the round medians; each ratio is the median over rounds of
(dense / pruned) in the same round. Prints the table and draws the accuracy/latency curve.

`--probe` instead times chains of five 3x3 or 1x1 convolutions of 8, 32 and 64 channels at
32x32 in float32 and int8 (integer I/O): what an int8 layer costs when it has few channels.

Usage: python benchmarks/channel_pruning.py [--models small_cnn mobilenet_v2] [--ratios 0.3 0.5 0.7]
       [--runs 300] [--timing-rounds 5] [--epochs 20] [--finetune-epochs 5] [--rounds 2] [--criterion l1]
       [--plot benchmarks/channel_pruning.png] [--probe]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from tfimgopt._litert import TFLiteRunner
from tfimgopt.augment import create_augmentation
from tfimgopt.compat import keras, tf
from tfimgopt.compress import count_flops, prune_channels_and_finetune
from tfimgopt.data import build_pipeline, load_dataset
from tfimgopt.export import evaluate_tflite, export_tflite
from tfimgopt.models import create_model
from tfimgopt.training import train

OPTIONS = {"small_cnn": {}, "mobilenet_v2": {}}


def measure(model: keras.Model, calibration, test_ds, folder: str, name: str) -> dict[str, dict]:
    """Exports float32 and int8 files and evaluates them (accuracy; timing comes later, interleaved)."""
    out = {}
    for mode in ("float32", "int8"):
        path = os.path.join(folder, f"{name}_{mode}.tflite")
        export_tflite(model, mode, calibration if mode == "int8" else None, path, num_calibration=200)
        out[mode] = {"path": path, **evaluate_tflite(path, test_ds, num_threads=1, latency_runs=1, warmup=0)}
    return out


def interleaved_latency(files: dict, image: np.ndarray | None, runs: int, rounds: int) -> dict[object, list[float]]:
    """Median single-image latency (ms, 1 thread) of each file in each of `rounds` rounds; a
    round invokes every file `runs // rounds` times in turn (after 20 warm-up invokes in the
    first). `image=None`: random input of each model's own shape and dtype."""
    runners = {key: TFLiteRunner(path, num_threads=1) for key, path in files.items()}
    inputs = {}
    for key, runner in runners.items():
        shape = tuple(runner.input["shape"])
        inputs[key] = (np.asarray(image[None], runner.input_dtype) if image is not None
                       else np.random.default_rng(0).integers(0, 100, shape).astype(runner.input_dtype))
    medians = {key: [] for key in files}
    for r in range(rounds):
        for key, runner in runners.items():
            interpreter, index = runner.interpreter, runner.input["index"]
            interpreter.set_tensor(index, inputs[key])
            for _ in range(20 if r == 0 else 0):
                interpreter.invoke()
            times = []
            for _ in range(max(1, runs // rounds)):
                start = time.perf_counter()
                interpreter.invoke()
                times.append((time.perf_counter() - start) * 1000.0)
            medians[key].append(float(np.median(times)))
    return medians


def run_model(name: str, ratios: list[float], epochs: int, folder: str, finetune_epochs: int,
              rounds: int, criterion: str) -> tuple[list[dict], np.ndarray]:
    channels = 3 if name.startswith("mobilenet") else 1
    splits = load_dataset("digits", image_size=32, channels=channels, seed=0)
    train_ds = build_pipeline(splits.train, 64, training=True, augment=create_augmentation("digits", seed=0))
    val_ds, test_ds = build_pipeline(splits.val, 256), build_pipeline(splits.test, 1)
    calibration = splits.train.map(lambda x, y: x)
    keras.utils.set_random_seed(0)
    dense = create_model(name, splits.info.image_shape, 10, **OPTIONS[name])
    train(dense, train_ds, val_ds, epochs, verbose=0)
    rows = [{"model": name, "ratio": 0.0, "params": dense.count_params(), "flops": count_flops(dense),
             **measure(dense, calibration, test_ds, folder, f"{name}_dense")}]
    print(f"{name} dense: {rows[0]['params']:,} params, {rows[0]['flops']:,} MACs, "
          f"float32 acc {rows[0]['float32']['accuracy']:.4f}, int8 acc {rows[0]['int8']['accuracy']:.4f}", flush=True)
    for ratio in ratios:
        source = keras.models.clone_model(dense)
        source.set_weights(dense.get_weights())
        result = prune_channels_and_finetune(source, train_ds, val_ds, ratio, steps=rounds, epochs=finetune_epochs,
                                             criterion=criterion, verbose=0)
        row = {"model": name, "ratio": ratio, "params": result.model.count_params(),
               "flops": count_flops(result.model),
               **measure(result.model, calibration, test_ds, folder, f"{name}_c{ratio}")}
        rows.append(row)
        print(f"{name} ratio {ratio}: {row['params']:,} params, {row['flops']:,} MACs, "
              f"float32 acc {row['float32']['accuracy']:.4f}, int8 acc {row['int8']['accuracy']:.4f}", flush=True)
    image = next(iter(test_ds))[0][0].numpy()
    return rows, image


def time_rows(rows: list[dict], images: dict[str, np.ndarray], runs: int, rounds: int) -> None:
    """Times every file interleaved; fills each row's `latency_ms_median` and `speedup` (vs dense)."""
    files = {(i, mode): r[mode]["path"] for i, r in enumerate(rows) for mode in ("float32", "int8")}
    by_model = {}
    for model in {r["model"] for r in rows}:
        keys = [k for k in files if rows[k[0]]["model"] == model]
        by_model.update(interleaved_latency({k: files[k] for k in keys}, images[model], runs, rounds))
    for (i, mode), medians in by_model.items():
        row = rows[i]
        dense = next(j for j, r in enumerate(rows) if r["model"] == row["model"] and r["ratio"] == 0)
        row[mode]["latency_ms_median"] = float(np.median(medians))
        row[mode]["speedup"] = float(np.median(np.divide(by_model[(dense, mode)], medians)))


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


def probe(folder: str, runs: int, rounds: int) -> None:
    """Five-layer convolution chains at 32x32: float32 vs int8 (integer I/O) latency by width."""
    rng = np.random.default_rng(0)
    files = {}
    for kernel in (3, 1):
        for width in (8, 32, 64):
            model = keras.Sequential([keras.Input((32, 32, width))] + [
                keras.layers.Conv2D(width, kernel, padding="same", activation="relu") for _ in range(5)])
            for mode in ("float32", "int8"):
                path = os.path.join(folder, f"k{kernel}_w{width}_{mode}.tflite")
                export_tflite(model, mode, rng.uniform(0, 100, (50, 32, 32, width)).astype("float32") if mode == "int8"
                              else None, path, io_type="int8" if mode == "int8" else "float32", num_calibration=50)
                files[(kernel, width, mode)] = path
    medians = interleaved_latency(files, None, runs, rounds)
    print("\n| 5 layers at 32x32 | channels | MACs | float32 ms | int8 ms | int8 ns per pixel and layer |")
    print("|---|---:|---:|---:|---:|---:|")
    for kernel in (3, 1):
        for width in (8, 32, 64):
            f32, i8 = (float(np.median(medians[(kernel, width, m)])) for m in ("float32", "int8"))
            macs = 5 * 32 * 32 * kernel * kernel * width * width
            per_pixel = i8 * 1e6 / (5 * 32 * 32)
            print(f"| {kernel}x{kernel} conv | {width} | {macs:,} | {f32:.3f} | {i8:.3f} | {per_pixel:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(OPTIONS), choices=list(OPTIONS))
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.3, 0.5, 0.7])
    parser.add_argument("--runs", type=int, default=300, help="timed invokes per file, over all timing rounds")
    parser.add_argument("--timing-rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--finetune-epochs", type=int, default=5, help="fine-tuning epochs per pruning round")
    parser.add_argument("--rounds", type=int, default=2, help="pruning rounds")
    parser.add_argument("--criterion", default="l1", choices=["l1", "bn_gamma"])
    parser.add_argument("--plot", default=None)
    parser.add_argument("--probe", action="store_true", help="time int8 vs float32 convolution chains instead")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, tensorflow {tf.__version__}, LiteRT 1 thread, {args.runs} invokes in "
          f"{args.timing_rounds} interleaved rounds, {args.rounds} pruning rounds x {args.finetune_epochs} epochs, "
          f"criterion {args.criterion}")
    start = time.time()
    rows, images = [], {}
    with tempfile.TemporaryDirectory() as folder:
        if args.probe:
            probe(folder, args.runs, args.timing_rounds)
            print(f"\nwall time {time.time() - start:.0f} s")
            return
        for name in args.models:
            mine, images[name] = run_model(name, args.ratios, args.epochs, folder, args.finetune_epochs, args.rounds,
                                           args.criterion)
            rows += mine
        time_rows(rows, images, args.runs, args.timing_rounds)
    print("\n| model | channels removed | params | MACs | float32 ms | x dense | int8 ms | x dense int8 | "
          "float32 acc | int8 acc | int8 drop (points) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        base = next(b for b in rows if b["model"] == r["model"] and b["ratio"] == 0)
        f, i = r["float32"], r["int8"]
        print(f"| {r['model']} | {r['ratio']:.0%} | {r['params']:,} | {r['flops']:,} | {f['latency_ms_median']:.3f} | "
              f"{f['speedup']:.2f}x | {i['latency_ms_median']:.3f} | {i['speedup']:.2f}x | {f['accuracy']:.4f} | "
              f"{i['accuracy']:.4f} | {100 * (base['float32']['accuracy'] - i['accuracy']):+.2f} |")
    if args.plot:
        plot(rows, args.plot)
        print(f"\nfigure: {args.plot}")
    print(f"\nwall time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
