"""Single steps of the main job, for users who want one (the CLI's `distill`, `prune`,
`quantize`, `export`, `evaluate` and `verify` call these), and run-folder verification."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

from tfimgopt import _io
from tfimgopt.errors import ConfigError, TfimgoptError, VerificationError, received
from tfimgopt.pipeline.config import RunConfig
from tfimgopt.pipeline.run import calibration_images, distill_student, load_model, prepare_data, prune_model

VERIFY_FILE = "verification.npz"


def _check_output(path: str, suffixes: tuple[str, ...]) -> str:
    if not isinstance(path, str) or not path.endswith(suffixes):
        raise ConfigError(f"The output file must end in {' or '.join(suffixes)}. {received('output', path)}")
    return path


def distill_step(config: RunConfig, teacher_path: str, output: str, *, safe_mode: bool = True) -> dict[str, Any]:
    """Distils the teacher file into `config.distill.student` and saves the student."""
    from tfimgopt.distill import student_accuracy

    _check_output(output, (".keras",))
    teacher = load_model(teacher_path, safe_mode=safe_mode)
    data = prepare_data(config)
    model, alpha, temperature, _ = distill_student(config, data, teacher, os.path.splitext(output)[0] + ".work")
    _io.write_with(output, model.save)
    return {"path": output, "alpha": alpha, "temperature": temperature,
            "test_accuracy": student_accuracy(model, data.test), "params": int(model.count_params())}


def prune_step(config: RunConfig, model_path: str, output: str, *, safe_mode: bool = True) -> dict[str, Any]:
    """Prunes a model file to `config.compress.target_sparsity`, fine-tunes, strips, saves."""
    from tfimgopt.distill import student_accuracy

    _check_output(output, (".keras",))
    model = load_model(model_path, safe_mode=safe_mode)
    data = prepare_data(config)
    pruned, sparsity, _ = prune_model(config, data, model, os.path.splitext(output)[0] + ".work")
    _io.write_with(output, pruned.save)
    return {"path": output, "sparsity": sparsity["overall"], "test_accuracy": student_accuracy(pruned, data.test)}


def quantize_step(config: RunConfig, model_path: str, output: str, *, safe_mode: bool = True) -> dict[str, Any]:
    """Quantization-aware fine-tuning of a model file, then int8 TFLite export to `output`."""
    from tfimgopt.compress import quantize_and_finetune
    from tfimgopt.export import evaluate_tflite, export_tflite, verify_tflite

    _check_output(output, (".tflite",))
    model = load_model(model_path, safe_mode=safe_mode)
    data = prepare_data(config)
    c = config.compress
    qat = quantize_and_finetune(model, data.train, data.val, max(1, c.qat_epochs), learning_rate=c.qat_learning_rate,
                                work_dir=os.path.splitext(output)[0] + ".work")
    blob = export_tflite(qat, "int8", calibration_images(data), output, num_calibration=config.export.num_calibration)
    check = verify_tflite(blob, qat, data.test)
    result = evaluate_tflite(output, data.test, latency_runs=config.export.latency_runs)
    return {"path": output, "verify": check, **result}


def export_step(config: RunConfig, model_path: str, output: str, mode: str, *, safe_mode: bool = True
                ) -> dict[str, Any]:
    """Exports a model file to TFLite in `mode`, verified against the Keras model in LiteRT."""
    from tfimgopt.export import MODES, export_tflite, verify_tflite

    _check_output(output, (".tflite",))
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}. {received('mode', mode)}")
    model = load_model(model_path, safe_mode=safe_mode)
    data = prepare_data(config)
    blob = export_tflite(model, mode, calibration_images(data) if mode == "int8" else None, output,
                         num_calibration=config.export.num_calibration)
    return {"path": output, "bytes": len(blob), "verify": verify_tflite(blob, model, data.test)}


def evaluate_step(config: RunConfig, model_path: str, *, safe_mode: bool = True) -> dict[str, Any]:
    """Accuracy (and for .tflite: latency and size in LiteRT) of a model file on the test split."""
    from tfimgopt.distill import student_accuracy
    from tfimgopt.export import evaluate_tflite

    data = prepare_data(config)
    if str(model_path).endswith(".tflite"):
        if not os.path.isfile(model_path):
            raise ConfigError(f"TFLite file not found. {received('model', model_path)}")
        return evaluate_tflite(model_path, data.test, latency_runs=config.export.latency_runs)
    model = load_model(model_path, safe_mode=safe_mode)
    return {"accuracy": student_accuracy(model, data.test), "params": int(model.count_params())}


# --- run-folder integrity ---------------------------------------------------------------


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
