"""TFMOT's pruning tutorial, reproduced through `tfimgopt.optimize` with its defaults, against the
tutorial's own code path (TFMOT directly), in the same run.

The tutorial's model (InputLayer(28, 28) -> Reshape -> Conv2D(12, 3x3, relu) -> MaxPool(2) ->
Flatten -> Dense(10)) trained on [0, 1] images held as NumPy arrays: scikit-learn's digits
resized to 28x28 stand in for MNIST (offline). Then:
- ours: `tfimgopt.optimize(model, (x_train, y_train), test_data=(x_test, y_test))`, nothing set;
- theirs: the tutorial's steps (prune_low_magnitude with PolynomialDecay 0.5 -> 0.8 over 2
  epochs, strip, TFLite float32; then dynamic-range post-training quantization).
Sizes are gzip-compressed file sizes (what the tutorial compares) against the gzip size of the
baseline's float32 TFLite file; accuracy on the same test images, in LiteRT. Ours runs with
`export.metadata` off by default (`--metadata on` adds the label file, about 1 KiB gzip).

    python benchmarks/your_model.py --seeds 3
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def digits_28(seed: int):
    import tensorflow as tf
    from sklearn.datasets import load_digits

    d = load_digits()
    x = tf.image.resize(d.images[..., None] / 16.0, (28, 28)).numpy()[..., 0].astype("float32")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], d.target[order]
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


def tutorial_model(keras):
    return keras.Sequential([
        keras.layers.InputLayer(input_shape=(28, 28)),
        keras.layers.Reshape(target_shape=(28, 28, 1)),
        keras.layers.Conv2D(filters=12, kernel_size=(3, 3), activation="relu"),
        keras.layers.MaxPooling2D(pool_size=(2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])


def gz(blob: bytes) -> int:
    return len(gzip.compress(blob, compresslevel=9, mtime=0))


def litert_accuracy(blob: bytes, x: np.ndarray, y: np.ndarray) -> float:
    from tfimgopt._litert import TFLiteRunner

    runner = TFLiteRunner(blob)
    return float(np.mean(np.argmax(runner.predict(x.astype("float32")), -1) == y))


def theirs(model, x, y, xt, yt, keras, tf) -> dict:
    """The tutorial's code path: TFMOT pruning 0.5 -> 0.8 for 2 epochs, strip, float32 and dynamic TFLite."""
    import tensorflow_model_optimization as tfmot

    steps = int(np.ceil(len(x) * 0.9 / 128)) * 2
    # The tutorial's frequency (100 steps) would update the masks once in 20 steps here.
    schedule = tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.50, final_sparsity=0.80, begin_step=0,
                                                    end_step=steps, frequency=max(1, steps // 10))
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    pruned.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
    pruned.fit(x, y, batch_size=128, epochs=2, validation_split=0.1, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    converter = tf.lite.TFLiteConverter.from_keras_model(stripped)
    float_blob = converter.convert()
    converter = tf.lite.TFLiteConverter.from_keras_model(stripped)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    dynamic_blob = converter.convert()
    return {"pruned_float32": (gz(float_blob), litert_accuracy(float_blob, xt, yt)),
            "pruned_dynamic": (gz(dynamic_blob), litert_accuracy(dynamic_blob, xt, yt))}


def one_seed(seed: int, epochs: int, metadata: str) -> dict:
    import tensorflow as tf

    import tfimgopt
    from tfimgopt.compat import keras

    (x, y), (xt, yt) = digits_28(seed)
    keras.utils.set_random_seed(seed)
    model = tutorial_model(keras)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, validation_split=0.1, verbose=0)
    base_blob = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    base = (gz(base_blob), litert_accuracy(base_blob, (np.round(xt * 255) / 255), yt))
    with tempfile.TemporaryDirectory() as out:
        report = tfimgopt.optimize(model, (x, y), test_data=(xt, yt), out_dir=os.path.join(out, "run"),
                                   seed=seed, export__metadata=metadata, log=lambda _: None)
        rows = {v.name: v for v in report.variants}
        keras.utils.set_random_seed(seed)
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        tutorial = theirs(clone, x, y, xt, yt, keras, tf)
    return {"seed": seed, "base": base, "ours": {n: (v.gzip_bytes, v.accuracy) for n, v in rows.items()},
            "ours_base": (rows["baseline_float32"].gzip_bytes, rows["baseline_float32"].accuracy),
            "theirs": tutorial, "selected": report.selected.name if report.selected else None,
            "settled": report.settled}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=40,
                        help="baseline training epochs (the tutorial's 4 on 60k MNIST images are ~1,700 steps; "
                             "40 on 1,260 digits are ~800)")
    parser.add_argument("--metadata", default="off", choices=("on", "off", "auto"),
                        help="TFLite metadata in our files (labels, normalization: about 1 KiB gzip); off compares "
                             "like with like, the tutorial's files have none")
    args = parser.parse_args(argv)
    print(f"cores: {os.cpu_count()}, metadata {args.metadata}", flush=True)
    results = [one_seed(seed, args.epochs, args.metadata) for seed in range(args.seeds)]
    print("\n| seed | what | variant | gzip bytes | x smaller (gzip) | accuracy | vs baseline (points) |")
    print("|---:|---|---|---:|---:|---:|---:|")
    ratios: dict[str, list[float]] = {}
    for r in results:
        gzip_base, acc_base = r["ours_base"]
        lines = [("ours", name, *r["ours"][name]) for name in ("baseline_float32", "pruned_float32", "pruned_int8",
                                                               "pruned_qat_int8", "baseline_dynamic")
                 if name in r["ours"]]
        lines += [("TFMOT tutorial", name, *value) for name, value in r["theirs"].items()]
        for who, name, size, acc in lines:
            ratio = gzip_base / size
            ratios.setdefault(f"{who} {name}", []).append(ratio)
            print(f"| {r['seed']} | {who} | {name} | {size:,} | {ratio:.2f} | {acc:.4f} | "
                  f"{100 * (acc - acc_base):+.2f} |")
        print(f"| {r['seed']} | selected | {r['selected']} | | | | |")
    print("\nmean x smaller (gzip) over seeds:")
    for key, values in ratios.items():
        print(f"  {key}: {statistics.mean(values):.2f} (min {min(values):.2f})")
    print("settled (seed 0):", "; ".join(results[0]["settled"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
