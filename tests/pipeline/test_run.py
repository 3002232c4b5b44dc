"""The main job end to end on a tiny config: artifacts, report consistency, resume, verify."""

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from tfimgopt.errors import ConfigError
from tfimgopt.pipeline import load_config, run, select_variant
from tfimgopt.pipeline.plots import pareto_front
from tfimgopt.pipeline.steps import VerificationError, verify_run

TINY = [
    "data.image_size=8", "train.model=tiny_cnn", "train.epochs=2", "train.learning_rate=0.01",
    "distill.epochs=2", "distill.student=tiny_cnn", "distill.student_options={\"filters\": 2}", "compress.epochs=1",
    "export.latency_runs=3",
    "export.num_calibration=32",
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    report = run(load_config(overrides=[*TINY, f"out_dir={json.dumps(str(out))}"]), log=lambda _: None)
    return out, report


def test_every_artifact_exists(finished_run):
    out, report = finished_run
    for rel in ["report.json", "report.md", "config.json", "models/baseline.keras", "models/student.keras",
                "models/pruned.keras", "plots/accuracy_vs_size.png", "plots/accuracy_vs_latency.png",
                "plots/training_curves.png", "verification.npz"]:
        assert (out / rel).is_file(), rel
    names = {row["variant"] for row in report["variants"]}
    assert names == {"baseline_float32", "baseline_dynamic", "baseline_float16", "baseline_int8", "student_float32",
                     "student_int8", "pruned_float32", "pruned_int8", "pruned_qat_int8"}
    for stage in ["baseline", "distill", "prune", "qat", "export", "evaluate"]:
        assert (out / "stages" / f"{stage}.json").is_file()
    assert all(v["passed"] for v in report["verification"].values())


def test_every_file_carries_metadata_by_default(finished_run):
    from tfimgopt.export import metadata

    out, report = finished_run
    for row in report["variants"]:  # export.metadata is "auto" by default: no extra package needed
        labels = metadata.read_metadata(str(out / row["path"]))["labels"]
        assert labels == [str(d) for d in range(10)], row["variant"]
    assert sorted(report["tflite_metadata"]) == sorted(report["verification"])
    md = (out / "report.md").read_text()
    got = metadata.read_metadata(str(out / report["selection"]["path"]))
    assert got["labels"] == [str(d) for d in range(10)] and got["color_space"] == "GRAYSCALE"
    assert got["name"] == f"{report['selection']['variant']} (digits)" and got["version"] == "1"
    assert "MediaPipe takes RGB models only" in md


def test_report_numbers_match_the_files(finished_run):
    from tfimgopt.data import build_pipeline, load_dataset
    from tfimgopt.export import evaluate_tflite

    out, report = finished_run
    test = build_pipeline(load_dataset("digits", image_size=8).test, 64)
    for row in report["variants"]:
        path = out / row["path"]
        assert os.path.getsize(path) == row["size_bytes"]
        again = evaluate_tflite(str(path), test, latency_runs=1, warmup=0)
        assert again["accuracy"] == pytest.approx(row["accuracy"], abs=1e-9), row["variant"]
    hashed = {a["path"] for a in report["artifacts"]}
    assert {row["path"] for row in report["variants"]} <= hashed
    assert report["selection"]["variant"] in {row["variant"] for row in report["variants"]}
    # tiny_cnn/2 at 8x8: its classifier holds 320 of the 338 prunable weights, so the default policy
    # prunes it to 50% and keeps the 18-weight first convolution dense.
    assert report["pruned"]["pruned_layers"] == ["classifier"]
    assert report["pruned"]["sparsity"] == pytest.approx(0.5 * 320 / 338, abs=0.01)
    md = (out / "report.md").read_text()
    assert "| pruned_qat_int8 |" in md and report["selection"]["variant"] in md
    assert json.loads((out / "config.json").read_text())["distill"]["epochs"] == 2


def test_verify_catches_a_flipped_byte_and_a_missing_file(finished_run, tmp_path):
    import shutil

    out, report = finished_run
    assert verify_run(str(out))["rerun"] == len(report["variants"])
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    target = copy / "tflite" / "student_int8.tflite"
    blob = bytearray(target.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    target.write_bytes(bytes(blob))
    os.remove(copy / "plots" / "accuracy_vs_size.png")
    with pytest.raises(VerificationError) as err:
        verify_run(str(copy))
    assert "tflite/student_int8.tflite: SHA-256 differs" in str(err.value)
    assert "plots/accuracy_vs_size.png: missing" in str(err.value)


def _artifacts(out):
    from tfimgopt.export import open_artifact

    report = json.loads((out / "report.json").read_text())
    return [open_artifact(str(out / v["path"]), v["mode"]) for v in report["variants"]]


def test_verify_never_runs_a_file_whose_hash_failed_and_flags_added_files(finished_run, tmp_path, monkeypatch):
    import shutil

    from tfimgopt.export import Artifact

    out, _ = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    target = copy / "tflite" / "pruned_int8.tflite"
    blob = bytearray(target.read_bytes())
    blob[len(blob) // 2: len(blob) // 2 + 8] = bytes(8)  # 8 bytes changed: may crash LiteRT if run
    target.write_bytes(bytes(blob))
    (copy / "tflite" / "extra.tflite").write_bytes(b"added later")
    (copy / "report.md").write_text("# edited")
    ran = []
    for cls in {type(a) for a in _artifacts(out)}:  # every artifact class the run's variants use
        real = cls.predict_isolated
        monkeypatch.setattr(cls, "predict_isolated", lambda self, x, plugins=(), real=real: ran.append(
            os.path.basename(self.path)) or real(self, x, plugins))
    assert all(issubclass(cls, Artifact) for cls in {type(a) for a in _artifacts(out)})
    with pytest.raises(VerificationError) as err:
        verify_run(str(copy))
    text = str(err.value)
    assert "tflite/pruned_int8.tflite: SHA-256 differs" in text and "pruned_int8.tflite" not in ran
    assert "tflite/extra.tflite: not listed in the report" in text
    assert "report.md: 8 bytes, report says" in text
    assert len(ran) == 8  # every other variant still re-ran


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "report.json").write_text("{not json"), "report.json: not valid JSON"),
    (lambda d: (d / "report.json").write_text("[]"), "report.json: not a JSON object"),
    (lambda d: (d / "report.json").write_text('{"artifacts": [], "variants": []}'), "lists no artifacts"),
    (lambda d: (d / "report.json").write_text('{"artifacts": [{"path": 1}], "variants": [{}]}'),
     "lists no variants (or malformed ones)"),
    (lambda d: (d / "verification.npz").write_bytes(b"garbage"), "verification.npz: unreadable"),
    (lambda d: (d / "verification.npz").unlink(), "verification.npz: missing"),
])
def test_verify_reports_a_malformed_run_folder_without_a_traceback(finished_run, tmp_path, damage, message):
    import shutil

    out, _ = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    damage(copy)
    with pytest.raises(VerificationError, match=re.escape(message)):
        verify_run(str(copy))


def test_a_tflite_file_that_crashes_litert_is_reported_not_fatal(monkeypatch, tmp_path):
    import subprocess

    import numpy as np

    from tfimgopt import _litert
    from tfimgopt.errors import DataError

    (tmp_path / "x.tflite").write_bytes(b"not a flatbuffer")
    with pytest.raises(DataError, match=r"LiteRT failed on the file \(exit status 3: Not a valid TFLite model"):
        _litert.run_isolated(str(tmp_path / "x.tflite"), np.zeros((1, 8, 8, 1), "float32"))
    crashed = subprocess.CompletedProcess([], -signal.SIGBUS, "", "")
    monkeypatch.setattr(_litert.subprocess, "run", lambda *a, **k: crashed)
    with pytest.raises(DataError, match=r"LiteRT failed on the file \(killed by SIGBUS\)"):
        _litert.run_isolated(str(tmp_path / "x.tflite"), np.zeros((1, 8, 8, 1), "float32"))


def test_selection_and_pareto_front():
    rows = [
        {"variant": "base", "accuracy": 0.95, "size_bytes": 1000, "latency_ms_median": 1.0, "size_ratio": 1,
         "latency_ratio": 1, "reference": True},
        {"variant": "small", "accuracy": 0.945, "size_bytes": 300, "latency_ms_median": 0.5, "size_ratio": 3.3,
         "latency_ratio": 0.5},
        {"variant": "tiny", "accuracy": 0.90, "size_bytes": 50, "latency_ms_median": 0.1, "size_ratio": 20,
         "latency_ratio": 0.1},
        {"variant": "worse", "accuracy": 0.93, "size_bytes": 400, "latency_ms_median": 0.6, "size_ratio": 2.5,
         "latency_ratio": 0.6},
    ]
    assert select_variant(rows, "size", 1.0)["variant"] == "small"
    assert select_variant(rows, "size", 10.0)["variant"] == "tiny"
    assert select_variant(rows, "accuracy", 1.0)["variant"] == "base"
    assert select_variant(rows, "latency", 0.0)["variant"] == "base"
    assert pareto_front(rows, "size_bytes") == ["base", "small", "tiny"]


RUNNER = """
import sys
from tfimgopt.pipeline import load_config, run
run(load_config(overrides=sys.argv[2:] + ["out_dir=" + sys.argv[1]]))
"""


@pytest.mark.slow
def test_interrupted_run_resumes_skipping_finished_stages(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-c", RUNNER, str(out), *TINY, "train.epochs=3"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith("== stage prune"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "report.json").exists() and (out / "stages" / "distill.json").exists()
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stage baseline: already done, skipped" in done.stdout
    assert "stage distill: already done, skipped" in done.stdout
    assert "== stage prune [" in done.stdout
    assert verify_run(str(out))["artifacts"] > 10


def test_bad_run_inputs_fail_before_writing(tmp_path):
    with pytest.raises(ConfigError, match="existing folder of class subfolders"):
        run(load_config(overrides=[f"out_dir={tmp_path}", f"data.source={tmp_path / 'nope'}"]))
    with pytest.raises(ConfigError, match="No report.json"):
        verify_run(str(tmp_path))
    assert not (tmp_path / "report.json").exists()


@pytest.mark.slow
def test_repeated_sigkills_at_random_points_still_end_in_a_verifiable_run(tmp_path):
    import random
    import time

    rng = random.Random(7)
    out = tmp_path / "run"
    args = [sys.executable, "-c", RUNNER, str(out), *TINY, "train.epochs=4", "distill.epochs=3"]
    triggers = ["== stage baseline", "== stage distill", "== stage qat", "== stage export"]
    kills = []
    for trigger in triggers:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for line in proc.stdout:
            if line.startswith(trigger):
                delay = rng.uniform(0.0, 2.0)
                time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                kills.append((trigger, round(delay, 2)))
                break
        proc.wait(timeout=120)
    assert len(kills) >= 3, kills  # a stage may already be done when its process starts
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert verify_run(str(out))["rerun"] == len(report["variants"]) == 9
    leftovers = [p for p in out.rglob("*") if ".tmp-" in p.name]
    assert not leftovers, leftovers  # no half-written artifact survives


@pytest.mark.slow
def test_a_changed_setting_redoes_its_stage_and_every_later_one_only(finished_run, tmp_path):
    import shutil

    out, before = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    lines = []
    report = run(load_config(overrides=[*TINY, f"out_dir={json.dumps(str(copy))}", "distill.epochs=3",
                                        "export.optimize_for=accuracy"]), log=lines.append)
    stages = [line for line in lines if line.startswith("== stage")]
    assert any("stage baseline: already done, skipped" in line for line in stages)
    assert any("stage distill: redoing it, changed since its record: distill.epochs" in line for line in stages)
    for stage in ("prune", "qat", "export", "evaluate"):
        assert any(f"stage {stage}: redoing it" in line and "distill" in line for line in stages), stage
    assert report["config"]["distill"]["epochs"] == 3 and report["selection"]["optimize_for"] == "accuracy"
    assert report["baseline"] == before["baseline"]
    assert json.loads((copy / "stages" / "distill.json").read_text())["inputs"]["distill"]["epochs"] == 3
    # Selection-only settings redo nothing; a changed image in the data folder would (see test_stages.py).
    lines.clear()
    run(load_config(overrides=[*TINY, f"out_dir={json.dumps(str(copy))}", "distill.epochs=3",
                               "export.max_accuracy_drop=5"]), log=lines.append)
    assert sum("already done, skipped" in line for line in lines) == 6


def test_selection_uses_the_float32_baseline_whatever_the_mode_order_and_never_picks_chance():
    row = {"size_ratio": 1, "latency_ratio": 1, "latency_ms_median": 1.0}
    rows = [  # export.modes: [int8, float32] puts baseline_int8 first
        {**row, "variant": "baseline_int8", "accuracy": 0.80, "size_bytes": 300},
        {**row, "variant": "baseline_float32", "accuracy": 0.90, "size_bytes": 1000, "reference": True},
        {**row, "variant": "student_int8", "accuracy": 0.895, "size_bytes": 50},
    ]
    chosen = select_variant(rows, "size", 1.0)
    assert chosen["variant"] == "student_int8" and "of baseline_float32 (90.00%)" in chosen["reason"]
    assert select_variant(rows, "size", 5.0)["variant"] == "student_int8"  # baseline_int8 is 10 points down
    chance = {"accuracy": 0.5, "noise": 0.45, "test_images": 20, "resolution_points": 5.0}  # 0.95 is noise
    none = select_variant(rows, "size", 100.0, chance)
    assert none["variant"] is None and none["reason"].startswith("no usable variant")
    assert "within the noise of chance level (50.00% + 45.00 points on 20 test images)" in none["reason"]
    chance["noise"] = 0.35  # now 0.895 and 0.90 clear it, 0.80 does not
    assert select_variant(rows, "size", 100.0, chance)["variant"] == "student_int8"


def test_a_student_not_smaller_than_its_teacher_is_refused_before_training(tmp_path):
    overrides = [*TINY, f"out_dir={json.dumps(str(tmp_path))}", "distill.student=small_cnn",
                 "distill.student_options={}"]  # small_cnn (1.1M) as the student of tiny_cnn (690)
    with pytest.raises(ConfigError, match=r"The student \(small_cnn, [\d,]+ parameters\) is not smaller than "
                                          r"the teacher \(tiny_cnn, [\d,]+ parameters\).*allow_larger_student=true"):
        run(load_config(overrides=overrides), log=lambda _: None)
    assert not (tmp_path / "stages" / "baseline.json").exists()  # refused before the baseline trained
    from tfimgopt.data import load_dataset
    from tfimgopt.pipeline.stages.distill import check_student_smaller

    config = load_config(overrides=[*overrides, "distill.allow_larger_student=true"])
    check_student_smaller(config, load_dataset("digits", image_size=8).info)  # the override lets it through


@pytest.mark.slow
def test_a_variant_failing_verification_is_reported_excluded_and_retried(tmp_path, monkeypatch, capsys):
    from tfimgopt.cli import main
    from tfimgopt.export import tflite

    out = tmp_path / "run"
    args = ["run", "--out", str(out), *[a for o in TINY for a in ("--set", o)], "--set", "distill.enabled=false",
            "--set", "compress.enabled=false"]
    monkeypatch.setitem(tflite.FLOAT_TOLERANCE, "float16", -1.0)  # no float16 export can pass
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "1 variant(s) failed verification and were left out (baseline_float16)" in captured.err
    report = json.loads((out / "report.json").read_text())
    assert set(report["failed_variants"]) == {"baseline_float16"}
    assert "verification failed: relative logit diff" in report["failed_variants"]["baseline_float16"]["reason"]
    assert "baseline_float16" not in {r["variant"] for r in report["variants"]}
    assert report["selection"]["variant"] != "baseline_float16"
    assert any("failed verification" in w for w in report["warnings"])
    assert "Failed verification (left out of the selection): **baseline_float16**" in (out / "report.md").read_text()
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "tflite").iterdir() if p.name != "baseline_float16.tflite"}

    monkeypatch.undo()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "retrying the export(s) that failed verification last time: baseline_float16" in printed
    assert "stage baseline: already done, skipped" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["failed_variants"] == {} and "baseline_float16" in {r["variant"] for r in report["variants"]}
    assert {p: (out / "tflite" / p).stat().st_mtime_ns for p in kept} == kept  # only the failed one redone
    assert verify_run(str(out))["rerun"] == 4


@pytest.mark.slow
def test_models_at_chance_are_loud_and_never_selected(tmp_path, capsys):
    """Two classes holding the same photos: nothing can beat chance, and the run must say so."""
    from tests.helpers import make_photo_folder
    from tfimgopt.cli import main

    photos = make_photo_folder(tmp_path / "src", per_class=24)
    same = tmp_path / "same"
    for label in ("a", "b"):
        os.makedirs(same / label)
        for name in sorted(os.listdir(os.path.join(photos, "china"))):
            os.symlink(os.path.join(photos, "china", name), same / label / name)
    out = tmp_path / "run"
    args = ["run", "--out", str(out), "--source", str(same), *[a for o in TINY for a in ("--set", o)],
            "--set", "data.channels=3", "--set", "distill.enabled=false", "--set", "compress.enabled=false"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    chance = report["chance"]
    assert chance["accuracy"] >= 0.5 and chance["noise"] > 0 and chance["test_images"] >= 4
    assert report["selection"]["variant"] is None
    assert "selected: no usable variant" in printed
    assert "! WARNING: AT CHANCE LEVEL: baseline" in printed
    assert report["warnings"][0].startswith("AT CHANCE LEVEL")
    md = (out / "report.md").read_text()
    assert "> **WARNING**" in md and "AT CHANCE LEVEL" in md and "Selected for `size`: **nothing**" in md
    assert f"{chance['test_images']} test images, so one image = {chance['resolution_points']:.2f} points" in md


def test_out_at_a_foreign_folder_or_a_file_touches_nothing(tmp_path):
    foreign = tmp_path / "mine"
    (foreign / "sub").mkdir(parents=True)
    files = {"notes.txt": "keep", ".draft.tmp-1": "keep too", "sub/.x.tmp-2": "and this", "config.json": "{}"}
    for name, text in files.items():
        (foreign / name).write_text(text)
    before = sorted(p.relative_to(foreign).as_posix() for p in foreign.rglob("*"))
    with pytest.raises(ConfigError, match="not a tfimgopt run folder .* and is not empty"):
        run(load_config(overrides=[*TINY, f"out_dir={json.dumps(str(foreign))}"]), log=lambda _: None)
    assert sorted(p.relative_to(foreign).as_posix() for p in foreign.rglob("*")) == before
    assert all((foreign / name).read_text() == text for name, text in files.items())
    a_file = tmp_path / "report.txt"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="must be a folder; this path is a file"):
        run(load_config(overrides=[*TINY, f"out_dir={json.dumps(str(a_file))}"]), log=lambda _: None)


@pytest.mark.slow
def test_two_concurrent_runs_one_refuses_and_the_folder_verifies(tmp_path):
    import time

    out = tmp_path / "run"
    args = [sys.executable, "-c", RUNNER, str(out), *TINY]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in first.stdout:
        if line.startswith("== stage baseline"):  # the first run holds the folder now
            break
    started = time.monotonic()
    with pytest.raises(ConfigError, match=rf"in use by pid {first.pid} on .* since"):
        run(load_config(overrides=[*TINY, f"out_dir={json.dumps(str(out))}"]), log=lambda _: None)
    assert time.monotonic() - started < 10  # refuses at once, does not wait
    first.stdout.read()
    assert first.wait(timeout=600) == 0
    report = json.loads((out / "report.json").read_text())
    assert verify_run(str(out))["rerun"] == len(report["variants"])
    history = (out / "work" / "baseline" / "history.csv").read_text().splitlines()
    assert sum(line.startswith("epoch") for line in history) == 1  # one run wrote it


@pytest.mark.slow
def test_clustering_int16x8_and_sparse_storage_are_variants_of_the_run(tmp_path):
    from tfimgopt.export import TFLiteRunner, detect_mode, is_sparse

    out = tmp_path / "run"
    report = run(load_config(overrides=[
        *TINY, f"out_dir={json.dumps(str(out))}", "data.image_size=16", "distill.enabled=false",
        "compress.clusters=8", "compress.cluster_epochs=1", "compress.target_sparsity=0.8", "export.num_calibration=64",
        'export.modes=["float32", "int8", "int16x8"]']), log=lambda _: None)
    rows = {row["variant"]: row for row in report["variants"]}
    assert {"baseline_int16x8", "clustered_float32", "clustered_int8", "clustered_qat_int8"} <= set(rows), (
        sorted(rows), {k: v for k, v in report.items() if k in ("failed", "warnings", "excluded")})
    assert detect_mode(str(out / rows["baseline_int16x8"]["path"])) == "int16x8"
    assert max(report["clustered"]["unique_values"].values()) <= 8
    assert report["clustered"]["sparsity"] >= 0.75  # clustering kept the pruning's zeros
    pruned = out / rows["pruned_float32"]["path"]
    assert is_sparse(TFLiteRunner(str(pruned)))  # 80% zeros: stored sparse, the smaller file
    assert rows["pruned_float32"]["size_bytes"] < rows["baseline_float32"]["size_bytes"]
    assert all(v["passed"] for v in report["verification"].values())
    md = (out / "report.md").read_text()
    assert "| clustered_qat_int8 |" in md
    # The training table comes from the stage records: every stage that trained has its row.
    assert [r["stage"] for r in report["training"]] == ["baseline", "prune", "cluster", "qat"]
    cluster = next(r for r in report["training"] if r["stage"] == "cluster")
    assert cluster["test_accuracy"] == report["clustered"]["test_accuracy"]
    assert (f"| cluster | clustered (from pruned) | {cluster['test_accuracy']:.4f} | at most 8 values per kernel, "
            f"sparsity {report['clustered']['sparsity']:.1%} |") in md


@pytest.mark.slow
def test_channel_pruned_variants_are_smaller_dense_models_that_feed_the_later_techniques(tmp_path):
    from tfimgopt.compat import keras

    out = tmp_path / "run"
    lines = []
    report = run(load_config(overrides=[
        *TINY, f"out_dir={json.dumps(str(out))}", "train.model=small_cnn", 'train.model_options={"width": 8, '
        '"dense": 16}', "distill.enabled=false", "compress.channel_ratio=0.5", "compress.channel_steps=1",
        "compress.channel_epochs=1", 'export.modes=["float32", "int8"]']), log=lines.append)
    rows = {row["variant"]: row for row in report["variants"]}
    assert {"channel_pruned_float32", "channel_pruned_int8", "pruned_float32", "pruned_qat_int8"} <= set(rows)
    record = report["channel_pruned"]
    assert record["from"] == "baseline" and record["channels"]["conv1"] == [8, 4]
    model = keras.models.load_model(out / record["path"])
    assert record["params_after"] == model.count_params() < record["params_before"]
    assert report["pruned"]["from"] == "channel_pruned"  # magnitude pruning starts from the smaller model
    assert rows["channel_pruned_float32"]["size_bytes"] < rows["baseline_float32"]["size_bytes"]
    assert any(line.startswith("channel_pruned baseline:") and "multiply-adds" in line for line in lines)
    assert all(v["passed"] for v in report["verification"].values())
    md = (out / "report.md").read_text()
    assert f"| channel_prune | channel_pruned (from baseline) | {record['test_accuracy']:.4f} | " \
           f"{record['params_before']:,} -> {record['params_after']:,} parameters" in md
    assert [r["stage"] for r in report["training"]] == ["baseline", "channel_prune", "prune", "qat"]
