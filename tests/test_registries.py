"""Generic tests every registered entry gets for free: augmentation ops and policies, models,
exporters, compression techniques, data sources and stages. A new entry that needs
arguments to be built adds them to the EXAMPLES table here; one without fails loudly."""

import dataclasses
import os

import numpy as np
import pytest

from tfimgopt._registry import Registry
from tfimgopt.augment import create_augmentation, list_augmentations
from tfimgopt.augment._base import OPS, POLICIES
from tfimgopt.compat import keras, tf
from tfimgopt.compress import get_technique, list_techniques
from tfimgopt.data import find_source, list_sources
from tfimgopt.errors import ConfigError
from tfimgopt.export import Artifact, get_exporter, list_exporters
from tfimgopt.models import create_model, list_models
from tfimgopt.pipeline import RunConfig, get_stage, list_stages, load_config
from tfimgopt.pipeline.stages import fingerprint

# Arguments an op needs to be built (ops not listed are built with their defaults).
OP_ARGS = {"random_rotation": {"factor": 0.1}, "random_translation": {"height_factor": 0.2, "width_factor": 0.1},
           "random_zoom": {"height_factor": 0.2}, "random_crop": {"height": 12, "width": 10},
           "random_resized_crop": {"height": 16, "width": 16}, "random_brightness": {"factor": 0.3},
           "random_contrast": {"factor": 0.5}, "random_saturation": {"factor": 0.5}, "random_hue": {"factor": 0.2},
           "random_grayscale": {"rate": 0.5}}
# Input shape and builder options per model (small, so the suite stays fast).
MODEL_ARGS = {"small_cnn": ((16, 16, 1), {"width": 4, "dense": 16}), "tiny_cnn": ((16, 16, 1), {}),
              "compact_cnn": ((16, 16, 1), {"filters": 4}),
              "mobilenet_v3_small": ((32, 32, 3), {"minimalistic": True}),
              "mobilenet_v3_large": ((32, 32, 3), {"minimalistic": True, "alpha": 0.75}),
              "efficientnet_b0": ((32, 32, 3), {}),
              "mobilenet_v2": ((32, 32, 3), {"alpha": 0.35}), "resnet50": ((32, 32, 3), {})}


def _images(n=8, size=16, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels)).astype(np.uint8)


def _op(name):
    return OPS.get(name)(seed=1, **OP_ARGS.get(name, {}))


# --- every registry refuses duplicates and suggests close names -------------------------


def _registries():
    from tfimgopt.compress.techniques import _TECHNIQUES
    from tfimgopt.data.sources import _SOURCES
    from tfimgopt.export.exporters import _EXPORTERS
    from tfimgopt.models.zoo import _REGISTRY as MODELS
    from tfimgopt.pipeline.stages.base import _STAGES

    return {"augmentation op": OPS, "augmentation policy": POLICIES, "model": MODELS, "exporter": _EXPORTERS,
            "compression technique": _TECHNIQUES, "data source": _SOURCES, "stage": _STAGES}


@pytest.mark.parametrize("kind", list(_registries()))
def test_every_registry_refuses_duplicates_and_suggests_names(kind):
    registry = _registries()[kind]
    list_stages()  # registers the technique stages
    assert isinstance(registry, Registry) and registry.kind == kind
    name = registry.names()[0]
    with pytest.raises(ConfigError, match=f"A {kind} named '{name}' is registered already"):
        registry.register(name, object())
    with pytest.raises(ConfigError, match=f"Unknown {kind} '{name}x'; did you mean '{name}'"):
        registry.get(name + "x")
    assert registry.names() == sorted(registry.names()) and len(registry.entries()) == len(registry.names())


# --- augmentation ops and policies ---------------------------------------------------------

OP_NAMES = sorted(OPS.names())


@pytest.mark.parametrize("name", OP_NAMES)
def test_op_config_round_trips(name):
    layer = _op(name)
    config = layer.get_config()
    again = type(layer).from_config(config)
    assert again.get_config() == config
    assert keras.layers.deserialize(keras.layers.serialize(layer)).get_config() == config


@pytest.mark.parametrize("name", OP_NAMES)
def test_op_runs_on_batches_in_tf_data_and_is_seeded(name):
    layer = _op(name)
    images = _images()
    ds = tf.data.Dataset.from_tensor_slices(images).batch(4)
    if layer.takes_labels:
        labels = tf.one_hot(np.arange(8) % 3, 3)
        ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
        run = ds.map(lambda x, y: layer((x, y), seed=tf.constant([3, 4])))
        first = [b[0].numpy() for b in run]
        assert np.allclose(np.concatenate([b[1].numpy() for b in run]).sum(1), 1.0)  # label rows stay distributions
    else:
        run = ds.map(lambda x: layer(x, seed=tf.constant([3, 4])), num_parallel_calls=2)
        first = [b.numpy() for b in run]
        assert first[0].shape == tuple(layer.compute_output_shape(tf.TensorShape([4, 16, 16, 3])))
    assert first[0].dtype == np.uint8
    again = [b[0].numpy() for b in run] if layer.takes_labels else [b.numpy() for b in run]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))  # same seed, same batches
    if first[0].shape == images[:4].shape:
        assert not np.array_equal(np.concatenate(first), images)  # it did something


@pytest.mark.parametrize("name", [n for n in OP_NAMES if not OPS.get(n).takes_labels])
def test_op_saves_and_loads_inside_a_model(name, tmp_path):
    layer = _op(name)
    model = keras.Sequential([keras.Input((16, 16, 3)), layer])
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.layers[0]) is type(layer) and loaded.layers[0].get_config() == layer.get_config()
    x = _images(2).astype("float32")
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), model(x, training=False).numpy())


@pytest.mark.parametrize("name", sorted(POLICIES.names()))
def test_every_policy_builds_and_runs_in_a_pipeline(name):
    from tfimgopt.data import build_pipeline

    aug = create_augmentation(name, seed=0)
    assert name in list_augmentations()["policies"]
    images, labels = _images(8), np.arange(8) % 3
    ds = build_pipeline(tf.data.Dataset.from_tensor_slices((images, labels)), 4, training=True, seed=0, augment=aug,
                        label_mode="one_hot" if aug.takes_labels else "sparse", num_classes=3)
    x, y = next(iter(ds))
    assert x.shape[1:] == (16, 16, 3) and x.shape[0] == y.shape[0] == 4


# --- models -------------------------------------------------------------------------------


def test_every_model_has_example_arguments():
    from tfimgopt.models.zoo import _REGISTRY

    shipped = {n for n in list_models() if _REGISTRY.get(n).__module__.startswith("tfimgopt.models")} - {"my_mlp"}
    assert shipped <= set(MODEL_ARGS), "add the new model's test arguments to MODEL_ARGS"


#: Zoo models whose build + save + convert takes more than ~5 s on 2 cores: the slow tier's.
BIG_MODELS = ("resnet50", "efficientnet_b0", "mobilenet_v2", "mobilenet_v3_large")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in BIG_MODELS else n
                                  for n in sorted(MODEL_ARGS)])
def test_model_saves_loads_and_exports_to_float32_tflite(name, tmp_path):
    from tfimgopt.pipeline import load_model

    shape, options = MODEL_ARGS[name]
    model = create_model(name, shape, 3, **options)
    x = _images(4, shape[0], shape[2]).astype("float32")
    path = str(tmp_path / "m.keras")
    model.save(path)
    np.testing.assert_allclose(load_model(path)(x, training=False).numpy(), model(x, training=False).numpy(),
                               rtol=1e-6, atol=1e-6)
    artifact = get_exporter("float32").export(model, str(tmp_path / "m.tflite"))
    assert artifact.verify(model, x, num_samples=4)["passed"]


# --- exporters ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_model_and_data():
    from tfimgopt.data import build_pipeline, load_dataset

    splits = load_dataset("digits", image_size=8)
    keras.utils.set_random_seed(0)
    model = create_model("tiny_cnn", splits.info.image_shape, 10, filters=4)
    return model, splits.train.map(lambda x, y: x), build_pipeline(splits.test, 64)


@pytest.mark.parametrize("name", list_exporters())
def test_exporter_writes_an_artifact_that_verifies_measures_and_hashes_itself(name, small_model_and_data, tmp_path):
    from tfimgopt.export import open_artifact

    model, calibration, test = small_model_and_data
    exporter = get_exporter(name)
    path = str(tmp_path / exporter.artifact_path("m"))
    os.makedirs(os.path.dirname(path))
    artifact = exporter.export(model, path, calibration=calibration if exporter.needs_calibration else None,
                               num_calibration=16, metadata=None)
    assert isinstance(artifact, Artifact) and artifact.path == path and artifact.mode == name
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]  # written atomically: no leftovers
    on_disk = sum(os.path.getsize(f) for f in artifact.files())
    assert artifact.sizes()["size_bytes"] == on_disk > 0 and 0 < artifact.sizes()["gzip_bytes"]
    check = artifact.verify(model, test, num_samples=16)
    assert check["passed"] and check["criterion"], check
    measured = artifact.measure(test, latency_runs=2, warmup=1)
    keras_accuracy = float((model.predict(test, verbose=0).argmax(1) == np.concatenate(
        [np.asarray(y) for _, y in test])).mean())
    assert abs(measured["accuracy"] - keras_accuracy) <= 0.1 and measured["latency_ms_median"] > 0
    x = next(iter(test))[0].numpy()[:4]
    reopened = exporter.open(path)
    np.testing.assert_allclose(reopened.predict(x), artifact.predict(x), rtol=1e-6, atol=1e-6)
    digest = artifact.sha256()
    assert reopened.sha256() == digest and len(digest) == 64
    assert type(open_artifact(path, name)) is type(artifact)
    with open(artifact.files()[-1], "ab") as f:  # one changed byte in any of its files changes its hash
        f.write(b"\0")
    assert exporter.open(path).sha256() != digest


@pytest.mark.parametrize("name", [
    n if type(get_exporter(n).open("x")).predict_isolated is not Artifact.predict_isolated
    else pytest.param(n, marks=pytest.mark.slow)  # the generic child imports TensorFlow (~10 s)
    for n in list_exporters()])
def test_exporter_artifact_runs_in_a_child_process_with_the_same_outputs(name, small_model_and_data, tmp_path):
    model, calibration, test = small_model_and_data
    exporter = get_exporter(name)
    path = str(tmp_path / f"m{exporter.suffix}")
    artifact = exporter.export(model, path, calibration=calibration if exporter.needs_calibration else None,
                               num_calibration=16)
    x = next(iter(test))[0].numpy()[:3]
    np.testing.assert_allclose(artifact.predict_isolated(x), artifact.predict(x), rtol=1e-6, atol=1e-6)


# --- compression techniques ------------------------------------------------------------------


@pytest.mark.parametrize("name", list_techniques())
def test_technique_reads_real_settings_and_returns_a_compressed_model(name, small_model_and_data):
    from tfimgopt.data import build_pipeline, load_dataset

    technique = get_technique(name)
    config = load_config(overrides=["compress.epochs=1", "compress.qat_epochs=1", "compress.clusters=8",
                                    "compress.target_sparsity=0.5"])
    settings = technique.settings_from(config)  # every key names a real config setting
    assert set(settings) == {key.split(".")[-1] for key in technique.settings}
    model, _, _ = small_model_and_data
    source = keras.models.clone_model(model)
    source.set_weights(model.get_weights())
    train = build_pipeline(load_dataset("digits", image_size=8).train.take(128), 64, training=True)
    result = technique.apply(source, train, None, settings)
    assert result.model.output_shape == model.output_shape and isinstance(result.report, dict)
    assert technique.result in ("model", "export") and isinstance(technique.enabled(config), bool)
    x = _images(2, 8, 1).astype("float32")
    assert np.all(np.isfinite(result.model(x, training=False).numpy()))


# --- data sources -------------------------------------------------------------------------


def _shard_folder(path, images, labels):
    from tfimgopt.data import write_shards

    write_shards((np.repeat(images, 3, axis=0), np.repeat(labels, 3)), str(path), image_size=8, log=lambda _: None)
    return str(path)


def _source_examples(tmp_path):
    from tests.helpers import make_photo_folder

    images, labels = np.zeros((4, 8, 8, 1), np.uint8), np.arange(4) % 2
    np.savez(tmp_path / "data.npz", images=images, labels=labels)
    return {"digits": "digits", "tfds": "tfds:mnist", "folder": make_photo_folder(tmp_path / "photos", per_class=3),
            "arrays": (images, labels), "npz": str(tmp_path / "data.npz"),
            "shards": _shard_folder(tmp_path / "shards", images, labels),
            "dataset": tf.data.Dataset.from_tensor_slices((images, labels))}


def test_every_source_has_an_example_that_only_it_accepts(tmp_path):
    examples = _source_examples(tmp_path)
    assert set(list_sources()) == set(examples), "add the new source's example to _source_examples"
    for name, example in examples.items():
        assert find_source(example).name == name
    assert find_source("no-such-thing") is None


# --- stages ---------------------------------------------------------------------------------


def _all_config_keys():
    def walk(obj, prefix):
        for field in dataclasses.fields(obj):
            value = getattr(obj, field.name)
            yield f"{prefix}{field.name}"
            if dataclasses.is_dataclass(value):
                yield from walk(value, f"{prefix}{field.name}.")

    return set(walk(RunConfig(), ""))


def _other_value(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, value[0]] if value else [1]
    return {"changed": True}


@pytest.mark.parametrize("name", list_stages())
def test_stage_fingerprint_follows_exactly_its_settings(name):
    stage = get_stage(name)
    assert stage.name == name
    keys = _all_config_keys()
    assert stage.settings and set(stage.settings) <= keys, f"{name} reads unknown settings {stage.settings}"
    config = RunConfig()
    base = fingerprint(stage, config, "data", [{"a": 1}])
    assert fingerprint(stage, RunConfig(), "data", [{"a": 1}]) == base  # deterministic
    assert fingerprint(stage, config, "data", [{"a": 2}]) != base  # an earlier stage's record changed
    assert (fingerprint(stage, config, "other data", [{"a": 1}]) != base) == stage.uses_data
    for key in stage.settings:
        changed = RunConfig()
        *parents, leaf = key.split(".")
        node = changed
        for part in parents:
            node = getattr(node, part)
        if dataclasses.is_dataclass(getattr(node, leaf)):  # a whole section: change one field of it
            node, leaf = getattr(node, leaf), dataclasses.fields(getattr(node, leaf))[0].name
        setattr(node, leaf, _other_value(getattr(node, leaf)))
        assert fingerprint(stage, changed, "data", [{"a": 1}]) != base, key
    untouched = RunConfig()
    untouched.export.optimize_for, untouched.export.max_accuracy_drop = "latency", 9.0  # selection only
    assert fingerprint(stage, untouched, "data", [{"a": 1}]) == base
    assert isinstance(stage.enabled(config), bool)
