"""The bad-input sweep: every public entry point, a catalogue of bad values, our errors.

Each case must raise the documented error type (a `TfimgoptError`, mostly `ConfigError`
or `DataError`, both `ValueError`s) with a message that names the bad value.  Property
tests check that the config and augmentation-spec parsers never fail any other way.
"""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfimgopt.compat import keras, tf
from tfimgopt.errors import ConfigError, DataError, TfimgoptError


def _tiny_model():
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])


class _Subclassed(keras.Model):
    def call(self, x):
        return x


def _labelled_batches():
    x = np.zeros((4, 8, 8, 1), np.float32)
    return tf.data.Dataset.from_tensor_slices((x, np.zeros(4, np.int64))).batch(2)


def _corrupt_tflite(tmp_path):
    path = tmp_path / "bad.tflite"
    path.write_bytes(b"TFL3" + b"\x00" * 40)
    return str(path)


# (id, callable taking tmp_path, error type, regex the message must contain)
CATALOGUE = [
    # data sources
    ("source-unknown-name", lambda t: _data().load_dataset("mnist"), DataError, "mnist"),
    ("source-wrong-type", lambda t: _data().load_dataset(42), DataError, "42"),
    ("source-missing-folder", lambda t: _data().load_dataset(str(t / "nope")), DataError, "nope"),
    ("source-folder-without-classes", lambda t: _data().load_dataset(str(t)), DataError, "class subfolders"),
    ("source-tfds-typo", lambda t: _data().load_dataset("tfds:cifar100000", download=False), DataError, "cifar100000"),
    ("image-size-zero", lambda t: _data().load_dataset("digits", image_size=0), DataError, "image_size=0"),
    ("image-size-float", lambda t: _data().load_dataset("digits", image_size=3.5), DataError, "image_size=3.5"),
    ("channels-two", lambda t: _data().load_dataset("digits", channels=2), DataError, "channels=2"),
    ("arrays-nan-images", lambda t: _data().load_dataset((np.full((20, 8, 8, 1), np.nan), np.arange(20) % 2)),
     DataError, "NaN"),
    ("arrays-wrong-rank", lambda t: _data().load_dataset((np.zeros((20, 8)), np.arange(20) % 2)), DataError, "shape"),
    ("arrays-empty", lambda t: _data().load_dataset((np.zeros((0, 8, 8, 1)), np.zeros(0))), DataError, "0"),
    ("arrays-negative-label", lambda t: _data().load_dataset((np.zeros((20, 8, 8, 1)), np.arange(20) - 1)),
     DataError, "-1"),
    ("batch-size-zero", lambda t: _data().build_pipeline(tf.data.Dataset.range(3), 0), DataError, "batch_size=0"),
    ("label-mode", lambda t: _data().build_pipeline(tf.data.Dataset.range(3), 2, label_mode="soft"), DataError,
     "label_mode='soft'"),
    ("hold-out-too-many", lambda t: _data().hold_out_labels(
        tf.data.Dataset.from_tensor_slices((np.zeros((5, 2, 2, 1)), np.arange(5))), 5), DataError, "labelled=5"),
    ("unlabelled-folder-missing", lambda t: _data().load_unlabelled(str(t / "x")), DataError, "x'"),
    # augmentation
    ("aug-unknown", lambda t: _aug().create_augmentation("rotate90"), ConfigError, "rotate90"),
    ("aug-spec-not-list", lambda t: _aug().create_augmentation({"op": "mixup"}), ConfigError, "spec="),
    ("aug-bad-param", lambda t: _aug().create_augmentation([{"op": "mixup", "beta": 1}]), ConfigError, "beta"),
    ("aug-bad-factor", lambda t: _aug().RandomZoom(-2.0), ConfigError, "height_factor"),
    ("aug-rank", lambda t: _aug().RandomRotation(0.1)(np.zeros((8, 8), np.uint8)), ConfigError, "shape"),
    ("aug-placement", lambda t: _aug().resolve_placement("tpu"), ConfigError, "placement='tpu'"),
    ("aug-sampling-option", lambda t: _aug().create_augmentation("default", blur=1), ConfigError, "blur"),
    # models
    ("model-unknown", lambda t: _models().create_model("vgg99", (8, 8, 1), 3), ConfigError, "vgg99"),
    ("model-one-class", lambda t: _models().create_model("tiny_cnn", (8, 8, 1), 1), ConfigError, "num_classes=1"),
    # compression
    ("prune-sparsity", lambda t: _compress().prune(_tiny_model(), 1.5), ConfigError, "1.5"),
    ("prune-subclassed", lambda t: _compress().prune(_Subclassed(), 0.5), ConfigError, "Subclassed|subclassed"),
    ("prune-schedule", lambda t: _compress().prune(_tiny_model(), 0.5, schedule="cosine"), ConfigError, "cosine"),
    ("qat-subclassed", lambda t: _compress().quantize_aware(_Subclassed()), ConfigError, "ubclassed"),
    # export
    ("export-mode", lambda t: _export().export_tflite(_tiny_model(), "int4"), ConfigError, "mode='int4'"),
    ("export-int8-no-data", lambda t: _export().export_tflite(_tiny_model(), "int8"), ConfigError,
     "representative_data=None"),
    ("export-io-type", lambda t: _export().export_tflite(_tiny_model(), "float32", io_type="int8"), ConfigError,
     "io_type"),
    ("export-wrong-calibration-shape", lambda t: _export().export_tflite(_tiny_model(), "int8", np.zeros((4, 5, 5, 1))),
     DataError, "shape"),
    ("tflite-corrupt", lambda t: _export().evaluate_tflite(_corrupt_tflite(t), _labelled_batches()), DataError,
     "Not a valid TFLite model"),
    ("tflite-missing", lambda t: _export().TFLiteRunner(str(t / "missing.tflite")), DataError, "missing.tflite"),
    # distillation
    ("distill-alpha", lambda t: _distill().Distiller(_tiny_model(), _tiny_model(), alpha=2), ConfigError, "alpha=2"),
    ("distill-temperature", lambda t: _distill().Distiller(_tiny_model(), _tiny_model(), temperature=0), ConfigError,
     "temperature=0"),
    ("distill-not-a-model", lambda t: _distill().Distiller("teacher.keras", _tiny_model()), ConfigError, "str"),
    ("tune-method", lambda t: _distill().tune_distillation(_tiny_model(), _tiny_model, _labelled_batches(),
                                                          _labelled_batches(), method="bayes"), ConfigError, "bayes"),
    # distribution
    ("strategy-kind", lambda t: _distribute().create_strategy("gpus"), ConfigError, "kind='gpus'"),
    ("strategy-tpu-missing", lambda t: _distribute().create_strategy("tpu", verbose=False), TfimgoptError,
     "No TPU found"),
    ("precision", lambda t: _distribute().choose_precision("fp16"), ConfigError, "precision='fp16'"),
    ("batch-plan", lambda t: _distribute().plan_batches(per_replica=0), ConfigError, "per_replica=0"),
    # configs and files
    ("config-unknown-key", lambda t: _pipeline().load_config(overrides=["train.lr=1"]), ConfigError, "train.lr"),
    ("config-type", lambda t: _pipeline().load_config(overrides=["data.batch_size=big"]), ConfigError, "'big'"),
    ("config-missing-file", lambda t: _pipeline().load_config(str(t / "c.yaml")), ConfigError, "c.yaml"),
    ("model-file-corrupt", lambda t: _pipeline().load_model(_junk(t, "m.keras")), ConfigError, "m.keras"),
    ("model-file-missing", lambda t: _pipeline().load_model(str(t / "none.keras")), ConfigError, "none.keras"),
    ("safe-join-escape", lambda t: __import__("tfimgopt._io", fromlist=["x"]).safe_join(str(t), "../evil.tflite"),
     ConfigError, r"\.\./evil"),
    ("safe-join-absolute", lambda t: __import__("tfimgopt._io", fromlist=["x"]).safe_join(str(t), "/etc/passwd"),
     ConfigError, "/etc/passwd"),
    ("verify-not-a-run", lambda t: __import__("tfimgopt.pipeline.steps", fromlist=["x"]).verify_run(str(t)),
     ConfigError, "No report.json"),
]


def _junk(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"PK\x03\x04 definitely not a keras archive")
    return str(path)


def _data():
    import tfimgopt.data as m

    return m


def _aug():
    import tfimgopt.augment as m

    return m


def _models():
    import tfimgopt.models as m

    return m


def _compress():
    import tfimgopt.compress as m

    return m


def _export():
    import tfimgopt.export as m

    return m


def _distill():
    import tfimgopt.distill as m

    return m


def _distribute():
    import tfimgopt.distribute as m

    return m


def _pipeline():
    import tfimgopt.pipeline as m

    return m


@pytest.mark.parametrize("case", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_bad_input_raises_our_error_naming_the_value(case, tmp_path):
    _, call, error, pattern = case
    with pytest.raises(error, match=pattern) as info:
        call(tmp_path)
    assert isinstance(info.value, TfimgoptError)


CLI_CASES = [
    (["run", "--set", "train.epochs=0"], "train.epochs=0"),
    (["run", "--source", "/no/such/dir"], "/no/such/dir"),
    (["run", "--optimize-for", "accuracy", "--max-accuracy-drop", "-1"], "max_accuracy_drop=-1"),
    (["run", "missing.yaml"], "missing.yaml"),
    (["evaluate", "nothing.tflite"], "nothing.tflite"),
    (["export", "m.keras", "-o", "out.tflite", "--mode", "int2"], "invalid choice: 'int2' (choose from 'dynamic'"),
    (["run", "--model", "mobilenet"], "invalid choice: 'mobilenet' (choose from 'mobilenet_v2'"),
    (["export", "m.keras", "-o", "out.tflite"], "m.keras"),
    (["augment-preview", "--policy", "[{op: random_hue, factor: 2}]"], "factor=2"),
    (["verify", "/no/run"], "No report.json"),
]


@pytest.mark.parametrize("argv, fragment", CLI_CASES, ids=[" ".join(c[0][:2]) for c in CLI_CASES])
def test_cli_bad_flags_exit_2_with_the_value(argv, fragment, capsys, tmp_path, monkeypatch):
    from tfimgopt.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert fragment in capsys.readouterr().err


def test_sweep_size():
    assert len(CATALOGUE) + len(CLI_CASES) >= 55


scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=6)
KEYS = ["seed", "out_dir", "data", "train", "distill", "compress", "export", "data.image_size", "data.source",
        "train.epochs", "train.augment_spec", "distill.alpha", "distill.tune_alphas", "export.modes",
        "compress.skip", "train.model_options"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=4))
def test_config_parser_parses_or_raises_config_error(overrides):
    from tfimgopt.pipeline import load_config

    try:
        load_config(overrides=[f"{k}={json.dumps(v)}" for k, v in overrides.items()])
    except ConfigError:
        pass


OPS = ["random_flip", "random_rotation", "random_zoom", "random_crop", "random_hue", "mixup", "randaugment",
       "augmix", "default", "nonsense"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(values, st.lists(st.one_of(st.sampled_from(OPS), st.fixed_dictionaries(
    {"op": st.sampled_from(OPS)}, optional={"factor": values, "mode": values, "alpha": values, "height": values,
                                             "width": values, "num_ops": values, "rate": values})), max_size=4)))
def test_augmentation_spec_parser_parses_or_raises_config_error(spec):
    from tfimgopt.augment import create_augmentation

    try:
        create_augmentation(spec)
    except ConfigError:
        pass
