"""Augmentation layers: geometry, colour ranges, validation, tf.data use, determinism."""

import numpy as np
import pytest

from tests.helpers import PYTHON_OPS, dataset_graph_ops
from tfimgopt import augment as A
from tfimgopt.augment._base import _gather_warp, reduce_spatial
from tfimgopt.augment.geometric import GeometricLayer
from tfimgopt.compat import keras, tf
from tfimgopt.errors import ConfigError


def _images(n=8, size=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype(np.uint8)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: A.RandomRotation(2.0), "factor must lie within"),
        (lambda: A.RandomRotation("big"), "Received: factor='big'"),
        (lambda: A.RandomFlip("diagonal"), "Received: mode='diagonal'"),
        (lambda: A.RandomTranslation(0.1, (0.3, 0.1)), "lower <= upper"),
        (lambda: A.RandomCrop(0, 4), "Received: height=0"),
        (lambda: A.RandomBrightness(1.5), "Received: factor=1.5"),
        (lambda: A.RandomHue(0.7), "Received: factor=0.7"),
        (lambda: A.RandomGrayscale(rate=2), "Received: rate=2"),
        (lambda: A.RandomRotation(0.1, interpolation="cubic"), "Received: interpolation='cubic'"),
        (lambda: A.RandomRotation(0.1, fill_mode="mirror"), "Received: fill_mode='mirror'"),
        (lambda: A.RandomRotation(0.1, seed=-1), "Received: seed=-1"),
        (lambda: A.RandomContrast(0.1, value_range=(1, 0)), r"Received: value_range=\(1, 0\)"),
        (lambda: A.RandAugment(num_ops=0), "Received: num_ops=0"),
        (lambda: A.RandAugment(ops=["rotate", "blur"]), "Received: ops="),
        (lambda: A.MixUp(alpha=0), "Received: alpha=0"),
        (lambda: A.AugMix(severity=3), "Received: severity=3"),
    ],
)
def test_bad_arguments_name_the_value(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_bad_inputs_are_named():
    with pytest.raises(ConfigError, match="batches of images"):
        A.RandomFlip()(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ConfigError, match="needs images at least"):
        A.RandomCrop(20, 20)(np.zeros((2, 16, 16, 3), np.uint8))
    with pytest.raises(ConfigError, match="needs RGB"):
        A.RandomHue(0.1)(np.zeros((2, 16, 16, 1), np.uint8))
    with pytest.raises(ConfigError, match="label_mode='one_hot'"):
        A.MixUp()((np.zeros((2, 8, 8, 3), np.uint8), np.array([0, 1])))


def _known_image(size=8):
    img = np.arange(size * size * 3, dtype=np.uint8).reshape(size, size, 3)
    return np.stack([img, img[::-1]])


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_quarter_turn_is_exact_rot90(interpolation):
    images = _known_image()
    out = A.RandomRotation((0.25, 0.25), interpolation=interpolation)(images, seed=[0, 0]).numpy()
    np.testing.assert_array_equal(out, np.rot90(images, k=1, axes=(1, 2)))


def test_flips_give_exact_mirror_images():
    images = np.repeat(_known_image()[:1], 32, axis=0)
    out = A.RandomFlip("horizontal")(images, seed=[3, 4]).numpy()
    flipped = np.array([np.array_equal(o, images[0, :, ::-1]) for o in out])
    kept = np.array([np.array_equal(o, images[0]) for o in out])
    assert np.all(flipped | kept) and flipped.any() and kept.any()
    out = A.RandomFlip("vertical")(images, seed=[3, 4]).numpy()
    assert all(np.array_equal(o, images[0, ::-1]) or np.array_equal(o, images[0]) for o in out)


def test_translation_moves_a_bright_pixel_by_the_expected_offset():
    image = np.zeros((1, 16, 16, 1), np.float32)
    image[0, 5, 6, 0] = 1.0
    layer = A.RandomTranslation((0.25, 0.25), (-0.125, -0.125), fill_mode="constant")
    out = layer(image, seed=[0, 1]).numpy()[0, :, :, 0]
    assert np.unravel_index(out.argmax(), out.shape) == (9, 4)
    assert out.max() == pytest.approx(1.0) and out.sum() == pytest.approx(1.0)


def test_random_crop_returns_a_window_of_the_input():
    images = _known_image(16)
    out = A.RandomCrop(10, 12)(images, seed=[1, 1]).numpy()
    for src, crop in zip(images, out, strict=False):
        windows = [
            (y, x) for y in range(7) for x in range(5) if np.array_equal(src[y : y + 10, x : x + 12], crop)
        ]
        assert windows
    center = A.RandomCrop(10, 12)(images, training=False).numpy()
    np.testing.assert_array_equal(center, images[:, 3:13, 2:14])


@pytest.mark.parametrize("fill_mode", ["reflect", "constant", "nearest"])
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_xla_warp_matches_tensorflow_kernel(fill_mode, interpolation):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (3, 12, 10, 2)).astype(np.float32)
    angle = rng.uniform(-0.5, 0.5, 3)
    transforms = np.stack(
        [np.cos(angle), -np.sin(angle), rng.uniform(-3, 3, 3), np.sin(angle) * 1.1, np.cos(angle),
         rng.uniform(-3, 3, 3), np.zeros(3), np.zeros(3)], axis=1).astype(np.float32)
    ours = _gather_warp(tf.constant(images), tf.constant(transforms), (12, 10), interpolation, fill_mode, 0.25)
    theirs = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=[12, 10], fill_value=0.25,
        interpolation=interpolation.upper(), fill_mode=fill_mode.upper())
    # Nearest sampling may round a coordinate that sits on .5 the other way.
    close = np.isclose(ours.numpy(), theirs.numpy(), atol=1e-5)
    assert close.mean() > (0.98 if interpolation == "nearest" else 0.999)


@pytest.mark.parametrize("fill_mode", ["reflect", "constant"])
def test_affine_warp_skips_the_divide_with_the_same_pixels(fill_mode):
    """Built-in layers promise affine matrices: the warp then leaves out the perspective divide
    (by exactly 1.0), so the pixels are the same; a projective matrix still goes the long way."""
    rng = np.random.default_rng(2)
    images = tf.constant(rng.integers(0, 256, (3, 16, 20, 3)).astype(np.uint8))
    angle = rng.uniform(-0.4, 0.4, 3)
    affine = np.stack([np.cos(angle), -np.sin(angle), rng.uniform(-5, 5, 3), np.sin(angle), np.cos(angle),
                       rng.uniform(-5, 5, 3), np.zeros(3), np.zeros(3)], axis=1).astype(np.float32)
    fast = _gather_warp(images, tf.constant(affine), (16, 20), "bilinear", fill_mode, 0.0, affine=True)
    slow = _gather_warp(images, tf.constant(affine), (16, 20), "bilinear", fill_mode, 0.0)
    np.testing.assert_array_equal(fast.numpy(), slow.numpy())
    projective = affine.copy()
    projective[:, 6] = 0.01
    bent = _gather_warp(images, tf.constant(projective), (16, 20), "bilinear", fill_mode, 0.0)
    assert not np.array_equal(bent.numpy(), slow.numpy())
    assert all(layer.affine for layer in A.create_augmentation("default").steps if layer.kind == "geometric")

    if fill_mode != "reflect":
        return

    class Bend(GeometricLayer):  # a layer of your own, projective: it keeps the general path by default
        def transform(self, batch, height, width, seed):
            matrix = tf.reshape(tf.constant(np.append(projective[0], 1.0), tf.float32), [1, 3, 3])
            return tf.tile(matrix, [batch, 1, 1]), (height, width)

    assert not Bend.affine
    chain = A.Augmentation([Bend(), A.RandomRotation(0.0)], seed=0)  # fused with an affine layer
    np.testing.assert_array_equal(chain(images[:1], seed=[0, 0]).numpy(), bent.numpy()[:1])


@pytest.mark.parametrize("fill_value", [0.0, 7.0, 0.25])
def test_constant_fill_of_uint8_images_matches_tensorflow_kernel(fill_value):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (2, 9, 11, 3)).astype(np.uint8)
    angle = rng.uniform(-0.6, 0.6, 2)
    transforms = np.stack(
        [np.cos(angle), -np.sin(angle), rng.uniform(-4, 4, 2), np.sin(angle), np.cos(angle), rng.uniform(-4, 4, 2),
         np.zeros(2), np.zeros(2)], axis=1).astype(np.float32)
    ours = _gather_warp(tf.constant(images), tf.constant(transforms), (9, 11), "bilinear", "constant", fill_value)
    theirs = tf.raw_ops.ImageProjectiveTransformV3(
        images=images.astype(np.float32), transforms=transforms, output_shape=[9, 11], fill_value=fill_value,
        interpolation="BILINEAR", fill_mode="CONSTANT")
    expected = np.clip(np.floor(theirs.numpy() + 0.5), 0, 255)
    assert np.abs(ours.numpy().astype(np.int32) - expected).max() <= 1  # float rounding at .5 only
    assert (ours.numpy() == expected).mean() > 0.99


def test_wrap_fill_is_periodic_like_np_roll():
    # TensorFlow's kernel wraps with period (size - 1); ours wraps with the image size.
    images = _known_image(8)
    out = A.RandomTranslation((0.25, 0.25), (0.5, 0.5), fill_mode="wrap")(images, seed=[0, 0]).numpy()
    np.testing.assert_array_equal(out, np.roll(images, (2, 4), axis=(1, 2)))


@pytest.mark.parametrize("layer_cls", [A.RandomBrightness, A.RandomContrast, A.RandomSaturation, A.RandomHue])
def test_colour_ops_keep_the_value_range(layer_cls):
    images = np.random.default_rng(1).uniform(0, 1, (16, 8, 8, 3)).astype(np.float32)
    factor = 0.5 if layer_cls is A.RandomHue else 0.9
    out = layer_cls(factor, value_range=(0, 1))(images, seed=[2, 3]).numpy()
    assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0
    assert not np.allclose(out, images)


def test_zero_strength_colour_ops_change_nothing():
    images = _images(4, 8)
    for layer in [A.RandomBrightness(0.0), A.RandomContrast(0.0), A.RandomSaturation(0.0), A.RandomHue(0.0)]:
        np.testing.assert_array_equal(layer(images, seed=[0, 0]).numpy(), images)


def test_grayscale_has_equal_channels_and_luma():
    images = _images(2, 4).astype(np.float32)
    out = A.RandomGrayscale(rate=1.0, value_range=(0, 255))(images, seed=[0, 0]).numpy()
    luma = images @ np.array([0.2989, 0.5870, 0.1140], np.float32)
    np.testing.assert_allclose(out, np.repeat(luma[..., None], 3, axis=-1), rtol=1e-5)


def test_equalize_matches_pillow():
    from PIL import Image, ImageOps

    from tfimgopt.augment.policies import _equalize

    rng = np.random.default_rng(0)
    images = np.stack([rng.normal(80, 15, (64, 64, 3)).clip(0, 255), np.full((64, 64, 3), 7.0)]).astype(np.uint8)
    ours = np.round(_equalize(tf.constant(images / 255.0, tf.float32), None).numpy() * 255).astype(np.uint8)
    for mine, image in zip(ours, images, strict=False):
        np.testing.assert_array_equal(mine, np.asarray(ImageOps.equalize(Image.fromarray(image))))
    assert ours[0].max() > 200  # the narrow histogram was really stretched


@pytest.mark.parametrize("cls", [A.MixUp, A.CutMix])
def test_label_mixing_rows_sum_to_one(cls):
    images = _images(16, 8)
    labels = tf.one_hot(np.arange(16) % 4, 4)
    out, mixed = cls(alpha=1.0)((images, labels), seed=[5, 6])
    assert out.dtype == tf.uint8 and out.shape == images.shape
    np.testing.assert_allclose(mixed.numpy().sum(axis=1), 1.0, rtol=1e-6)
    assert (mixed.numpy().max(axis=1) < 1.0).any()


def test_mixup_blends_images_and_labels_with_the_same_weight():
    n = 8
    images = np.random.default_rng(0).uniform(0, 255, (n, 4, 4, 3)).astype(np.float32)
    labels = tf.one_hot(np.arange(n), n)  # one class per image exposes the weights
    out, mixed = A.MixUp(alpha=0.4)((images, labels), seed=[1, 2])
    expected = np.einsum("ij,jhwc->ihwc", mixed.numpy(), images)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-3)


def test_cutmix_label_weights_equal_pasted_area():
    n = 8
    images = np.broadcast_to((np.arange(n, dtype=np.float32) * 20 + 3)[:, None, None, None], (n, 16, 16, 1))
    labels = tf.one_hot(np.arange(n), n)
    out, mixed = A.CutMix(alpha=1.0)((images, labels), seed=[7, 8])
    out = out.numpy()
    for i in range(n):
        shares = np.array([np.mean(out[i] == images[j, 0, 0, 0]) for j in range(n)])
        np.testing.assert_allclose(shares, mixed.numpy()[i], atol=1e-6)


@pytest.mark.slow
def test_policies_are_deterministic_with_a_seed_and_vary_without():
    images = _images(8, 16)
    for name in ["default", "randaugment", "augmix"]:
        a = A.create_augmentation(name)(images, seed=[1, 2]).numpy()
        b = A.create_augmentation(name)(images, seed=[1, 2]).numpy()
        c = A.create_augmentation(name)(images, seed=[1, 3]).numpy()
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_pipeline_batches_are_identical_across_runs_and_differ_across_epochs(digits16):
    from tfimgopt.data import build_pipeline

    def epochs():
        aug = A.create_augmentation("digits", seed=0)
        ds = build_pipeline(digits16.train.take(64), 16, training=True, seed=3, augment=aug)
        return [np.concatenate([x.numpy() for x, _ in ds]) for _ in range(2)]

    first, second = epochs(), epochs()
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[0], first[1])


@pytest.mark.slow
def test_augmented_pipeline_graph_has_no_python_ops(digits16):
    from tfimgopt.data import build_pipeline

    spec = ["digits", {"op": "randaugment", "num_ops": 2}, "augmix", "cutmix", "mixup"]
    aug = A.create_augmentation(spec, seed=0)
    ds = build_pipeline(digits16.train, 8, training=True, augment=aug, label_mode="one_hot", num_classes=10)
    images, labels = next(iter(ds))
    np.testing.assert_allclose(labels.numpy().sum(axis=1), 1.0, rtol=1e-5)
    assert not dataset_graph_ops(ds) & set(PYTHON_OPS)


def test_spec_parsing_and_factory_errors():
    aug = A.create_augmentation([{"op": "random_rotation", "factor": 0.05}, "random_flip", "mixup"], seed=2)
    assert [type(layer).__name__ for layer in aug.steps] == ["RandomRotation", "RandomFlip", "MixUp"]
    assert aug.takes_labels
    assert set(A.list_augmentations()["policies"]) >= {"default", "randaugment", "augmix", "mixup", "cutmix"}
    with pytest.raises(ConfigError, match="Did you mean 'randaugment'"):
        A.create_augmentation("randaugmnet")
    with pytest.raises(ConfigError, match=r"has no parameter\(s\) \['angle'\]"):
        A.create_augmentation([{"op": "random_rotation", "angle": 3}])
    with pytest.raises(ConfigError, match="missing 1 required"):
        A.create_augmentation(["random_rotation"])
    with pytest.raises(ConfigError, match="'op' key"):
        A.create_augmentation([{"factor": 0.1}])
    with pytest.raises(ConfigError, match="Received: spec=3"):
        A.create_augmentation(3)


def test_geometric_runs_fuse_into_one_warp():
    aug = A.create_augmentation("default")
    assert [kind for kind, _ in aug._plan] == ["geometric", "color"]
    mixed = A.Augmentation([A.RandomRotation(0.1), A.RandomZoom(0.1, interpolation="nearest")])
    assert len(mixed._plan) == 2


def test_placement_auto_is_data_on_cpu_and_split_keeps_label_ops_in_data(mirrored):
    assert A.resolve_placement("auto") == "data"
    assert A.resolve_placement("auto", mirrored) == "data"
    with pytest.raises(ConfigError, match="Received: placement='gpu'"):
        A.resolve_placement("gpu")
    data, model = A.split_augmentation(A.create_augmentation("mixup"), "model")
    assert [type(x).__name__ for x in data.steps] == ["MixUp"]
    assert [type(x).__name__ for x in model.steps] == ["RandomFlip"]


@pytest.mark.slow
def test_model_placement_trains_saves_and_loads(tmp_path):
    from tfimgopt.models import create_model

    keras.utils.set_random_seed(0)
    base = create_model("tiny_cnn", (16, 16, 3), 3)
    model = A.augmented_model(base, A.create_augmentation("default", seed=0))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _images(8, 16), np.arange(8) % 3
    model.fit(x, y, epochs=1, verbose=0)
    np.testing.assert_allclose(model.predict(x, verbose=0), base.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    path = str(tmp_path / "aug.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    assert type(loaded.layers[1]).__name__ == "Augmentation"


def test_preview_grid_writes_a_png(tmp_path, digits16):
    images, labels = next(iter(digits16.train.batch(4)))
    path = tmp_path / "grid.png"
    A.preview_grid(images, A.create_augmentation("cutmix", seed=0), labels=labels.numpy(), num_classes=10,
                   variants=3, path=path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_pipeline_switches_to_one_hot_for_label_mixing(digits16):
    from tfimgopt.data import build_pipeline
    from tfimgopt.errors import DataError

    mix = A.create_augmentation("mixup", seed=0)
    ds = build_pipeline(digits16.train, 8, training=True, augment=mix, num_classes=10)
    assert ds.element_spec[1].shape.as_list() == [None, 10]
    with pytest.raises(DataError, match="needs one-hot labels"):
        build_pipeline(digits16.train, 8, training=True, augment=mix)


@pytest.mark.slow
def test_model_placement_trains_under_two_replicas(mirrored):
    from tfimgopt.models import create_model

    with mirrored.scope():
        model = A.augmented_model(create_model("tiny_cnn", (16, 16, 3), 3), A.create_augmentation("default", seed=0))
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(_images(16, 16), np.arange(16) % 3, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


@pytest.mark.parametrize("shape", [(3, 12, 10, 3), (2, 9, 11, 1), (2, 224, 224, 3)])
def test_reduce_spatial_matches_a_direct_reduction(shape):
    images = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    for reduce, reference in ((tf.reduce_sum, np.sum), (tf.reduce_min, np.min), (tf.reduce_max, np.max)):
        expected = reference(images.astype(np.float64), axis=(1, 2), keepdims=True)
        static = reduce_spatial(tf.constant(images), reduce).numpy()
        dynamic = tf.function(lambda x, r=reduce: reduce_spatial(x, r),
                              input_signature=[tf.TensorSpec([None, None, None, shape[-1]])])(images).numpy()
        assert static.shape == dynamic.shape == expected.shape
        np.testing.assert_allclose(static, expected, rtol=1e-6)  # row-first sums are the more accurate ones
        np.testing.assert_allclose(dynamic, expected, rtol=1e-5)
