"""Exporters own their artifacts: a SavedModel folder, a `.keras` file and a user's own
exporter (from a plugin file) go through `tfimgopt run`, `verify` and `evaluate` like the
TFLite files."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tfimgopt.errors import ConfigError, DataError, VerificationError

PLUGIN = os.path.join(os.path.dirname(__file__), "my_exporters.py")
TINY = ["data.image_size=8", "train.model=tiny_cnn", "train.epochs=1", "distill.enabled=false",
        "compress.enabled=false", "export.latency_runs=2", "export.num_calibration=16"]


def _cli(*args, timeout=600):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "tfimgopt.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def run_with_new_exporters(tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts") / "run"
    sets = [a for s in [*TINY, "export.modes=[float32,savedmodel,keras,tflite_gz]"] for a in ("--set", s)]
    proc = _cli("run", "--plugin", PLUGIN, *sets, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "report.json").read_text())


@pytest.mark.slow  # one run through the CLI (~25 s), shared by the module's slow tests
def test_savedmodel_keras_and_a_plugin_exporter_are_variants_of_the_run(run_with_new_exporters):
    out, report = run_with_new_exporters
    rows = {r["variant"]: r for r in report["variants"]}
    assert set(rows) == {"baseline_float32", "baseline_savedmodel", "baseline_keras", "baseline_tflite_gz"}
    assert rows["baseline_savedmodel"]["path"] == "exports/baseline_savedmodel"
    assert (out / "exports/baseline_savedmodel/saved_model.pb").is_file()
    assert rows["baseline_keras"]["path"] == "exports/baseline_keras.keras"
    assert rows["baseline_tflite_gz"]["path"] == "exports/baseline_tflite_gz.tflite.gz"
    assert all(report["verification"][name]["passed"] for name in rows)
    # Every one is the same float32 network: the same test accuracy, measured through its own runtime.
    assert len({round(r["accuracy"], 6) for r in rows.values()}) == 1
    # The folder is one artifact: hashed as a tree, its size the sum of its files.
    listed = {a["path"]: a for a in report["artifacts"]}
    folder = out / "exports/baseline_savedmodel"
    assert listed["exports/baseline_savedmodel"]["bytes"] == sum(
        p.stat().st_size for p in folder.rglob("*") if p.is_file()) == rows["baseline_savedmodel"]["size_bytes"]
    md = (out / "report.md").read_text()
    assert "baseline_savedmodel" in md and "baseline_tflite_gz" in md


@pytest.mark.slow
def test_verify_reruns_every_artifact_and_needs_the_plugin_for_its_exporter(run_with_new_exporters):
    from tfimgopt.pipeline.steps import verify_run

    out, report = run_with_new_exporters
    proc = _cli("verify", "--plugin", PLUGIN, str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "4 exported files re-run" in proc.stdout
    with pytest.raises(VerificationError) as err:  # this process never loaded the plugin
        verify_run(str(out))
    problems = str(err.value).splitlines()[1:]
    assert len(problems) == 1 and "exports/baseline_tflite_gz.tflite.gz: cannot be opened here" in problems[0]
    assert "Unknown exporter 'tflite_gz'" in problems[0] and "--plugin" in problems[0]


@pytest.mark.slow
def test_verify_catches_a_changed_file_inside_a_savedmodel_folder(run_with_new_exporters, tmp_path):
    from tfimgopt.pipeline.steps import verify_run

    out, _ = run_with_new_exporters
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    variables = next((copy / "exports/baseline_savedmodel/variables").glob("*.data-*"))
    blob = bytearray(variables.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    variables.write_bytes(bytes(blob))
    (copy / "exports/extra.keras").write_bytes(b"added")
    with pytest.raises(VerificationError) as err:
        verify_run(str(copy))
    text = str(err.value)
    assert "exports/baseline_savedmodel: SHA-256 differs from the report" in text
    assert "exports/extra.keras: not listed in the report" in text


@pytest.mark.slow
def test_evaluate_measures_a_savedmodel_folder_like_the_run_did(run_with_new_exporters):
    from tfimgopt.pipeline import load_config
    from tfimgopt.pipeline.steps import evaluate_step

    out, report = run_with_new_exporters
    row = next(r for r in report["variants"] if r["variant"] == "baseline_savedmodel")
    config = load_config(overrides=[*TINY])
    measured = evaluate_step(config, str(out / row["path"]))
    assert measured["accuracy"] == pytest.approx(row["accuracy"]) and measured["size_bytes"] == row["size_bytes"]


def test_a_corrupt_savedmodel_is_refused_in_a_child_process(tmp_path):
    from tfimgopt.export import get_exporter, open_artifact

    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"\x08\x01garbage")
    artifact = open_artifact(str(folder))
    assert artifact.mode == "savedmodel" and type(artifact) is type(get_exporter("savedmodel").open(str(folder)))
    with pytest.raises(DataError, match=r"savedmodel artifact failed to run \(exit status 3"):
        artifact.predict_isolated(np.zeros((1, 8, 8, 1), "float32"))
    with pytest.raises(ConfigError, match="No registered exporter recognizes"):
        open_artifact(str(tmp_path))


def test_a_plugin_that_does_not_exist_is_a_clear_error(tmp_path):
    import tfimgopt

    with pytest.raises(ConfigError, match="Plugin file not found"):
        tfimgopt.load_plugin(str(tmp_path / "nope.py"))
    with pytest.raises(ConfigError, match="Plugin module not found: no_such_module_xyz"):
        tfimgopt.load_plugin("no_such_module_xyz")
    proc = _cli("run", "--plugin", str(tmp_path / "nope.py"), "--set", "train.epochs=1", timeout=120)
    assert proc.returncode == 2 and "Plugin file not found" in proc.stderr


def test_contributing_shows_the_exporter_this_module_runs():
    root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    with open(os.path.join(root, "CONTRIBUTING.md"), encoding="utf-8") as f:
        guide = f.read()
    with open(PLUGIN, encoding="utf-8") as f:
        code = f.read()
    assert code[code.index("import gzip"):].rstrip() in guide
