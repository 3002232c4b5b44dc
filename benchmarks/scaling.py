"""Training steps per second: 1 vs 2 replicas (logical CPUs here, GPUs/TPU cores where
present), with and without XLA, for the classifier and the Distiller.

Run: python benchmarks/scaling.py [--steps 40] [--batch 128]
"""

from __future__ import annotations

import argparse
import os
import time

from tfimgopt.compat import keras, tf

cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import numpy as np  # noqa: E402

from tfimgopt.distill import Distiller  # noqa: E402
from tfimgopt.distribute import create_strategy  # noqa: E402
from tfimgopt.models import create_model  # noqa: E402


def dataset(batch):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch * 4, 32, 32, 1)).astype("float32")
    y = rng.integers(0, 10, batch * 4)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch, drop_remainder=True).repeat().prefetch(2)


def steps_per_second(strategy, what, jit_compile, steps, batch):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        if what == "classifier":
            model = create_model("small_cnn", (32, 32, 1), 10)
            model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          jit_compile=jit_compile)
        else:
            teacher = create_model("small_cnn", (32, 32, 1), 10)
            model = Distiller(teacher, create_model("tiny_cnn", (32, 32, 1), 10))
            model.compile(keras.optimizers.Adam(1e-3), jit_compile=jit_compile)
    ds = dataset(batch)
    model.fit(ds, steps_per_epoch=5, epochs=1, verbose=0)  # trace and compile
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=128, help="global batch")
    args = parser.parse_args()
    gpus = tf.config.list_logical_devices("GPU")
    devices = [g.name for g in gpus] if len(gpus) >= 2 else ["/cpu:0", "/cpu:1"]
    setups = {
        "1 replica": create_strategy("default" if not gpus else "one_device", verbose=False),
        f"{len(devices)} replicas": create_strategy("mirrored", devices=devices, verbose=False),
    }
    print(f"cores: {os.cpu_count()}, GPUs: {len(gpus)}, global batch {args.batch}, small_cnn 32x32x1, "
          f"distiller = small_cnn teacher + tiny_cnn student")
    print(f"{'model':11s} {'replicas':11s} {'XLA':5s} {'steps/s':>8s} {'img/s':>8s} {'vs 1 replica, no XLA':>21s}")
    for what in ("classifier", "distiller"):
        base = None
        for name, strategy in setups.items():
            for xla in (False, True):
                try:
                    rate = steps_per_second(strategy, what, xla, args.steps, args.batch)
                except tf.errors.InvalidArgumentError as err:
                    reason = next((line for line in str(err).splitlines() if "Trying to access" in line), str(err))
                    print(f"{what:11s} {name:11s} {'yes' if xla else 'no':5s} fails: {reason[:110]}", flush=True)
                    continue
                base = base or rate
                print(f"{what:11s} {name:11s} {'yes' if xla else 'no':5s} {rate:8.2f} {rate * args.batch:8.0f} "
                      f"{rate / base:20.2f}x", flush=True)


if __name__ == "__main__":
    main()
