"""Stages end to end: the reference by identity, and fingerprints that follow the data."""

import json
import os

import pytest

from tests.helpers import make_photo_folder
from tfimgopt.pipeline import Variant, load_config, run

SMALL = ["data.image_size=8", "data.channels=1", "train.model=tiny_cnn", "train.epochs=1", "distill.enabled=false",
         "compress.enabled=false", "export.latency_runs=2", "export.num_calibration=16", "data.batch_size=16"]


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    photos = make_photo_folder(root / "photos", per_class=12)
    out = root / "run"
    overrides = [*SMALL, f"data.source={json.dumps(photos)}", f"out_dir={json.dumps(str(out))}",
                 'export.modes=["int8", "float32"]']
    lines = []
    report = run(load_config(overrides=overrides), log=lines.append)
    return photos, out, overrides, report, lines


@pytest.mark.slow
def test_int8_first_still_measures_against_the_float32_baseline(folder_run):
    _, out, _, report, _ = folder_run
    rows = {r["variant"]: r for r in report["variants"]}
    assert list(rows) == ["baseline_int8", "baseline_float32"]  # the order of export.modes
    assert rows["baseline_float32"]["reference"] and not rows["baseline_int8"]["reference"]
    assert rows["baseline_float32"]["accuracy_delta_points"] == 0.0 and rows["baseline_float32"]["size_ratio"] == 1.0
    int8, f32 = rows["baseline_int8"], rows["baseline_float32"]  # ratios are against float32, not the first row
    assert int8["size_ratio"] == pytest.approx(f32["size_bytes"] / int8["size_bytes"])
    assert int8["accuracy_delta_points"] == pytest.approx(100 * (int8["accuracy"] - f32["accuracy"]))
    selection = report["selection"]
    assert selection["reference"] == "baseline_float32" or selection["variant"] is None
    assert "of baseline_float32 (" in selection["reason"]
    record = json.loads((out / "stages" / "export.json").read_text())
    variants = [Variant.from_dict(e) for e in record["files"].values()]
    assert {(v.model, v.mode, v.reference) for v in variants} == {("baseline", "int8", False),
                                                                  ("baseline", "float32", True)}


@pytest.mark.slow
def test_an_added_image_redoes_every_stage_and_an_unchanged_folder_none(folder_run):
    photos, out, overrides, _, _ = folder_run
    lines = []
    run(load_config(overrides=overrides), log=lines.append)
    assert sum("already done, skipped" in line for line in lines) == 3  # baseline, export, evaluate
    extra = os.path.join(photos, sorted(os.listdir(photos))[0], "zz_new.jpg")
    first = os.path.join(os.path.dirname(extra), sorted(os.listdir(os.path.dirname(extra)))[0])
    with open(first, "rb") as src, open(extra, "wb") as dst:
        dst.write(src.read())
    lines.clear()
    report = run(load_config(overrides=overrides), log=lines.append)
    assert any(line.startswith("== stage baseline: redoing it") and "the data or the seed" in line for line in lines)
    assert not any("already done" in line for line in lines)
    assert report["dataset"]["num_examples"]["train"] + report["dataset"]["num_examples"]["val"] \
        + report["dataset"]["num_examples"]["test"] == 2 * 12 + 1


def test_backups_from_other_inputs_are_removed_before_a_stage_resumes(tmp_path):
    from tfimgopt.data import load_dataset
    from tfimgopt.pipeline import RunContext

    config = load_config(overrides=SMALL)
    work = tmp_path / "work" / "baseline"
    work.mkdir(parents=True)
    (work / "backup").write_text("epoch 3 of a run with other settings")
    (work / ".fingerprint").write_text("old")
    messages = []
    ctx = RunContext(config, str(tmp_path), data=load_dataset("digits", image_size=8), log=messages.append,
                     fingerprint="new")
    assert ctx.work_dir("baseline") == str(work)
    assert not (work / "backup").exists() and (work / ".fingerprint").read_text() == "new"
    assert "its backups are from a run with other inputs" in messages[0]
    (work / "backup").write_text("epoch 1 of this very stage")
    ctx.work_dir("baseline")  # same fingerprint: the backup stays for the resume
    assert (work / "backup").exists()


def test_the_data_fingerprint_follows_every_data_setting_and_the_seed(tmp_path):
    from tfimgopt.pipeline.config import DataConfig
    from tfimgopt.pipeline.data import data_fingerprint

    base = data_fingerprint(DataConfig(), 0)
    assert data_fingerprint(DataConfig(), 0) == base
    assert data_fingerprint(DataConfig(), 1) != base  # a new seed re-splits the data
    for key, value in {"image_size": 48, "channels": 3, "batch_size": 8, "val_fraction": 0.2, "test_fraction": 0.3,
                       "unlabelled_fraction": 0.5}.items():
        assert data_fingerprint(DataConfig(**{key: value}), 0) != base, key
    folder = tmp_path / "photos" / "a"
    folder.mkdir(parents=True)
    (folder / "1.png").write_bytes(b"x")
    before = data_fingerprint(DataConfig(source=str(tmp_path / "photos")), 0)
    (folder / "1.png").write_bytes(b"xy")  # an edited image
    assert data_fingerprint(DataConfig(source=str(tmp_path / "photos")), 0) != before


def test_the_baseline_fingerprint_follows_the_bytes_of_its_weights_file(tmp_path):
    from tfimgopt.pipeline.stages import fingerprint, get_stage

    weights = tmp_path / "pretrained.h5"
    weights.write_bytes(b"first")
    config = load_config(overrides=[f"train.weights={json.dumps(str(weights))}"])
    stage = get_stage("baseline")
    before = fingerprint(stage, config, "data", [])
    assert fingerprint(stage, config, "data", []) == before
    weights.write_bytes(b"second")  # the same path, other weights: the baseline must train again
    assert fingerprint(stage, config, "data", []) != before
    assert get_stage("distill").inputs(config) == get_stage("distill").inputs(load_config())
