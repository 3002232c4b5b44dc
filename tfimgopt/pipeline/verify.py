"""Run-folder integrity: the recorded test outputs of every TFLite file, and `verify_run`."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

from tfimgopt import _io
from tfimgopt.errors import ConfigError, TfimgoptError, VerificationError, received

VERIFY_FILE = "verification.npz"


def save_verification_data(out: str, files: dict[str, str], images: np.ndarray) -> str:
    """Stores a few test inputs and every TFLite file's outputs on them, for `verify_run`."""
    from tfimgopt.export import TFLiteRunner

    arrays = {"inputs": images}
    for name, rel in files.items():
        arrays[f"out:{name}"] = TFLiteRunner(os.path.join(out, rel)).predict(images)
    path = os.path.join(out, VERIFY_FILE)
    _io.write_with(path, lambda tmp: _save_npz(tmp, arrays))
    return path


def _save_npz(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def verify_run(run_dir: str) -> dict[str, Any]:
    """Re-hashes every artifact recorded in `run_dir/report.json` and re-runs each `.tflite`.

    Raises:
        VerificationError: listing every missing file, size or SHA-256 mismatch, and
            TFLite file whose outputs differ from those recorded at the end of the run.
    """
    from tfimgopt.export import TFLiteRunner

    report_path = os.path.join(run_dir, "report.json")
    if not os.path.isfile(report_path):
        raise ConfigError(f"No report.json in the run folder (is the run finished?). {received('run_dir', run_dir)}")
    with open(report_path) as f:
        report = json.load(f)
    problems, checked = [], 0
    for entry in report.get("artifacts", []):
        try:
            path = _io.safe_join(run_dir, entry["path"])
        except ConfigError:
            problems.append(f"{entry['path']!r}: outside the run folder")
            continue
        if not os.path.isfile(path):
            problems.append(f"{entry['path']}: missing")
            continue
        with open(path, "rb") as f:
            blob = f.read()
        checked += 1
        if len(blob) != entry["bytes"]:
            problems.append(f"{entry['path']}: {len(blob)} bytes, report says {entry['bytes']}")
        elif hashlib.sha256(blob).hexdigest() != entry["sha256"]:
            problems.append(f"{entry['path']}: SHA-256 differs from the report")
    reran = 0
    npz_path = os.path.join(run_dir, VERIFY_FILE)
    if os.path.isfile(npz_path):
        with np.load(npz_path) as data:
            inputs = data["inputs"]
            for key in (k for k in data.files if k.startswith("out:")):
                name = key[4:]
                rel = next((v["path"] for v in report.get("variants", []) if v["variant"] == name), None)
                if rel is None:
                    continue
                try:
                    got = TFLiteRunner(_io.safe_join(run_dir, rel)).predict(inputs)
                except TfimgoptError as err:
                    problems.append(f"{rel}: does not load in LiteRT ({err})")
                    continue
                reran += 1
                if not np.allclose(got, data[key], rtol=1e-5, atol=1e-5):
                    problems.append(f"{rel}: outputs differ from the recorded ones (max diff "
                                    f"{float(np.abs(got - data[key]).max()):.3g})")
    else:
        problems.append(f"{VERIFY_FILE}: missing")
    if problems:
        raise VerificationError(f"{run_dir} failed verification:\n  " + "\n  ".join(problems))
    return {"artifacts": checked, "tflite_rerun": reran}
