"""The main job: data -> baseline training -> evaluation -> report, resumable by stage."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from tfimgopt import _io
from tfimgopt.compat import keras, tf
from tfimgopt.data import Splits, build_pipeline, load_dataset
from tfimgopt.models import create_model
from tfimgopt.pipeline.config import RunConfig
from tfimgopt.training import train


class _Stages:
    """Runs named stages once: a finished stage leaves a JSON record and is skipped later."""

    def __init__(self, out_dir: str, log: Callable[[str], None]):
        self.dir = os.path.join(out_dir, "stages")
        self.log = log
        self.start = time.monotonic()

    def record_path(self, name: str) -> str:
        return os.path.join(self.dir, f"{name}.json")

    def run(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        path = self.record_path(name)
        elapsed = time.monotonic() - self.start
        if os.path.exists(path):
            self.log(f"== stage {name}: already done, skipped [{elapsed:6.1f}s]")
            with open(path) as f:
                return json.load(f)
        self.log(f"== stage {name} [{elapsed:6.1f}s]")
        began = time.monotonic()
        result = fn()
        result["seconds"] = round(time.monotonic() - began, 2)
        _io.write_json(path, result)
        return result


class PreparedData(NamedTuple):
    """Loaded splits and their batched pipelines."""

    splits: Splits
    train: tf.data.Dataset
    val: tf.data.Dataset
    test: tf.data.Dataset


def prepare_data(config: RunConfig, log: Callable[[str], None] = print) -> PreparedData:
    """Loads `config.data.source` and builds the train/val/test pipelines."""
    d = config.data
    splits = load_dataset(
        d.source, image_size=d.image_size, channels=d.channels, val_fraction=d.val_fraction,
        test_fraction=d.test_fraction, seed=config.seed, data_dir=d.data_dir,
        try_gcs=d.try_gcs, download=d.download,
    )
    info = splits.info
    log(
        f"data: {info.name}, {info.num_classes} classes, images {info.image_shape}, "
        f"examples {dict(info.num_examples)}"
    )
    return PreparedData(
        splits,
        build_pipeline(splits.train, d.batch_size, training=True, seed=config.seed),
        build_pipeline(splits.val, d.batch_size),
        build_pipeline(splits.test, d.batch_size),
    )


def train_classifier(
    config: RunConfig, data: PreparedData, model_path: str, work_dir: str, root: str | None = None
) -> dict[str, Any]:
    """Trains `config.train.model` on `data`, saves it atomically, measures the test split.

    Returns:
        A record with the model name, parameter count, test accuracy and loss, and path.
    """
    t = config.train
    info = data.splits.info
    model = create_model(t.model, info.image_shape, info.num_classes)
    history = train(
        model, data.train, data.val, t.epochs, optimizer=t.optimizer,
        learning_rate=t.learning_rate, work_dir=work_dir, jit_compile=t.jit_compile,
    )
    _io.write_with(model_path, history.model.save)
    loss, accuracy = history.model.evaluate(data.test, verbose=0)
    return {
        "model": t.model,
        "params": int(history.model.count_params()),
        "test_accuracy": float(accuracy),
        "test_loss": float(loss),
        "path": os.path.relpath(model_path, root) if root else model_path,
    }


def run(config: RunConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs the optimization job described by `config` and writes its run folder.

    Rerunning with the same `out_dir` skips finished stages and resumes an interrupted
    training stage from its last epoch backup.

    Args:
        config: A validated `RunConfig`.
        log: Where progress lines go.

    Returns:
        The report (also written to `out_dir/report.json` and `report.md`).

    Example:
        >>> from tfimgopt.pipeline import load_config, run
        >>> report = run(load_config(overrides=["train.epochs=1"]))
    """
    config.validate()
    out = config.out_dir
    os.makedirs(out, exist_ok=True)
    _io.write_json(os.path.join(out, "config.json"), config.to_dict())
    keras.utils.set_random_seed(config.seed)
    stages = _Stages(out, log)

    data = prepare_data(config, log)
    info = data.splits.info
    baseline_path = os.path.join(out, "models", "baseline.keras")
    result = stages.run(
        "baseline",
        lambda: train_classifier(
            config, data, baseline_path, os.path.join(out, "work", "baseline"), out
        ),
    )
    report = {
        "dataset": {
            "name": info.name,
            "num_classes": info.num_classes,
            "image_shape": list(info.image_shape),
            "num_examples": dict(info.num_examples),
        },
        "baseline": result,
        "seconds": round(time.monotonic() - stages.start, 2),
    }
    _io.write_json(os.path.join(out, "report.json"), report)
    _io.write_text(os.path.join(out, "report.md"), _report_markdown(report))
    log(
        f"baseline {result['model']}: test accuracy {result['test_accuracy']:.4f} "
        f"({result['params']:,} parameters) -> {out}"
    )
    return report


def _report_markdown(report: dict[str, Any]) -> str:
    data = report["dataset"]
    base = report["baseline"]
    return "\n".join(
        [
            "# tfimgopt run report",
            "",
            f"Dataset: {data['name']} ({data['num_classes']} classes, images "
            f"{tuple(data['image_shape'])}, examples {data['num_examples']})",
            "",
            "| model | parameters | test accuracy | test loss |",
            "|---|---:|---:|---:|",
            f"| {base['model']} (baseline) | {base['params']:,} | {base['test_accuracy']:.4f} "
            f"| {base['test_loss']:.4f} |",
            "",
        ]
    )


def load_model(path: str) -> keras.Model:
    """Loads a model saved by tfimgopt (safe mode: no arbitrary code)."""
    return keras.models.load_model(path, safe_mode=True)


__all__ = ["PreparedData", "load_model", "prepare_data", "run", "train_classifier"]
