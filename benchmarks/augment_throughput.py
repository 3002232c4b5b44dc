"""Augmentation throughput: tfimgopt's default policy against OpenCV, albumentations and
a chain of stock Keras layers, on the same uint8 images and the same cores.

The policy is rotate (+-15 deg) + horizontal flip + translate (+-10%) + crop-and-resize
(zoom in up to 20%) + brightness (+-20%) + contrast (+-20%).  Baselines: "opencv loop"
is the classic per-image recipe (a `warpAffine` for the rotation and one for the
translation, `cv2.flip`, a slicing crop resized back, a brightness/contrast scale);
"opencv, one fused warpAffine" is the strongest form we could write by hand (one warp for
rotation, zoom, translation and the flip; the mean from `cv2.mean`; brightness/contrast as a
`cv2.LUT` table); albumentations runs the same ops (one `Affine`).

Run: python benchmarks/augment_throughput.py [--sizes 224 32] [--seconds 4]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from tfimgopt.augment import create_augmentation  # noqa: E402
from tfimgopt.compat import keras, tf

BATCH = 64


def make_images(n, size, seed=0):
    """Smooth random colour images (like photos, unlike white noise), uint8."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, 8, 8, 3)).astype(np.float32)
    return tf.cast(tf.image.resize(small, (size, size), method="bicubic"), tf.uint8).numpy().clip(0, 255)


def interleaved(pipelines: dict, seconds: float, rounds: int) -> dict:
    """Median images per second of each pipeline over `rounds` rounds; every round times
    each pipeline for `seconds / rounds` in turn, so a slow spell of a shared host hits
    them all alike instead of whichever ran during it. Each slice opens a fresh iterator
    (3 warm-up batches) and closes it after: no pipeline prefetches while another is timed."""
    rates = {name: [] for name in pipelines}
    for _ in range(rounds):
        for name, make_batches in pipelines.items():
            it = make_batches()
            for _ in range(3):  # warm-up: tracing and XLA compilation (first round), autotuning
                next(it)
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / rounds:
                n += len(next(it))
            rates[name].append(n / (time.perf_counter() - start))
            del it
    return {name: float(np.median(values)) for name, values in rates.items()}


def tf_data(images, fn, seeded=False):
    ds = tf.data.Dataset.from_tensor_slices(images).repeat().batch(BATCH)
    if seeded:
        ds = tf.data.Dataset.zip(ds, tf.data.Dataset.random(seed=0).batch(2))
        ds = ds.map(lambda x, s: fn(x, seed=s), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    return lambda: iter(ds)


def per_image(images, augment_one):
    """A batch generator factory that augments `images` one at a time, round robin."""

    def gen():
        i = 0
        while True:
            batch = [augment_one(images[(i + k) % len(images)]) for k in range(BATCH)]
            i += BATCH
            yield np.stack(batch)

    return gen


def opencv_loop(images):
    import cv2

    rng = np.random.default_rng(0)

    levels = np.arange(256, dtype=np.float32)

    def augment(img):
        # The cheapest correct form of each op, as a careful OpenCV user writes it: the flip folded
        # into the one affine warp, the mean from cv2.mean (NumPy's img.mean() costs as much as the
        # warp), brightness/contrast as a 256-entry lookup table.
        h, w = img.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-15, 15), 1 / rng.uniform(0.8, 1.0))
        m[:, 2] += rng.uniform(-0.1, 0.1, 2) * (w, h)
        if rng.random() < 0.5:  # x -> w - 1 - x after the warp
            m = np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack([m, [0.0, 0.0, 1.0]])
        img = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        contrast = rng.uniform(0.8, 1.2)
        channel_means = cv2.mean(img)[: img.shape[2] if img.ndim == 3 else 1]
        mean = sum(channel_means) / len(channel_means)
        table = np.clip(levels * contrast + ((1 - contrast) * mean + rng.uniform(-51, 51)), 0, 255).astype(np.uint8)
        return cv2.LUT(img, table)

    return per_image(images, augment)


def opencv_classic(images):
    """The classic per-image recipe: one OpenCV call per operation."""
    import cv2

    rng = np.random.default_rng(0)

    def augment(img):
        h, w = img.shape[:2]
        rot = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-15, 15), 1.0)
        img = cv2.warpAffine(img, rot, (w, h), borderMode=cv2.BORDER_REFLECT_101)
        shift = np.float32([[1, 0, rng.uniform(-0.1, 0.1) * w], [0, 1, rng.uniform(-0.1, 0.1) * h]])
        img = cv2.warpAffine(img, shift, (w, h), borderMode=cv2.BORDER_REFLECT_101)
        if rng.random() < 0.5:
            img = cv2.flip(img, 1)
        side = rng.uniform(0.8, 1.0)
        ch, cw = int(h * side), int(w * side)
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        img = cv2.resize(img[top : top + ch, left : left + cw], (w, h), interpolation=cv2.INTER_LINEAR)
        return cv2.convertScaleAbs(img, alpha=rng.uniform(0.8, 1.2), beta=rng.uniform(-51, 51))

    return per_image(images, augment)


def albumentations_loop(images):
    import albumentations as A

    pipeline = A.Compose([
        A.Affine(rotate=(-15, 15), scale=(1.0, 1.25), translate_percent=(-0.1, 0.1), interpolation=1,
                 border_mode=4, p=1.0),
        A.HorizontalFlip(p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=1.0),
    ])
    return per_image(images, lambda img: pipeline(image=img)["image"])


def stock_keras_chain():
    layers = keras.Sequential([
        keras.layers.RandomRotation(15 / 360, seed=0),
        keras.layers.RandomFlip("horizontal", seed=0),
        keras.layers.RandomTranslation(0.1, 0.1, seed=0),
        keras.layers.RandomZoom((-0.2, 0.0), seed=0),
        keras.layers.RandomBrightness(0.2, value_range=(0, 255), seed=0),
        keras.layers.RandomContrast(0.2, seed=0),
    ])
    return lambda x: layers(x, training=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 32])
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per pipeline (all rounds)")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds; the median is reported")
    args = parser.parse_args()
    import cv2

    print(f"cores: {os.cpu_count()}, TensorFlow {tf.__version__}, OpenCV {cv2.__version__} "
          f"(threads {cv2.getNumThreads()}), batch {BATCH}, median of {args.rounds} interleaved rounds")
    for size in args.sizes:
        images = make_images(512, size)
        pipelines = {
            "opencv loop": opencv_classic(images),
            "opencv, one fused warpAffine": opencv_loop(images),
            "albumentations": albumentations_loop(images),
            "stock keras chain": tf_data(images, stock_keras_chain()),
        }
        variants = {
            "ours, default (bilinear, reflect)": {},
            "ours, constant fill": {"fill_mode": "constant"},
            "ours, nearest + constant": {"fill_mode": "constant", "interpolation": "nearest"},
            "ours, nearest + reflect": {"interpolation": "nearest"},
        }
        for name, options in variants.items():
            pipelines[name] = tf_data(images, create_augmentation("default", seed=0, **options), seeded=True)
        results = interleaved(pipelines, args.seconds, args.rounds)
        fused, albu = results["opencv, one fused warpAffine"], results["albumentations"]
        print(f"\n{size}x{size} uint8")
        print(f"{'pipeline':36s} {'img/s':>9s} {'vs fused OpenCV':>16s} {'vs albumentations':>18s}")
        for name, value in results.items():
            print(f"{name:36s} {value:9.0f} {value / fused:15.2f}x {value / albu:17.2f}x")


if __name__ == "__main__":
    main()
