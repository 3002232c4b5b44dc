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
    # round 2 (issue 16): data rules
    ("arrays-float-overshoot", lambda t: _data().load_dataset((np.full((40, 4, 4), 1.0001, np.float32),
                                                                np.arange(40) % 2)), DataError, r"max=1.0001"),
    ("arrays-float-minus-one", lambda t: _data().load_dataset((np.full((40, 4, 4), -1.0, np.float32),
                                                               np.arange(40) % 2)), DataError, r"min=-1"),
    ("arrays-float-standardized", lambda t: _data().load_dataset((np.random.default_rng(0).normal(size=(40, 4, 4)),
                                                                  np.arange(40) % 2)), DataError, r"Rescale them"),
    ("arrays-float-over-255", lambda t: _data().load_dataset((np.full((40, 4, 4), 256.0), np.arange(40) % 2)),
     DataError, r"max=256"),
    ("arrays-label-gap", lambda t: _data().load_dataset((np.zeros((40, 4, 4)), np.arange(40) % 2 * 2)), DataError,
     r"missing \(first: \[1\]\)"),
    ("arrays-label-million", lambda t: _data().load_dataset((np.zeros((40, 4, 4)), np.r_[np.arange(39) % 2, 10**6])),
     DataError, r"999,998 label"),
    ("arrays-label-beyond-names", lambda t: _data().load_dataset(
        {"train": (np.zeros((40, 4, 4)), np.arange(40) % 3), "class_names": ["a", "b"]}), DataError, "label=2"),
    ("arrays-ragged", lambda t: _data().load_dataset(([np.zeros((4, 4)), np.zeros((5, 5))], [0, 1])), DataError,
     "one shape"),
    ("arrays-object-labels", lambda t: _data().load_dataset((np.zeros((4, 4, 4)), np.array(["a", 1, None, 2],
                                                                                           dtype=object))),
     DataError, "numeric arrays"),
    ("arrays-float-labels", lambda t: _data().load_dataset((np.zeros((4, 4, 4)), np.zeros(4))), DataError,
     "labels must be integers"),
    ("arrays-class-not-in-train", lambda t: _data().load_dataset((np.zeros((41, 4, 4)), np.r_[np.arange(40) % 2, 2]),
                                                                test_fraction=0.6, val_fraction=0.0),
     DataError, "Class '2' has no training image"),
    ("arrays-empty-val", lambda t: _data().load_dataset((np.zeros((10, 4, 4)), np.arange(10) % 2)), DataError,
     "The val split of arrays is empty"),
    ("arrays-empty-test", lambda t: _data().load_dataset((np.zeros((4, 4, 4)), np.arange(4) % 2), val_fraction=0,
                                                         test_fraction=0.1), DataError, "The test split"),
    ("image-size-huge", lambda t: _data().load_dataset("digits", image_size=100_000), DataError, "image_size=100000"),
    ("image-size-pair-huge", lambda t: _data().load_dataset("digits", image_size=(8, 5000)), DataError, "5000"),
    ("image-size-negative", lambda t: _data().load_dataset("digits", image_size=-3), DataError, "image_size=-3"),
    ("folder-only-empty-classes", lambda t: (_mkdirs(t, "a", "b"), _data().load_dataset(str(t)))[1], DataError,
     "No readable image files"),
    ("folder-only-hidden", lambda t: (_mkdirs(t, ".git", "__MACOSX"), _data().load_dataset(str(t)))[1], DataError,
     "no class subfolders"),
    # round 2: model files and run folders are untrusted
    ("load-missing", lambda t: _pipeline().load_model(str(t / "none.keras")), ConfigError, "none.keras"),
    ("load-not-a-model", lambda t: (_write(t / "x.keras", b"hello"), _pipeline().load_model(str(t / "x.keras")))[1],
     ConfigError, "Not a Keras model file"),
    ("load-hdf5-renamed", lambda t: (_write(t / "x.keras", b"\x89HDF\r\n\x1a\n" + bytes(100)),
                                     _pipeline().load_model(str(t / "x.keras")))[1], ConfigError, "it is an HDF5 file"),
    ("load-savedmodel-dir", lambda t: (_mkdirs(t, "sm"), _pipeline().load_model(str(t / "sm")))[1], ConfigError,
     "SavedModel folder"),
    ("load-zip-bomb", lambda t: _pipeline().load_model(_bomb(t)), ConfigError, "expands to"),
    ("load-path-not-str", lambda t: _pipeline().load_model(42), ConfigError, "model=42"),
    ("run-out-links-outside", lambda t: _run_with_link(t), ConfigError, "symbolic link"),
    ("run-out-unwritable", lambda t: _pipeline().run(_pipeline().load_config(overrides=["out_dir=/proc/no/run"])),
     TfimgoptError, "Cannot write /proc/no/run"),
    ("write-name-too-long", lambda t: _io().check_writable(str(t / ("a" * 250 + ".tflite"))), ConfigError,
     "Choose a shorter name"),
    ("write-disk-full", lambda t: _disk_full(t), TfimgoptError, "No space left on device"),
    ("verify-empty-report", lambda t: (_write(t / "report.json", b'{"artifacts": [], "variants": []}'),
                                       _pipeline().verify_run(str(t)))[1], TfimgoptError, "lists no artifacts"),
    ("verify-not-json", lambda t: (_write(t / "report.json", b"{"), _pipeline().verify_run(str(t)))[1],
     TfimgoptError, "not valid JSON"),
    ("verify-json-list", lambda t: (_write(t / "report.json", b"[1]"), _pipeline().verify_run(str(t)))[1],
     TfimgoptError, "not a JSON object"),
    ("verify-bad-variants", lambda t: (_write(t / "report.json", json.dumps(
        {"artifacts": [{"path": "a", "sha256": "0", "bytes": 1}], "variants": "x"}).encode()),
        _pipeline().verify_run(str(t)))[1], TfimgoptError, "lists no variants"),
    ("verify-artifact-escapes", lambda t: (_write(t / "report.json", json.dumps(
        {"artifacts": [{"path": "../../etc/passwd", "sha256": "0", "bytes": 1}],
         "variants": [{"variant": "v", "path": "tflite/v.tflite"}]}).encode()),
        _pipeline().verify_run(str(t)))[1], TfimgoptError, "outside the run folder"),
    ("tflite-wrong-size", lambda t: _litert().TFLiteRunner(_tiny_tflite(t)).predict(np.zeros((1, 4, 4, 1))),
     DataError, r"takes images of shape \(8, 8, 1\)"),
    ("tflite-crash-isolated", lambda t: _litert().run_isolated(_corrupt_tflite(t), np.zeros((1, 8, 8, 1))),
     DataError, "LiteRT failed on the file"),
    ("registry-duplicate-exporter", lambda t: _export().register_exporter(_export().get_exporter("int8")),
     ConfigError, "registered already"),
    ("registry-unknown-exporter", lambda t: _export().get_exporter("int3"), ConfigError, "did you mean"),
    ("registry-unknown-technique", lambda t: __import__("tfimgopt.compress", fromlist=["x"]).get_technique("prun"),
     ConfigError, "did you mean 'prune'"),
    ("registry-unknown-stage", lambda t: _pipeline().get_stage("distil"), ConfigError, "did you mean 'distill'"),
    ("registry-bad-technique-result", lambda t: __import__("tfimgopt.compress", fromlist=["x"]).register_technique(
        __import__("tfimgopt.compress", fromlist=["x"]).Technique("x", "", 1, (), None, None, result="file")),
     ConfigError, "result='file'"),
    ("selection-without-reference", lambda t: _pipeline().select_variant(
        [{"variant": "a", "accuracy": 1.0}], "size", 1.0), ConfigError, "Exactly one row must be marked reference"),
    ("config-unknown-export-mode", lambda t: _pipeline().load_config(overrides=['export.modes=["float32", "int3"]']),
     ConfigError, "int3"),
]


def _junk(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"PK\x03\x04 definitely not a keras archive")
    return str(path)


def _io():
    from tfimgopt import _io as m

    return m


def _litert():
    from tfimgopt import _litert as m

    return m


def _mkdirs(root, *names):
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)


def _write(path, data: bytes):
    path.write_bytes(data)


def _bomb(root):
    import zipfile

    with zipfile.ZipFile(root / "bomb.keras", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model.weights.h5", bytes(40 << 20))
    return str(root / "bomb.keras")


def _run_with_link(root):
    out = root / "run"
    (out / "stages").mkdir(parents=True)
    (out / "config.json").write_text("{}")
    (out / ".tfimgopt-run").write_text("")  # a run folder of ours, as a resumed one would be
    (out / "models").symlink_to(root)
    return _pipeline().run(_pipeline().load_config(overrides=[f"out_dir={out}"]))


def _disk_full(root):
    import errno

    with _io().atomic_path(root / "x.tflite"):
        raise OSError(errno.ENOSPC, "No space left on device")


def _tiny_tflite(root):
    blob = _export().export_tflite(_tiny_model(), "float32")
    (root / "tiny.tflite").write_bytes(blob)
    return str(root / "tiny.tflite")


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
    # (the zoo's list grows with models other tests register: the fragment leaves it out)
    (["run", "--model", "mobilenet"], "or your model file (.keras) (did you mean: mobilenet_v2"),
    (["run", "--model", "mine.keras"], "an existing model file"),
    (["export", "m.keras", "-o", "out.tflite"], "m.keras"),
    (["augment-preview", "--policy", "[{op: random_hue, factor: 2}]"], "factor=2"),
    (["verify", "/no/run"], "No report.json"),
    (["export", "m.keras", "-o", "a" * 250 + ".tflite"], "Choose a shorter name"),
    (["run", "--out", "/proc/no/run"], "Cannot write /proc/no/run"),
    (["evaluate", "--image-size", "9999", "x.keras"], "image_size"),
]


@pytest.mark.parametrize("argv, fragment", CLI_CASES, ids=[" ".join(c[0][:2]) for c in CLI_CASES])
def test_cli_bad_flags_exit_2_with_the_value(argv, fragment, capsys, tmp_path, monkeypatch):
    from tfimgopt.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert fragment in capsys.readouterr().err


def test_sweep_size():
    assert len(CATALOGUE) + len(CLI_CASES) >= 55 + 40  # round 2 (issue 16) added 40 or more


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
