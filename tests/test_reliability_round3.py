"""Reliability round 3 (issue 36): one data-loss path, silent wrongs, and raw tracebacks, each a
regression test named after what it protects."""

import json
import os

import numpy as np
import pytest

from tfimgopt.compat import keras
from tfimgopt.errors import ConfigError, DataError, TrainingError

TINY = ["data.image_size=8", "train.model=tiny_cnn", "train.epochs=1", "distill.epochs=1", "compress.epochs=1",
        "export.latency_runs=2", "export.num_calibration=16", "distill.allow_larger_student=true"]


def _tree(root):
    """Every file under `root` with its bytes."""
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = f.read()
    return found


def test_a_users_folder_that_looks_like_a_run_is_refused_untouched(tmp_path, capsys):
    from tfimgopt.cli import main

    p = tmp_path / "p"
    (p / "stages").mkdir(parents=True)
    (p / "models").mkdir()
    (p / "config.json").write_text('{"mine":1}')
    (p / "report.md").write_text("mine")
    (p / "models" / "baseline.keras").write_text("w")
    (p / ".draft.tmp-1").write_text("x")
    before = _tree(p)
    assert main(["run", "--out", str(p), *sum((["--set", s] for s in TINY), [])]) == 2
    assert _tree(p) == before  # every file byte for byte, nothing added (no lock, no marker)
    err = capsys.readouterr().err
    assert "not a tfimgopt run folder" in err and "touch" in err and ".tfimgopt-run" in err


def test_out_etc_says_it_is_not_a_run_folder_first(capsys):
    from tfimgopt.cli import main

    assert main(["run", "--out", "/etc"]) == 2
    err = capsys.readouterr().err
    assert "not a tfimgopt run folder" in err and "symbolic link" not in err


def test_a_fifo_lock_file_is_named(tmp_path):
    from tfimgopt import _io

    out = tmp_path / "run"
    out.mkdir()
    (out / _io.RUN_MARKER).write_text("")
    os.mkfifo(out / ".tfimgopt.lock")
    with pytest.raises(ConfigError, match=r"lock file .* is not a regular file .*remove it"):
        with _io.claim_run_folder(str(out)):
            pass


def test_class_names_with_any_line_break_fail_before_training(tmp_path):
    from PIL import Image

    from tfimgopt.pipeline import load_config, run

    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for name in ("a\rb", "c\u2028d", "plain"):
        (root / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3)).astype("uint8")).save(root / name / f"{i}.png")
    config = load_config(overrides=[*TINY, f"data.source={json.dumps(str(root))}",
                                    f"out_dir={json.dumps(str(tmp_path / 'run'))}"])
    with pytest.raises(ConfigError, match=r"no line breaks of any kind.*Received: label='a\\rb'"):
        run(config, log=lambda _: None)
    assert not (tmp_path / "run" / "models").exists()  # refused before the baseline trained


def test_boolean_arrays_are_refused_not_read_as_dark_pixels():
    from tfimgopt.data import load_dataset

    with pytest.raises(DataError, match="booleans"):
        load_dataset((np.ones((12, 8, 8), bool), np.arange(12) % 2))


@pytest.mark.parametrize("overrides, fragment", [
    (["seed=100000000000000000000000"], r"seed: expected an int in \[0, 2\*\*32 - 1"),
    (["train.learning_rate=.inf"], r"train\.learning_rate: expected a finite float > 0\. Received: "),
    (["compress.qat_learning_rate=.nan"], r"compress\.qat_learning_rate: expected a finite float > 0"),
    (["train.epochs=3", "train.learnin_rate=0.1"], r"Unknown key train\.learnin_rate\. Did you mean: "
                                                   r"train\.learning_rate\?"),
])
def test_config_values_that_used_to_pass_or_crash(overrides, fragment):
    from tfimgopt.pipeline import load_config

    with pytest.raises(ConfigError, match=fragment):
        load_config(overrides=overrides)


def test_exponent_learning_rates_are_numbers():
    from tfimgopt.pipeline import load_config

    assert load_config(overrides=["train.learning_rate=1e-3"]).train.learning_rate == 1e-3  # YAML 1.1: a string
    assert load_config(overrides=["distill.learning_rate=3E-4"]).distill.learning_rate == 3e-4
    with pytest.raises(ConfigError, match="expected float"):
        load_config(overrides=["train.learning_rate=fast"])


def test_a_config_file_holding_a_list_is_refused(tmp_path):
    from tfimgopt.pipeline import load_config

    (tmp_path / "c.yaml").write_text("- train\n- data\n")
    with pytest.raises(ConfigError, match=r"table of settings .* holds a list"):
        load_config(str(tmp_path / "c.yaml"), ["train.epochs=3"])


def test_a_diverging_training_stops_at_its_stage_with_a_clear_error(tmp_path):
    from tfimgopt.pipeline import load_config, run

    config = load_config(overrides=[*TINY, "train.optimizer=sgd", "train.learning_rate=1e30",
                                    f"out_dir={json.dumps(str(tmp_path))}"])
    with pytest.raises(TrainingError, match=r"stage baseline: Training diverged: the loss became (nan|inf)"
                                            r".*at learning rate 1e\+30\. Lower the learning rate"):
        run(config, log=lambda _: None)


def test_keras_backend_without_its_package_is_named_by_the_doctor_and_the_import():
    from tests.helpers import run_python

    code = "import tfimgopt.compat"
    done = run_python(code, env={"KERAS_BACKEND": "notabackend"})
    assert done.returncode != 0 and "KERAS_BACKEND=notabackend" in done.stderr and "EnvironmentProblem" in done.stderr
    from tfimgopt._platform import keras_backend_problem

    finding = keras_backend_problem({"KERAS_BACKEND": "jax"})
    import importlib.util

    if importlib.util.find_spec("jax") is None:
        assert finding.fatal and "jax is not installed" in finding.problem and "unset KERAS_BACKEND" in finding.fix
    assert keras_backend_problem({"KERAS_BACKEND": "tensorflow"}) is None and keras_backend_problem({}) is None


def test_doctor_exits_1_naming_a_bad_keras_backend():
    from tests.helpers import run_python

    done = run_python("from tfimgopt.doctor import doctor; raise SystemExit(doctor())",
                      env={"KERAS_BACKEND": "notabackend"})
    assert done.returncode == 1 and "KERAS_BACKEND=notabackend" in done.stdout


def test_metadata_with_an_unencodable_label_is_refused():
    from tfimgopt.export import ModelMetadata

    with pytest.raises(ConfigError, match=r"UTF-8 can encode.*Received: label='caf\\udce9'"):
        ModelMetadata(labels=("caf\udce9", "b"))


@pytest.mark.parametrize("kind", ["tf_keras", "keras3"])
def test_a_model_file_sets_the_image_size_and_a_conflicting_one_is_refused(kind, tmp_path, capsys):
    import keras as keras3

    from tfimgopt.cli import main

    lib = keras if kind == "tf_keras" else keras3
    lib.Sequential([lib.Input((8, 8, 1)), lib.layers.Flatten(), lib.layers.Dense(10)]).save(tmp_path / "m.keras")
    assert main(["evaluate", str(tmp_path / "m.keras")]) == 0  # digits at the model's 8x8, not 32x32
    assert "image_size: 8" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "m.keras"), "--image-size", "32"]) == 2
    assert "takes images of shape (8, 8, 1), but data.image_size asks for 32x32" in capsys.readouterr().err
    for argv in (["prune", "--structured", "--channel-ratio", "0.5", "-o", str(tmp_path / "p.keras")],
                 ["quantize", "-o", str(tmp_path / "q.tflite")]):
        assert main([argv[0], str(tmp_path / "m.keras"), *argv[1:], "--image-size", "16"]) == 2
        assert "data.image_size asks for 16x16" in capsys.readouterr().err
    assert main(["distill", "--teacher", str(tmp_path / "m.keras"), "-o", str(tmp_path / "s.keras"),
                 "--image-size", "16"]) == 2
    assert "data.image_size asks for 16x16" in capsys.readouterr().err


@pytest.mark.slow
def test_an_edited_record_pointing_at_another_stages_model_is_redone_with_the_true_reason(tmp_path):
    from tfimgopt.pipeline import load_config, run

    out = tmp_path / "run"
    config = load_config(overrides=[*TINY, "distill.student=tiny_cnn", 'distill.student_options={"filters": 2}',
                                    "compress.qat_epochs=0", f"out_dir={json.dumps(str(out))}"])
    first = run(config, log=lambda _: None)
    record = json.loads((out / "stages" / "distill.json").read_text())
    baseline = json.loads((out / "stages" / "baseline.json").read_text())
    record["path"] = "models/baseline.keras"
    record["artifacts"] = {"models/baseline.keras": baseline["artifacts"]["models/baseline.keras"]}
    (out / "stages" / "distill.json").write_text(json.dumps(record))
    lines = []
    second = run(config, log=lines.append)
    assert any("stage distill: redoing it" in line and "claims models/baseline.keras, which stage baseline wrote"
               in line for line in lines)
    assert any("stage prune: redoing it" in line and "distill redone" in line for line in lines)
    assert not any("older tfimgopt" in line for line in lines)
    assert second["student"]["params"] == first["student"]["params"] != second["baseline"]["params"]


def test_a_file_litert_cannot_prepare_is_refused_and_the_sparse_layout_falls_back():
    """XNNPACK refuses TFLite's sparse int8 fully-connected layout at the first invoke ("failed to
    delegate FULLY_CONNECTED"): the runner says so at load, and `sparse="auto"` keeps the dense file."""
    from tfimgopt.export import TFLiteRunner, export_tflite
    from tfimgopt.export.tflite import is_sparse

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    kernel, bias = model.layers[-1].get_weights()
    kernel[np.abs(kernel) < np.quantile(np.abs(kernel), 0.8)] = 0
    model.layers[-1].set_weights([kernel, bias])
    images = np.random.default_rng(0).uniform(0, 255, (16, 28, 28, 1)).astype("float32")
    packed = export_tflite(model, "int8", images, sparse=True)
    with pytest.raises(DataError, match=r"(Not a valid TFLite model|LiteRT cannot run this model): .*FULLY_CONNECTED"):
        TFLiteRunner(packed)
    chosen = export_tflite(model, "int8", images)  # sparse="auto"
    assert not is_sparse(chosen) and TFLiteRunner(chosen).predict(images[:2]).shape == (2, 10)
