"""Size, accuracy and latency of every compression variant against the float32 baseline.

One run trains a baseline on the offline digits (32x32, small_cnn, ~1.1M parameters),
then builds: float32 / dynamic / float16 / int8 / int16x8 post-training TFLite, QAT int8,
80% pruning (+ strip) stored dense and sparse, with int8 PTQ and with sparsity-preserving QAT
(PQAT), and the pruned model clustered to 16 values per kernel with PCQAT (sparsity- and
cluster-preserving QAT, TFMOT's collaborative optimization) to int8. Every
variant is measured in the LiteRT interpreter (1 thread). A second, smaller run does
the same on MobileNetV2 (random init) to show the path works on a real architecture.

Usage: python benchmarks/compression.py [--epochs 8] [--skip-mobilenet | --only-mobilenet]
"""

from __future__ import annotations

import argparse
import json
import os
import time

from tfimgopt.compat import keras, tf
from tfimgopt.compress import prune_and_finetune, quantize_aware, sparsity_report
from tfimgopt.compress.cluster import cluster_and_finetune
from tfimgopt.data import build_pipeline, load_dataset
from tfimgopt.export import compare, evaluate_tflite, export_tflite, verify_tflite
from tfimgopt.models import create_model
from tfimgopt.training import train


def _qat(model, train_ds, epochs, **kwargs):
    qat = quantize_aware(model, calibration_data=train_ds, **kwargs)
    qat.compile(keras.optimizers.Adam(1e-4), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(train_ds, epochs=epochs, verbose=0)
    return qat


def run(model_name: str, image_size: int, channels: int | None, epochs: int, qat_epochs: int,
        prune_epochs: int, **model_kwargs) -> dict:
    keras.utils.set_random_seed(0)
    splits = load_dataset("digits", image_size=image_size, channels=channels)
    train_ds = build_pipeline(splits.train, 32, training=True, seed=0)
    val_ds = build_pipeline(splits.val, 128)
    test_ds = build_pipeline(splits.test, 128)
    calibration = splits.train.take(200)
    model = create_model(model_name, splits.info.image_shape, 10, **model_kwargs)
    t0 = time.time()
    train(model, train_ds, val_ds, epochs, learning_rate=1e-3, verbose=0)
    print(f"[{model_name}] baseline trained in {time.time() - t0:.0f} s, {model.count_params():,} parameters")

    blobs = {mode: export_tflite(model, mode, calibration)
             for mode in ("float32", "dynamic", "float16", "int8", "int16x8")}
    references = dict.fromkeys(blobs, model)
    blobs["qat int8"] = export_tflite(qat := _qat(model, train_ds, qat_epochs), "int8", calibration)
    references["qat int8"] = qat
    pruned, report = prune_and_finetune(
        model, train_ds, val_ds, prune_epochs, 0.8, learning_rate=3e-4
    )
    print(f"[{model_name}] pruned: overall kernel sparsity {report['overall']:.3f}")
    blobs["pruned80 float32 dense"] = export_tflite(pruned, "float32", sparse=False)
    blobs["pruned80 float32"] = export_tflite(pruned, "float32")  # sparse storage when smaller (auto)
    blobs["pruned80 int8"] = export_tflite(pruned, "int8", calibration)
    pqat = _qat(pruned, train_ds, qat_epochs)
    blobs["pruned80 pqat int8"] = export_tflite(pqat, "int8", calibration)
    references.update({"pruned80 float32": pruned, "pruned80 int8": pruned, "pruned80 pqat int8": pqat})
    clustered, cluster_report = cluster_and_finetune(pruned, train_ds, val_ds, 1, 16, learning_rate=1e-4)
    print(f"[{model_name}] clustered: at most {max(cluster_report['unique_values'].values())} values per kernel")
    pcqat = _qat(clustered, train_ds, qat_epochs, preserve=("sparsity", "clusters"))
    blobs["pruned80 clustered16 float32"] = export_tflite(clustered, "float32")
    blobs["pruned80 clustered16 pcqat int8"] = export_tflite(pcqat, "int8", calibration)
    references.update({"pruned80 float32 dense": pruned, "pruned80 clustered16 float32": clustered,
                       "pruned80 clustered16 pcqat int8": pcqat})

    results = {}
    for name, blob in blobs.items():
        result = evaluate_tflite(blob, test_ds, latency_runs=300, num_threads=1)
        check = verify_tflite(blob, references[name], test_ds, num_samples=64)
        result["verified"] = check["passed"]
        if not check["passed"]:
            print(f"[{model_name}] {name}: verification failed: {check}")
        if name.startswith("pruned80"):
            result["sparsity"] = sparsity_report(references[name])["overall"]
        results[name] = result
    table = compare(results)
    print(table["markdown"])
    print("verified in LiteRT against their Keras models: "
          + ", ".join(f"{k}={v['verified']}" for k, v in results.items()))
    base, pcqat_row = results["float32"], results["pruned80 clustered16 pcqat int8"]
    print(f"[{model_name}] PCQAT int8 gzip {base['gzip_bytes'] / pcqat_row['gzip_bytes']:.1f}x smaller than float32 "
          f"gzip, accuracy {100 * (pcqat_row['accuracy'] - base['accuracy']):+.2f} points")
    print(f"[{model_name}] int16x8 accuracy {100 * (results['int16x8']['accuracy'] - base['accuracy']):+.2f} points "
          f"against float32")
    dense, packed = results["pruned80 float32 dense"], results["pruned80 float32"]
    ratio = dense["size_bytes"] / packed["size_bytes"]
    print(f"[{model_name}] sparse storage at {packed['sparsity']:.0%} zeros: {ratio:.2f}x smaller on disk than dense "
          f" ({packed['size_bytes']:,} vs {dense['size_bytes']:,} bytes)")
    return {"model": model_name, "params": model.count_params(), "table": table["rows"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--prune-epochs", type=int, default=4)
    parser.add_argument("--skip-mobilenet", action="store_true")
    parser.add_argument("--only-mobilenet", action="store_true")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, tensorflow {tf.__version__}, LiteRT 1 thread")
    out = [] if args.only_mobilenet else [run("small_cnn", 32, None, args.epochs, args.qat_epochs, args.prune_epochs)]
    if not args.skip_mobilenet:
        out.append(run("mobilenet_v2", 32, 3, args.epochs, 1, 2, alpha=0.35))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2, default=float)


if __name__ == "__main__":
    main()
