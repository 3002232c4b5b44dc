"""Every shipped example config runs end to end, in smoke size, on a folder of real photos."""

import json

import pytest

from tests.helpers import make_photo_folder
from tfimgopt.cli import main
from tfimgopt.pipeline import at_chance
from tfimgopt.pipeline.config import list_example_configs

SMOKE = [
    "data.image_size=32", "data.batch_size=16", "train.epochs=2", "distill.epochs=1", "distill.tune=false",
    "compress.epochs=1", "compress.qat_epochs=1", "export.latency_runs=3", "export.num_calibration=16",
]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_photo_folder(tmp_path_factory.mktemp("photos"), per_class=40)


@pytest.mark.slow
@pytest.mark.parametrize("name", list_example_configs())
def test_shipped_config_runs_on_real_photos(name, photos, tmp_path, capsys):
    out = tmp_path / "run"
    overrides = [*SMOKE, f"data.source={photos}", "data.channels=3"]
    status = main(["run", name, "--out", str(out), *[arg for o in overrides for arg in ("--set", o)]])
    printed = capsys.readouterr().out
    assert status == 0, printed[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"]["num_classes"] == 2
    assert report["student"]["params"] < report["baseline"]["params"]
    chosen = report["selection"]["variant"]
    if chosen is not None and at_chance(report["selection"]["accuracy"], report["chance"]):
        pytest.fail(f"{name}: selected {chosen} at chance level")
    at_chance_rows = [r["variant"] for r in report["variants"] if at_chance(r["accuracy"], report["chance"])]
    if at_chance_rows:  # a smoke-size model may sit at chance, but never silently
        assert report["warnings"] and "AT CHANCE LEVEL" in report["warnings"][0]
        assert "! WARNING: AT CHANCE LEVEL" in printed
        assert "WARNING" in (out / "report.md").read_text()
    assert "Accuracy resolution: 16 test images, so one image = 6.25 points" in printed
