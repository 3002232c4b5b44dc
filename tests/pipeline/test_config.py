"""Run configuration: layered loading, and bad keys or values named in the error."""

import json

import pytest

from tfimgopt.errors import ConfigError
from tfimgopt.pipeline import RunConfig, load_config


def test_defaults_then_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 4\n  learning_rate: 1\ndata:\n  image_size: 16\n")
    config = load_config(str(path), ["train.epochs=2", "data.channels=3"])
    assert config.train.epochs == 2  # command line beats file
    assert config.train.learning_rate == 1.0 and isinstance(config.train.learning_rate, float)
    assert config.data.image_size == 16  # file beats default
    assert config.data.channels == 3
    assert config.data.source == "digits"  # default


def test_toml_and_json_files(tmp_path):
    (tmp_path / "c.toml").write_text("seed = 3\n[train]\nmodel = 'tiny_cnn'\n")
    assert load_config(str(tmp_path / "c.toml")).train.model == "tiny_cnn"
    (tmp_path / "c.json").write_text(json.dumps({"seed": 5}))
    assert load_config(str(tmp_path / "c.json")).seed == 5


def test_fine_tuning_follows_the_weights_unless_set(tmp_path):
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"not checked until the model is built")
    config = load_config(overrides=[f"train.weights={weights}", "train.fine_tune.epochs=3"])
    assert config.train.weights == str(weights) and config.train.fine_tune.active(config.train.weights)
    assert config.train.fine_tune.epochs == 3
    assert not load_config().train.fine_tune.active(None)
    off = load_config(overrides=[f"train.weights={weights}", "train.fine_tune.enabled=off"])  # YAML false -> off
    assert off.train.fine_tune.enabled == "off" and not off.train.fine_tune.active(off.train.weights)


def test_round_trip_through_dict():
    config = load_config(overrides=["train.epochs=7"])
    assert RunConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.epoch=3"], r"Unknown key train\.epoch\. Did you mean: train\.epochs\? Valid keys here: \[.*'epochs'"),
        (["train.epochs=three"], r"expected int\. Received: train\.epochs='three'"),
        (["train.epochs=0"], r"an int >= 1 for a zoo model, or null\. Received: train\.epochs=0"),
        (["train.model=vgg"], r"a zoo model \(.*\) or your model file \(\.keras\)\. Received: train\.model='vgg'"),
        (["train.model=small_cn"], r"\(\.keras\) \(did you mean: small_cnn\)\. Received: train\.model='small_cn'"),
        (["train.model=/no/such/model.keras"], r"an existing model file .* Received: train\.model='/no/such/model"),
        (["distill.student=mine.h5"], r"an existing model file .* Received: distill\.student='mine\.h5'"),
        (["data.input_range=0-256"], r"one of \('auto', '0-255', '0-1', '-1-1'\)\. Received: data\.input_range"),
        (["data.channels=2"], r"Received: data\.channels=2"),
        (["data.val_fraction=1.5"], r"Received: data\.val_fraction=1\.5"),
        (["data=3"], r"Expected a table of settings for data\."),
        (["epochs"], r"key=value"),
        (["distill.alpha=1.5"], r"a number in \[0, 1\]\. Received: distill\.alpha=1\.5"),
        (["distill.temperature=0"], r"Received: distill\.temperature=0"),
        (["distill.tune_alphas=0.5"], r"expected a list\. Received: distill\.tune_alphas=0\.5"),
        (["distill.tune_temperatures=[1, x]"], r"Received: distill\.tune_temperatures\[1\]='x'"),
        (["compress.target_sparsity=1"], r"Received: compress\.target_sparsity=1"),
        (["export.modes=[int8]"], r"includes 'float32'"),
        (["export.modes=[float32, int3]"], r"Received: export\.modes=\['float32', 'int3'\]"),
        (["export.optimize_for=speed"], r"Received: export\.optimize_for='speed'"),
        (["train.strategy=gpu"], r"Received: train\.strategy='gpu'"),
        (["train.augment=sharpen"], r"Received: train\.augment='sharpen'"),
        (["train.augment_spec=[{op: blur}]"], r"Unknown augmentation 'blur'"),
        (["data.source=/no/such/folder"], r"existing folder of class subfolders, a shard folder or an existing \.npz "
                                          r"file .*"
                                          r"Received: data\.source='/no/such"),
        (["data.unlabelled_folder=/no/such"], r"Received: data\.unlabelled_folder='/no/such'"),
        (["data.unlabelled_fraction=1"], r"Received: data\.unlabelled_fraction=1"),
        (["seed=-1"], r"Received: seed=-1"),
        (["train.weights=/no/such.h5"], r"weights file that exists\. Received: train\.weights='/no/such\.h5'"),
        (["train.weights=imagenet"], r"'imagenet' only with a model that has ImageNet weights \(mobilenet_v2, "
                                     r".*Received: train\.weights='imagenet'"),
        (["train.model_options={weights: imagenet}"], r"without 'weights' \(set train\.weights\)"),
        (["train.fine_tune.enabled=on"], r"fine-tuning needs train\.weights.*Received: train\.fine_tune\.enabled='on'"),
        (["train.fine_tune.enabled=maybe"], r"Received: train\.fine_tune\.enabled='maybe'"),
        (["train.fine_tune.schedule=linear"], r"one of \('cosine', 'step', 'constant'\)"),
        (["train.fine_tune.epochs=-1"], r"Received: train\.fine_tune\.epochs=-1"),
        (["train.fine_tune.head=[]"], r"non-empty list of layer names"),
    ],
)
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="Config file not found"):
        load_config(str(tmp_path / "missing.yaml"))
    (tmp_path / "c.ini").write_text("[x]")
    with pytest.raises(ConfigError, match=r"must end in \.yaml"):
        load_config(str(tmp_path / "c.ini"))
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="Cannot parse config file"):
        load_config(str(tmp_path / "bad.yaml"))
    (tmp_path / "code.yaml").write_text("seed: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="Cannot parse"):
        load_config(str(tmp_path / "code.yaml"))


def test_shipped_example_configs_load_and_validate():
    from tfimgopt.pipeline.config import list_example_configs

    assert set(list_example_configs()) == {"digits", "cifar10_tpu", "folder"}
    assert load_config("digits") == load_config(overrides=[
        "out_dir=runs/digits", "train.augment=digits", "data.image_size=32", "train.epochs=20",
        "distill.student=compact_cnn", "compress.target_sparsity=0.5"])
    tpu = load_config("cifar10_tpu")
    assert tpu.data.source == "tfds:cifar10" and tpu.train.strategy == "auto" and tpu.data.try_gcs
    with pytest.raises(ConfigError, match="existing folder of class subfolders"):
        load_config("folder")  # points at 'photos', which the user must replace


def test_small_hostile_config_files_fail_fast_and_clearly(tmp_path):
    import time

    from tfimgopt.pipeline.config import MAX_CONFIG_BYTES

    laughs = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    laughs += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    cases = {
        "laughs.yaml": ("\n".join(laughs), r"YAML aliases \(\*a0\) are not accepted"),
        "deep.yaml": ("x: " + "[" * 5000 + "]" * 5000, "nesting deeper than 16 levels"),
        "deep.json": ('{"x": ' + "[" * 100000 + "]" * 100000 + "}", "Cannot parse config file .*RecursionError"),
        "deep2.json": ('{"x": ' + "[" * 40 + "]" * 40 + "}", "nesting deeper than 16 levels"),
        "big.yaml": ("seed: 1\n" + "#" * MAX_CONFIG_BYTES, r"at most 1,048,576 bytes"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        start = time.monotonic()
        with pytest.raises(ConfigError, match=message):
            load_config(str(path))
        assert time.monotonic() - start < 5, name


def test_override_values_with_aliases_stay_literal_strings():
    config = load_config(overrides=["out_dir=&a [*a]"])
    assert config.out_dir == "&a [*a]"
