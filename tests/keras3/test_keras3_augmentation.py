"""Augmentation from a Keras 3 project: our policies as a Keras 3 layer (same seeded images
as in tf.data), and Keras / keras-cv preprocessing layers as items of our chains."""

import keras as keras3  # noqa: I001  (first, as in a Keras 3 project)
import keras_cv
import numpy as np
import pytest

from tfimgopt.augment import augmented_model, create_augmentation, split_augmentation
from tfimgopt.compat import keras, tf
from tfimgopt.data import build_pipeline
from tfimgopt.errors import ConfigError
from tfimgopt.keras3_layers import Keras3Augmentation as AugmentationLayer


def _batch(n=8, size=24, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype("uint8")


def test_keras3_layer_gives_the_images_tf_data_gives_batch_by_batch():
    x = _batch(16)
    labels = np.arange(16) % 3
    augment = create_augmentation("default", seed=5)
    pipeline = build_pipeline(tf.data.Dataset.from_tensor_slices((x, labels)), 4, training=True, augment=augment,
                              seed=11, shuffle_buffer=1)
    seeds = tf.data.Dataset.random(seed=11, rerandomize_each_iteration=True).batch(2)  # what the pipeline draws
    layer = AugmentationLayer("default", seed=5)
    for (images, _), seed, start in zip(pipeline, seeds, range(0, 16, 4), strict=False):
        got = layer(x[start:start + 4], seed=seed)
        np.testing.assert_array_equal(np.asarray(got), images.numpy())
        assert not np.array_equal(np.asarray(got), x[start:start + 4])  # it did augment


def test_keras3_layer_seed_stream_matches_the_tf_keras_chain():
    x = _batch()
    ours, theirs = create_augmentation("randaugment", seed=3), AugmentationLayer("randaugment", seed=3)
    for _ in range(2):  # two calls: the same stream of per-call seeds
        np.testing.assert_array_equal(np.asarray(theirs(x)), ours(x).numpy())


def test_keras3_model_with_the_layer_trains_predicts_unchanged_and_round_trips(tmp_path):
    model = keras3.Sequential([
        keras3.Input((24, 24, 3)), AugmentationLayer("default", seed=0), keras3.layers.Rescaling(1 / 255),
        keras3.layers.Conv2D(4, 3, activation="relu"), keras3.layers.GlobalAveragePooling2D(), keras3.layers.Dense(3),
    ])
    x, y = _batch(16), np.arange(16) % 3
    model.compile("adam", keras3.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    features = keras3.Model(model.inputs, model.layers[0].output)
    np.testing.assert_array_equal(np.asarray(features.predict(x, verbose=0)), x)  # inference: a pass-through
    model.save(str(tmp_path / "m.keras"))
    loaded = keras3.models.load_model(str(tmp_path / "m.keras"))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    assert isinstance(loaded.layers[0], AugmentationLayer)


def test_keras3_layer_refuses_label_mixing():
    with pytest.raises(ConfigError, match="MixUp/CutMix need the labels"):
        AugmentationLayer("mixup")


@pytest.mark.parametrize("library", ["tf_keras", "keras", "keras-cv"])
def test_foreign_preprocessing_layers_run_in_a_chain_beside_fused_ops(library):
    layer = {
        "tf_keras": lambda: keras.layers.RandomFlip("horizontal", seed=1),
        "keras": lambda: keras3.layers.RandomFlip("horizontal", seed=1),
        "keras-cv": lambda: keras_cv.layers.RandomFlip("horizontal", seed=1),
    }[library]()
    chain = create_augmentation([{"op": "random_brightness", "factor": 0.1}, layer, "random_flip"], seed=0)
    assert [type(step).__name__ for step in chain.steps] == ["RandomBrightness", "ExternalLayer", "RandomFlip"]
    assert chain.steps[1].library == library
    x = np.tile(np.arange(24, dtype="uint8")[None, None, :, None] * 10, (64, 24, 1, 3))
    pipeline = build_pipeline(tf.data.Dataset.from_tensor_slices((x, np.zeros(64))), 64, training=True,
                              augment=create_augmentation([layer], seed=0))
    images = next(iter(pipeline))[0].numpy()
    assert images.dtype == np.uint8 and images.shape == x.shape
    flipped = (images == x[:, :, ::-1]).all(axis=(1, 2, 3))
    kept = (images == x).all(axis=(1, 2, 3))
    assert (flipped | kept).all() and 10 < flipped.sum() < 54  # each image flipped or not, about half flipped


@pytest.mark.slow
def test_keras_cv_policy_runs_in_tf_data_and_keeps_dtype_and_range():
    chain = create_augmentation([keras_cv.layers.RandAugment(value_range=(0, 255), seed=0), "random_flip"], seed=0)
    pipeline = build_pipeline(tf.data.Dataset.from_tensor_slices((_batch(16), np.zeros(16))), 8, training=True,
                              augment=chain)
    images = np.concatenate([b[0].numpy() for b in pipeline])
    assert images.dtype == np.uint8 and images.shape == (16, 24, 24, 3)


def test_foreign_layers_limits_are_clear_errors():
    with pytest.raises(ConfigError, match="MixUp needs the labels.*'mixup'"):
        create_augmentation([keras_cv.layers.MixUp()])
    k3 = create_augmentation([keras3.layers.RandomRotation(0.1)])
    with pytest.raises(ConfigError, match="runs in the data pipeline only.*placement='data'"):
        augmented_model(keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten()]), k3)
    with pytest.raises(ConfigError, match="runs in the data pipeline only"):
        split_augmentation(k3, "model")
    with pytest.raises(ConfigError, match="cannot be saved inside a tf_keras model"):
        k3.get_config()
    tfk = create_augmentation([keras.layers.RandomRotation(0.1, seed=0)])
    assert type(keras.layers.deserialize(keras.layers.serialize(tfk)).steps[0].layer).__name__ == "RandomRotation"
