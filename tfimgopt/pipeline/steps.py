"""Single steps of the main job, for users who want one (the CLI's `distill`, `prune`,
`quantize`, `export` and `evaluate`): the same stage, technique and exporter code the run uses."""

from __future__ import annotations

import os
from typing import Any

from tfimgopt import _io
from tfimgopt.errors import ConfigError, VerificationError, received
from tfimgopt.pipeline.config import RunConfig
from tfimgopt.pipeline.context import load_model, test_accuracy
from tfimgopt.pipeline.data import calibration_images, prepare_data
from tfimgopt.pipeline.stages.distill import distil
from tfimgopt.pipeline.stages.export import model_metadata, writes_metadata
from tfimgopt.pipeline.verify import VERIFY_FILE, save_verification_data, verify_run

__all__ = ["VERIFY_FILE", "VerificationError", "distill_step", "evaluate_step", "export_step", "prune_step",
           "quantize_step", "save_verification_data", "verify_run"]


def _check_output(path: str, suffixes: tuple[str, ...]) -> str:
    if not isinstance(path, str) or not path.endswith(suffixes):
        raise ConfigError(f"The output file must end in {' or '.join(suffixes)}. {received('output', path)}")
    _io.check_writable(path)  # before the training or conversion, not after it
    return path


def _work_dir(output: str) -> str:
    return os.path.splitext(output)[0] + ".work"


def distill_step(config: RunConfig, teacher_path: str, output: str, *, safe_mode: bool = True) -> dict[str, Any]:
    """Distils the teacher file into `config.distill.student` and saves the student."""
    _check_output(output, (".keras",))
    teacher = load_model(teacher_path, safe_mode=safe_mode)
    data = prepare_data(config)
    model, alpha, temperature, _ = distil(config, data, teacher, _work_dir(output))
    _io.write_with(output, model.save)
    return {"path": output, "alpha": alpha, "temperature": temperature,
            "test_accuracy": test_accuracy(model, data.test), "params": int(model.count_params())}


def _apply(name: str, config: RunConfig, model_path: str, output: str, safe_mode: bool):
    from tfimgopt.compress import get_technique

    technique = get_technique(name)
    model = load_model(model_path, safe_mode=safe_mode)
    data = prepare_data(config)
    result = technique.apply(model, data.train, data.val, technique.settings_from(config), work_dir=_work_dir(output))
    return result, data


def prune_step(config: RunConfig, model_path: str, output: str, *, safe_mode: bool = True,
               structured: bool = False) -> dict[str, Any]:
    """Prunes a model file to `config.compress.target_sparsity`, fine-tunes, strips, saves;
    `structured`: removes `config.compress.channel_ratio` of its channels instead (a smaller,
    faster dense model), pruned and fine-tuned in `channel_steps` rounds."""
    _check_output(output, (".keras",))
    if structured and not config.compress.channel_ratio > 0:
        raise ConfigError("Structured pruning needs a share of channels to remove: set --channel-ratio (e.g. 0.5). "
                          f"{received('compress.channel_ratio', config.compress.channel_ratio)}")
    result, data = _apply("channel_prune" if structured else "prune", config, model_path, output, safe_mode)
    _io.write_with(output, result.model.save)
    accuracy = test_accuracy(result.model, data.test)
    if structured:
        keys = ("params_before", "params_after", "flops_before", "flops_after", "channels")
        return {"path": output, **{k: result.report[k] for k in keys}, "test_accuracy": accuracy}
    return {"path": output, "sparsity": result.report["sparsity"], "test_accuracy": accuracy}


def quantize_step(config: RunConfig, model_path: str, output: str, *, safe_mode: bool = True) -> dict[str, Any]:
    """Quantization-aware fine-tuning of a model file, then int8 TFLite export to `output`."""
    from tfimgopt.export import get_exporter

    _check_output(output, (".tflite",))
    result, data = _apply("qat", config, model_path, output, safe_mode)
    exporter = get_exporter("int8")
    blob = exporter.export(result.model, output, calibration_images(data),
                           num_calibration=config.export.num_calibration)
    check = exporter.verify(blob, result.model, data.test)
    measured = exporter.evaluate(output, data.test, latency_runs=config.export.latency_runs)
    return {"path": output, "verify": check, **measured}


def export_step(config: RunConfig, model_path: str, output: str, mode: str, *, safe_mode: bool = True
                ) -> dict[str, Any]:
    """Exports a model file with the exporter `mode` (see `list_exporters`), verified against
    the Keras model in LiteRT. A failed verification is in the result (`verify.passed`)."""
    from tfimgopt.export import get_exporter

    exporter = get_exporter(mode)  # an unknown mode raises, naming the registered ones
    _check_output(output, (exporter.suffix,))
    writes_metadata(config)  # `--metadata on` without MediaPipe fails before loading anything
    model = load_model(model_path, safe_mode=safe_mode)
    data = prepare_data(config)
    metadata = model_metadata(config, data, os.path.splitext(os.path.basename(output))[0])
    blob = exporter.export(model, output, calibration_images(data) if exporter.needs_calibration else None,
                           num_calibration=config.export.num_calibration, metadata=metadata)
    return {"path": output, "bytes": len(blob), "metadata": metadata is not None,
            "verify": exporter.verify(blob, model, data.test)}


def evaluate_step(config: RunConfig, model_path: str, *, safe_mode: bool = True) -> dict[str, Any]:
    """Accuracy (and for .tflite: latency and size in LiteRT) of a model file on the test split."""
    from tfimgopt.export import evaluate_tflite

    data = prepare_data(config)
    if str(model_path).endswith(".tflite"):
        if not os.path.isfile(model_path):
            raise ConfigError(f"TFLite file not found. {received('model', model_path)}")
        from tfimgopt._litert import run_isolated

        # A corrupt file can crash LiteRT itself: try it in a child process first.
        run_isolated(model_path, next(iter(data.test))[0].numpy()[:2].astype("float32"))
        return evaluate_tflite(model_path, data.test, latency_runs=config.export.latency_runs)
    model = load_model(model_path, safe_mode=safe_mode)
    return {"accuracy": test_accuracy(model, data.test), "params": int(model.count_params())}
