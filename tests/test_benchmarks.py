"""The accelerator benchmark waits for a GPU: its smoke mode runs every code path on the CPU
here, so the script works unchanged the day one is lent."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_accelerator_benchmark_runs_every_row_in_smoke_mode(tmp_path):
    import json

    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "accelerator.py"), "--smoke", "--models", "small_cnn",
         "--json", str(out)], capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [(r["model"], r["xla"], r["augment"]) for r in rows] == [
        ("small_cnn", False, "none"), ("small_cnn", True, "none"), ("small_cnn", False, "data"),
        ("small_cnn", False, "model"), ("distiller resnet50 -> mobilenet_v2", False, "none")]
    assert all(r["images_per_s"] > 0 and r["devices"] == 1 for r in rows)
    assert "| small_cnn | float32 | on | none | 1 |" in proc.stdout
