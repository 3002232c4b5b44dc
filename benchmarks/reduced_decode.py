"""Does decoding JPEGs at reduced size change what a model sees? PSNR and accuracy against the
full decode + antialiased resize.

`tfimgopt.data.sources.decode_resized` (folders, TFDS) decodes a JPEG at 1/2, 1/4 or 1/8 size
with libjpeg's DCT scaling and resizes the rest of the way (bilinear within 2x). This script
writes `--images` 640x480 JPEG photos (quality 90) of a 10-class texture task made offline from
scikit-learn's two bundled photos (class = one of 10 fixed regions, each image a jittered 4:3
crop of 0.56-0.75x the photo's height, so the files keep the photo's detail), decodes every file three ways at `--size`:

- reference: full decode + antialiased resize (what the folder source did before issue 35);
- ours: `decode_resized`;
- plain: full decode + bilinear resize without antialiasing (what a user writes);

and reports the PSNR of ours and plain against the reference, then trains one small CNN per
seed on the reference images and one on ours (same split, same seed, same steps) and evaluates
each on the test images decoded every way. If the reduced decode mattered, the model trained on
reference images would lose accuracy on ours, or the model trained on ours would be worse.

Usage: python benchmarks/reduced_decode.py [--images 800] [--size 224] [--seeds 3] [--epochs 12]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

WAYS = ("reference", "ours", "plain")
REGIONS_PER_PHOTO = 5


def write_photos(root: str, count: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """`count` 640x480 JPEGs of 10 classes: 5 fixed regions of each bundled photo, jittered."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = load_sample_images().images  # two 427x640 photos
    paths, labels = [], []
    for i in range(count):
        label = i % (2 * REGIONS_PER_PHOTO)
        photo = photos[label // REGIONS_PER_PHOTO]
        h, w = photo.shape[:2]
        crop_h = int(rng.integers(240, 321))  # 4:3 crops of 0.56-0.75x the photo's height: little upscaling,
        crop_w = crop_h * 4 // 3  # so the files keep the photo's detail
        low, high = crop_w // 2, w - crop_w // 2  # where a crop's centre can be; 5 regions across
        cx = int(np.clip(low + (label % REGIONS_PER_PHOTO + 0.5) / REGIONS_PER_PHOTO * (high - low)
                         + rng.integers(-10, 11), low, high))
        top = int(rng.integers(0, h - crop_h + 1))
        crop = photo[top:top + crop_h, cx - crop_w // 2:cx - crop_w // 2 + crop_w]
        path = os.path.join(root, f"{i:05d}.jpg")
        Image.fromarray(crop).resize((640, 480), Image.BICUBIC).save(path, quality=90)
        paths.append(path)
        labels.append(label)
    return paths, labels


def decode_all(paths: list[str], size: int):
    import numpy as np

    from tfimgopt.compat import tf
    from tfimgopt.data.sources import decode_resized

    def reference(data):
        image = tf.image.resize(tf.cast(tf.io.decode_jpeg(data, channels=3), tf.float32), (size, size), antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)

    def plain(data):
        return tf.cast(tf.image.resize(tf.io.decode_jpeg(data, channels=3), (size, size)), tf.uint8)

    def ours(data):
        return decode_resized(data, 3, (size, size))

    out = {}
    for name, fn in (("reference", reference), ("ours", ours), ("plain", plain)):
        ds = tf.data.Dataset.from_tensor_slices(paths).map(lambda p, fn=fn: fn(tf.io.read_file(p)))
        out[name] = np.stack(list(ds.as_numpy_iterator()))
    return out


def psnr(a, b) -> float:
    import numpy as np

    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def train(images, labels, seed: int, epochs: int, size: int):
    from tfimgopt.compat import keras, tf

    tf.keras.utils.set_random_seed(seed)
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((size, size, 3)), layers.Rescaling(1 / 255.0),
        layers.Conv2D(16, 3, strides=2, use_bias=False), layers.BatchNormalization(), layers.ReLU(),
        layers.MaxPooling2D(),
        layers.Conv2D(32, 3, use_bias=False), layers.BatchNormalization(), layers.ReLU(), layers.MaxPooling2D(),
        layers.Conv2D(64, 3, use_bias=False), layers.BatchNormalization(), layers.ReLU(),
        layers.GlobalAveragePooling2D(),
        layers.Dense(10),
    ])
    model.compile(keras.optimizers.Adam(2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(images, labels, batch_size=32, epochs=epochs, verbose=0, shuffle=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        paths, labels = write_photos(tmp, args.images)
        decoded = decode_all(paths, args.size)
    labels = np.asarray(labels)
    per_image = {way: [psnr(decoded[way][i], decoded["reference"][i]) for i in range(len(labels))]
                 for way in ("ours", "plain")}
    print(f"{args.images} JPEGs 640x480 -> {args.size}: PSNR against the reference (mean, min over images)")
    for way, values in per_image.items():
        print(f"  {way}: {statistics.mean(values):.1f} dB, min {min(values):.1f} dB")
    order = np.random.default_rng(0).permutation(len(labels))
    test, fit = order[:len(order) // 4], order[len(order) // 4:]
    rows = {}
    for seed in range(args.seeds):
        for trained_on in ("reference", "ours"):
            model = train(decoded[trained_on][fit], labels[fit], seed, args.epochs, args.size)
            for way in WAYS:
                _, accuracy = model.evaluate(decoded[way][test], labels[test], verbose=0)
                rows.setdefault((trained_on, way), []).append(accuracy)
        print(f"seed {seed + 1}/{args.seeds} done", flush=True)
    print(f"\n| trained on | tested on reference | tested on ours | tested on plain |  ({len(test)} test images, "
          f"{args.seeds} seeds: mean, min-max)")
    print("|---|---:|---:|---:|")
    for trained_on in ("reference", "ours"):
        cells = [rows[(trained_on, way)] for way in WAYS]
        print(f"| {trained_on} | " + " | ".join(
            f"{100 * statistics.mean(c):.2f}% ({100 * min(c):.1f}-{100 * max(c):.1f})" for c in cells) + " |")
    gaps = [a - b for a, b in zip(rows[("reference", "reference")], rows[("reference", "ours")], strict=True)]
    print("\nreference-trained model, reference minus ours test accuracy per seed: "
          + ", ".join(f"{100 * g:+.2f}" for g in gaps) + " points")


if __name__ == "__main__":
    main()
