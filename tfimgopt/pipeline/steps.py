"""Single steps of the main job, for users who want one (the CLI's `distill`, `prune`,
`quantize`, `export` and `evaluate`): the same stage, technique and exporter code the run uses."""

from __future__ import annotations

import os
from typing import Any

from tfimgopt import _io
from tfimgopt._plugins import LOADED
from tfimgopt.compress import get_technique
from tfimgopt.compress.quantize import QAT_MODES
from tfimgopt.errors import ConfigError, VerificationError, received
from tfimgopt.pipeline.config import MODEL_FILE_SUFFIXES, RunConfig
from tfimgopt.pipeline.context import test_accuracy
from tfimgopt.pipeline.data import calibration_images, prepare_data
from tfimgopt.pipeline.stages.distill import train_student
from tfimgopt.pipeline.stages.export import model_metadata
from tfimgopt.pipeline.verify import VERIFY_FILE, save_verification_data, verify_run

__all__ = ["VERIFY_FILE", "VerificationError", "adopt_file", "distill_step", "evaluate_step", "export_step",
           "prune_step", "quantize_step", "save_verification_data", "verify_run"]


def _check_output(path: str, suffixes: tuple[str, ...]) -> str:
    if not isinstance(path, str) or not path.endswith(suffixes):
        raise ConfigError(f"The output file must end in {' or '.join(suffixes)}. {received('output', path)}")
    _io.check_writable(path)  # before the training or conversion, not after it
    return path


def _work_dir(output: str) -> str:
    return os.path.splitext(output)[0] + ".work"


def adopt_file(config: RunConfig, model_path: str, *, safe_mode: bool = True, distills: bool = False,
               log=print) -> tuple[RunConfig, Any, Any]:
    """A model file for a single step, as the run adopts one: Keras 3 converted, the image size
    and channels taken from it, its classes checked against the data, its input range settled
    (measured when `data.input_range` is auto).

    Returns:
        `(settled config, tf_keras model taking 0..255 pixels, prepared data)`.
    """
    import copy

    from tfimgopt.pipeline.adopt import load_user_model, settle_choices, settle_shapes

    user = load_user_model(model_path, safe_mode=safe_mode, what="model")
    config = copy.deepcopy(settle_shapes(config, user))
    config.train.model = model_path  # the step's baseline: augmentation `auto` then leaves your data as it was
    config.distill.enabled = distills  # only `distill` picks a student; pruning your file prunes it harder
    data = prepare_data(config)
    config, user, _ = settle_choices(config, user, data, log)
    return config, user.model, data


def _save_as_given(path: str, model) -> None:
    """Saves a step's Keras output as the user's model was: the run's input-range layer removed."""
    from tfimgopt.pipeline.adopt import without_input_range

    _io.write_with(path, without_input_range(model).save)


def distill_step(config: RunConfig, teacher_path: str, output: str, *, safe_mode: bool = True) -> dict[str, Any]:
    """Distils the teacher file into `config.distill.student` and saves the student."""
    _check_output(output, (".keras",))
    config, teacher, data = adopt_file(config, teacher_path, safe_mode=safe_mode, distills=True)
    if not config.distill.enabled:
        raise ConfigError("No zoo student has at most 1/8 of this teacher's parameters: name one with --student (a "
                          "zoo model or a model file; distill.allow_larger_student=true if it is not smaller). "
                          f"Received: teacher={teacher_path!r}")
    model, alpha, temperature, _ = train_student(config, data, teacher, _work_dir(output))
    _save_as_given(output, model)
    return {"path": output, "alpha": alpha, "temperature": temperature,
            "test_accuracy": test_accuracy(model, data.test), "params": int(model.count_params())}


def _apply(name: str, config: RunConfig, model_path: str, output: str, safe_mode: bool):
    technique = get_technique(name)
    config, model, data = adopt_file(config, model_path, safe_mode=safe_mode)
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
    _save_as_given(output, result.model)
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
    exporter = get_exporter(QAT_MODES[0])
    artifact = exporter.export(result.model, output, calibration=calibration_images(data),
                               num_calibration=config.export.num_calibration)
    check = artifact.verify(result.model, data.test)
    measured = artifact.measure(data.test, latency_runs=config.export.latency_runs)
    return {"path": output, "verify": check, **measured}


def export_step(config: RunConfig, model_path: str, output: str, mode: str, *, safe_mode: bool = True
                ) -> dict[str, Any]:
    """Exports a model file with the exporter `mode` (see `list_exporters`; with
    `export.backend: litert`, LiteRT Quantizer's version of a converter mode), verified
    against the Keras model. A failed verification is in the result (`verify.passed`)."""
    from tfimgopt.export import exporter_for_mode

    e = config.export
    exporter = exporter_for_mode(mode, e.backend)  # an unknown mode raises, naming the registered ones
    exporter.check()
    _check_output(output, (exporter.suffix,))
    config, model, data = adopt_file(config, model_path, safe_mode=safe_mode)
    metadata = model_metadata(config, data, os.path.splitext(os.path.basename(output))[0])
    artifact = exporter.export(model, output,
                               calibration=calibration_images(data) if exporter.needs_calibration else None,
                               num_calibration=e.num_calibration, metadata=metadata, float_layers=e.float_layers,
                               validation=data.val, max_accuracy_drop=e.max_accuracy_drop, objective=e.optimize_for,
                               candidates=e.mixed_candidates)
    return {"path": output, "bytes": artifact.sizes()["size_bytes"], "metadata": metadata is not None,
            "verify": artifact.verify(model, data.test)}


def evaluate_step(config: RunConfig, model_path: str, *, safe_mode: bool = True) -> dict[str, Any]:
    """Accuracy of a model file on the test split; for an exported artifact (a `.tflite`
    file, a SavedModel serving folder, any registered exporter's) also its latency and size.
    A Keras model file (`.keras`, `.h5`) is adopted like `tfimgopt run` adopts it."""
    from tfimgopt.export import open_artifact
    from tfimgopt.export.exporters import exporter_for

    keras_file = isinstance(model_path, str) and model_path.endswith(MODEL_FILE_SUFFIXES)
    if not keras_file and exporter_for(model_path) is not None:
        artifact = open_artifact(model_path)
        data = prepare_data(config)
        # A corrupt file can crash its runtime (LiteRT, TensorFlow): try it in a child process first.
        artifact.predict_isolated(next(iter(data.test))[0].numpy()[:2].astype("float32"), tuple(LOADED))
        return artifact.measure(data.test, latency_runs=config.export.latency_runs)
    if isinstance(model_path, str) and model_path.endswith(".tflite") and not os.path.isfile(model_path):
        raise ConfigError(f"TFLite file not found. {received('model', model_path)}")
    config, model, data = adopt_file(config, model_path, safe_mode=safe_mode)
    return {"accuracy": test_accuracy(model, data.test), "params": int(model.count_params()),
            "input_range": config.data.input_range, "image_size": config.data.image_size}
