"""The converter's quantization modes against LiteRT Quantizer's recipes and our per-layer
precision search, on the same trained models, measured in the same run.

Models: small_cnn on the digits (32 px, grayscale) and MobileNetV2 (alpha 0.35, 96 px) on the
digits as RGB, both trained from scratch here (offline). For each, every mode is exported by
its registered exporter, verified against the Keras model (stated criteria), and measured
in LiteRT (1 thread): test accuracy, size, gzip size, median single-image latency. Then the
ratios the issue asks for: int8 gzip / int4 gzip, and the searched (`mixed`) files against
every uniform mode within the accuracy budget.

    python benchmarks/quantization_backends.py [--models small_cnn mobilenet_v2] [--epochs 12]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

MODES = ["float32", "dynamic", "int8", "int16x8", "litert_dynamic", "litert_int8", "int4", "weight_only_int4"]
SETUPS = {
    "small_cnn": {"image_size": 32, "channels": 1, "options": {}, "epochs": 12},
    "mobilenet_v2": {"image_size": 96, "channels": 3, "options": {"alpha": 0.35}, "epochs": 20},
}


def train(name: str, epochs: int | None):
    from tfimgopt.compat import keras
    from tfimgopt.data import build_pipeline, load_dataset
    from tfimgopt.models import create_model
    from tfimgopt.training import train as fit

    setup = SETUPS[name]
    splits = load_dataset("digits", image_size=setup["image_size"], channels=setup["channels"], seed=0)
    keras.utils.set_random_seed(0)
    began = time.time()
    model = fit(lambda: create_model(name, splits.info.image_shape, 10, **setup["options"]),
                build_pipeline(splits.train, 64, training=True, seed=0), build_pipeline(splits.val, 64),
                epochs or setup["epochs"], learning_rate=2e-3, verbose=0).model
    print(f"{name}: trained {epochs or setup['epochs']} epochs in {time.time() - began:.0f} s", flush=True)
    return model, splits, build_pipeline(splits.val, 64), build_pipeline(splits.test, 64)


def measure(model, splits, val, test, out_dir: str, budget: float) -> list[dict]:
    from tfimgopt.export import get_exporter

    calibration = splits.train.map(lambda x, y: x)
    rows = []
    for mode in [*MODES, "mixed:size", "mixed:latency"]:
        name, _, objective = mode.partition(":")
        exporter = get_exporter(name)
        began = time.time()
        artifact = exporter.export(model, os.path.join(out_dir, f"{mode.replace(':', '_')}.tflite"),
                                   calibration=calibration, num_calibration=200, validation=val,
                                   max_accuracy_drop=budget, objective=objective or "size")
        seconds = time.time() - began
        check = artifact.verify(model, test, num_samples=64)
        result = artifact.measure(test, latency_runs=200, warmup=20)
        row = {"mode": mode, "passed": check["passed"], "top1_agreement": round(check["top1_agreement"], 3),
               "relative_diff": round(check.get("relative_diff", float("nan")), 4), "export_s": round(seconds, 1),
               "accuracy": result["accuracy"], "size_bytes": result["size_bytes"], "gzip_bytes": result["gzip_bytes"],
               "latency_ms": round(result["latency_ms_median"], 4)}
        if getattr(artifact, "recipe", None):
            row["recipe"] = artifact.recipe
        if getattr(artifact, "search", None):
            search = artifact.search
            row["plan"] = search["plan"]
            row["search"] = {"measurements": search["measurements"], "drop_points_val": round(
                search["accuracy_drop_points"], 2), "layers": [
                {"layer": r["layer"], "chosen": r["chosen"], **{
                    p: {k: round(v, 4) for k, v in c.items()} for p, c in r["candidates"].items()}}
                for r in search["layers"]]}
        rows.append(row)
        print(f"  {mode:16s} {'ok ' if row['passed'] else 'FAIL'} acc {100 * row['accuracy']:6.2f}% "
              f"{row['size_bytes'] / 1024:9.1f} KiB gzip {row['gzip_bytes'] / 1024:9.1f} KiB "
              f"{row['latency_ms']:8.4f} ms  export {seconds:5.1f} s {row.get('recipe', '')[:60]}", flush=True)
    return rows


def summary(name: str, rows: list[dict], budget: float) -> dict:
    by = {r["mode"]: r for r in rows}
    float_acc = by["float32"]["accuracy"]
    within = [r for r in rows if r["passed"] and 100 * (float_acc - r["accuracy"]) <= budget]
    uniform = [r for r in within if not r["mode"].startswith("mixed")]
    result = {
        "int8_gzip_over_int4_gzip": round(by["int8"]["gzip_bytes"] / by["int4"]["gzip_bytes"], 2),
        "litert_int8_gzip_over_int4_gzip": round(by["litert_int8"]["gzip_bytes"] / by["int4"]["gzip_bytes"], 2),
        "int4_drop_points": round(100 * (float_acc - by["int4"]["accuracy"]), 2),
        "int4_verified": by["int4"]["passed"],
        "fastest_uniform": min(uniform, key=lambda r: r["latency_ms"])["mode"] if uniform else None,
        "smallest_uniform": min(uniform, key=lambda r: r["gzip_bytes"])["mode"] if uniform else None,
    }
    for objective, key in (("mixed:latency", "latency_ms"), ("mixed:size", "gzip_bytes")):
        mixed = by[objective]
        best = min(uniform, key=lambda r: r[key]) if uniform else None
        result[f"{objective} / best uniform ({key})"] = round(mixed[key] / best[key], 3) if best else None
    print(f"{name}: {json.dumps(result)}", flush=True)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--budget", type=float, default=1.0, help="accuracy points (the run's default)")
    parser.add_argument("--json", default=None, help="write every row here")
    args = parser.parse_args(argv)
    print(f"{os.cpu_count()} cores; LiteRT 1 thread", flush=True)
    everything = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            model, splits, val, test = train(name, args.epochs)
            rows = measure(model, splits, val, test, tmp, args.budget)
            everything[name] = {"rows": rows, "summary": summary(name, rows, args.budget)}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(everything, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
