"""The main job: data -> baseline (teacher) -> distilled student -> pruning + QAT ->
TFLite export in every mode -> evaluation in LiteRT -> selection -> report.

Every stage leaves a record in `out_dir/stages/`; a rerun with the same folder skips
finished stages, and training stages resume mid-way from their epoch backups.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from tfimgopt import _io
from tfimgopt.compat import keras, tf
from tfimgopt.data import Splits, build_pipeline, hold_out_labels, load_dataset, load_unlabelled, with_unlabelled
from tfimgopt.errors import ConfigError, received
from tfimgopt.models import create_model
from tfimgopt.pipeline.config import RunConfig
from tfimgopt.training import train


class _Stages:
    """Runs named stages once: a finished stage leaves a JSON record and is skipped later."""

    def __init__(self, out_dir: str, log: Callable[[str], None]):
        self.dir = os.path.join(out_dir, "stages")
        self.log = log
        self.start = time.monotonic()
        self.seconds: dict[str, float] = {}  # stage -> seconds it took (in the run that did it)

    def record_path(self, name: str) -> str:
        return os.path.join(self.dir, f"{name}.json")

    def done(self, name: str) -> bool:
        return os.path.exists(self.record_path(name))

    def run(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        path = self.record_path(name)
        elapsed = time.monotonic() - self.start
        if os.path.exists(path):
            self.log(f"== stage {name}: already done, skipped [{elapsed:6.1f}s]")
            with open(path) as f:
                record = json.load(f)
            self.seconds[name] = record.get("seconds", 0.0)
            return record
        self.log(f"== stage {name} [{elapsed:6.1f}s]")
        began = time.monotonic()
        result = fn()
        result["seconds"] = round(time.monotonic() - began, 2)
        self.seconds[name] = result["seconds"]
        _io.write_json(path, result)
        self.log(f"   stage {name} finished in {result['seconds']:.1f}s")
        return result


class PreparedData(NamedTuple):
    """Loaded splits, their batched pipelines, and what augmentation runs in the model."""

    splits: Splits
    train: tf.data.Dataset
    val: tf.data.Dataset
    test: tf.data.Dataset
    transfer: tf.data.Dataset | None = None
    model_augmentation: Any = None
    num_unlabelled: int = 0


def _augmentation(config: RunConfig, strategy):
    from tfimgopt.augment import create_augmentation, split_augmentation

    t = config.train
    spec = t.augment_spec if t.augment_spec is not None else t.augment
    if spec == "auto":
        spec = "digits" if config.data.source == "digits" else "default"
    aug = create_augmentation(spec, seed=config.seed)
    return split_augmentation(aug, t.augment_placement, strategy)


def prepare_data(config: RunConfig, log: Callable[[str], None] = print, strategy=None) -> PreparedData:
    """Loads `config.data.source`, holds out labels if asked, and builds the pipelines.

    Training batches are augmented in `tf.data` (placement "data") or the augmentation is
    returned for the model (placement "model"); labels become one-hot when MixUp/CutMix
    mix them.  With unlabelled images (a held-out share or a folder) a second training
    pipeline, the transfer set, mixes them in for distillation.
    """
    from tfimgopt.distribute import needs_static_shapes

    d = config.data
    splits = load_dataset(
        d.source, image_size=d.image_size, channels=d.channels, val_fraction=d.val_fraction,
        test_fraction=d.test_fraction, seed=config.seed, data_dir=d.data_dir,
        try_gcs=d.try_gcs, download=d.download,
    )
    info = splits.info
    labelled, unlabelled = splits.train, None
    if d.unlabelled_fraction > 0:
        labelled, unlabelled = hold_out_labels(splits.train, 1.0 - d.unlabelled_fraction, seed=config.seed)
    if d.unlabelled_folder:
        extra = load_unlabelled(d.unlabelled_folder, image_size=d.image_size, channels=info.image_shape[-1])
        unlabelled = extra if unlabelled is None else unlabelled.concatenate(extra)
    num_unlabelled = int(unlabelled.reduce(0, lambda n, _: n + 1)) if unlabelled is not None else 0
    data_aug, model_aug = _augmentation(config, strategy)
    takes_labels = data_aug is not None and data_aug.takes_labels
    label_mode = "one_hot" if takes_labels else "sparse"
    drop = needs_static_shapes(strategy)

    def training(ds):
        return build_pipeline(ds, d.batch_size, training=True, seed=config.seed, augment=data_aug,
                              label_mode=label_mode, num_classes=info.num_classes, drop_remainder=drop)

    log(
        f"data: {info.name}, {info.num_classes} classes, images {info.image_shape}, examples "
        f"{dict(info.num_examples)}" + (f", {num_unlabelled} unlabelled" if num_unlabelled else "")
        + f"; augmentation: {[type(x).__name__ for x in (data_aug.steps if data_aug else [])]} in tf.data"
        + (f", {[type(x).__name__ for x in model_aug.steps]} in the model" if model_aug else "")
    )
    return PreparedData(
        splits,
        training(labelled),
        build_pipeline(splits.val, d.batch_size, label_mode=label_mode, num_classes=info.num_classes),
        build_pipeline(splits.test, d.batch_size),
        training(with_unlabelled(labelled, unlabelled)) if unlabelled is not None else None,
        model_aug,
        num_unlabelled,
    )


def _rel(path: str, root: str | None) -> str:
    return os.path.relpath(path, root) if root else path


def _with_model_augmentation(model, augmentation):
    if augmentation is None:
        return model
    from tfimgopt.augment import augmented_model

    return augmented_model(model, augmentation)


def _inner(model, augmentation):
    return model.layers[-1] if augmentation is not None else model


def _create(name, info, options, key):
    try:
        return create_model(name, info.image_shape, info.num_classes, **(options or {}))
    except TypeError as err:
        raise ConfigError(f"Bad {key} for {name}: {err}. {received(key, options)}") from None


def _test_accuracy(model, test_ds) -> float:
    from tfimgopt.distill import student_accuracy

    return float(student_accuracy(model, test_ds))


def train_classifier(
    config: RunConfig, data: PreparedData, model_path: str, work_dir: str, root: str | None = None,
    strategy=None,
) -> dict[str, Any]:
    """Trains `config.train.model` on `data`, saves it atomically, measures the test split.

    Returns:
        A record with the model name, parameter count, test accuracy, path and history.
    """
    t = config.train
    info = data.splits.info

    def build():
        model = _create(t.model, info, t.model_options, "train.model_options")
        return _with_model_augmentation(model, data.model_augmentation)

    history = train(
        build, data.train, data.val, t.epochs, optimizer=t.optimizer, learning_rate=t.learning_rate,
        work_dir=work_dir, jit_compile=t.jit_compile or None, strategy=strategy,
    )
    model = _inner(history.model, data.model_augmentation)
    _io.write_with(model_path, model.save)
    return {
        "model": t.model,
        "params": int(model.count_params()),
        "test_accuracy": _test_accuracy(model, data.test),
        "path": _rel(model_path, root),
        "history": _rel(os.path.join(work_dir, "history.csv"), root),
    }


def load_model(path: str, *, safe_mode: bool = True) -> keras.Model:
    """Loads a model file (safe mode by default: Lambda layers and arbitrary code refused).

    Args:
        path: A `.keras` (or `.h5`) file.
        safe_mode: Keep True for files from elsewhere; False runs code stored in the file.

    Raises:
        ConfigError: for a missing or unreadable file, or one that needs unsafe loading.
    """
    if not isinstance(path, str | os.PathLike) or not os.path.isfile(path):
        raise ConfigError(f"Model file not found. {received('model', path)}")
    try:
        if not safe_mode:
            return keras.models.load_model(path, safe_mode=False)
        return keras.models.load_model(path, safe_mode=True)
    except ValueError as err:
        if "safe_mode" in str(err) or "Lambda" in str(err):
            raise ConfigError(
                f"Refused to load {path}: it contains a Lambda layer or other stored code, which could run "
                "arbitrary Python. Load it with safe_mode=False (CLI: --unsafe) only if you trust the file. "
                f"Received: model={os.fspath(path)!r}"
            ) from None
        raise ConfigError(f"Cannot load the model file: {err}. Received: model={os.fspath(path)!r}") from None
    except (OSError, KeyError, TypeError) as err:
        raise ConfigError(f"Not a readable Keras model file ({type(err).__name__}: {err}). "
                          f"Received: model={os.fspath(path)!r}") from None


def distill_student(config, data, teacher, work_dir, strategy=None, log=print):
    """Distils `teacher` into `config.distill.student` on the transfer set (or the labelled
    training data), tuning alpha and temperature first if asked.

    Returns:
        `(student, alpha, temperature, tuning table or None)`.
    """
    from tfimgopt.distill import distill, tune_distillation

    c = config.distill
    train_ds = data.transfer if data.transfer is not None else data.train

    def student():
        keras.utils.set_random_seed(config.seed)
        return _create(c.student, data.splits.info, c.student_options, "distill.student_options")

    if c.tune:
        result = tune_distillation(
            teacher, student, train_ds, data.val, alphas=c.tune_alphas, temperatures=c.tune_temperatures,
            epochs=c.epochs, method=c.tune_method, learning_rate=c.learning_rate, strategy=strategy,
            seed=config.seed,
        )
        log(f"tuned: alpha={result.alpha:g}, temperature={result.temperature:g} "
            f"(val accuracy {result.val_accuracy:.4f})\n" + result.markdown())
        return result.student, result.alpha, result.temperature, result.table
    model = distill(teacher, student, train_ds, data.val, c.epochs, alpha=c.alpha, temperature=c.temperature,
                    learning_rate=c.learning_rate, strategy=strategy, work_dir=work_dir)
    return model, c.alpha, c.temperature, None


def _check_student_smaller(config: RunConfig, info) -> None:
    """Refuses a student with at least as many parameters as its teacher, before anything trains."""
    teacher = _create(config.train.model, info, config.train.model_options, "train.model_options").count_params()
    student = _create(config.distill.student, info, config.distill.student_options,
                      "distill.student_options").count_params()
    keras.utils.set_random_seed(config.seed)  # building them drew from the seeded generators
    if student >= teacher and not config.distill.allow_larger_student:
        raise ConfigError(
            f"The student ({config.distill.student}, {student:,} parameters) is not smaller than the teacher "
            f"({config.train.model}, {teacher:,} parameters) at image size {info.image_shape[0]}: distilling would "
            "ship a larger model. Choose a smaller distill.student or distill.student_options, or set "
            f"distill.allow_larger_student=true to do it anyway. Received: distill.student={config.distill.student!r}, "
            f"distill.student_options={config.distill.student_options!r}")


def _distill_stage(config, data, teacher, out, strategy, log) -> dict[str, Any]:
    work = os.path.join(out, "work", "student")
    model, alpha, temperature, table = distill_student(config, data, teacher, work, strategy, log)
    path = _io.safe_join(out, "models/student.keras")
    _io.write_with(path, model.save)
    return {
        "model": config.distill.student, "params": int(model.count_params()), "alpha": alpha,
        "temperature": temperature, "transfer_set": data.transfer is not None,
        "unlabelled_images": data.num_unlabelled, "tuning": table, "test_accuracy": _test_accuracy(model, data.test),
        "path": _rel(path, out), "history": None if table else _rel(os.path.join(work, "history.csv"), out),
    }


def prune_skip(model, skip):
    """`skip` for `prune`: the configured list, or the default policy unless it would leave
    nothing to prune (a tiny student whose only layers are its first conv and classifier)."""
    from tfimgopt.compress import plan_pruning

    if skip is None and not plan_pruning(model)[0]:
        return []
    return skip


def prune_model(config, data, model, work_dir, strategy=None):
    """Prunes `model` to `config.compress.target_sparsity`, fine-tunes and strips it.

    Returns:
        `(stripped model, sparsity report, skip list used)`.
    """
    from tfimgopt.compress import prune_and_finetune

    c = config.compress
    skip = prune_skip(model, c.skip)
    pruned, sparsity = prune_and_finetune(model, data.train, data.val, c.epochs, c.target_sparsity,
                                          learning_rate=c.learning_rate, work_dir=work_dir, strategy=strategy,
                                          skip=skip)
    return pruned, sparsity, skip


def _prune_stage(config, data, source_name, source_model, out, strategy) -> dict[str, Any]:
    work = os.path.join(out, "work", "pruned")
    model = keras.models.clone_model(source_model)
    model.set_weights(source_model.get_weights())
    pruned, sparsity, skip = prune_model(config, data, model, work, strategy)
    path = _io.safe_join(out, "models/pruned.keras")
    _io.write_with(path, pruned.save)
    return {
        "from": source_name, "target_sparsity": config.compress.target_sparsity, "sparsity": sparsity["overall"],
        "skip": skip,
        "test_accuracy": _test_accuracy(pruned, data.test), "path": _rel(path, out),
        "history": _rel(os.path.join(work, "history.csv"), out),
    }


def calibration_images(data: PreparedData) -> tf.data.Dataset:
    """Unbatched training images, the representative data of int8 export."""
    return data.splits.train.map(lambda x, y: x)


def _qat_stage(config, data, pruned, out, strategy) -> dict[str, Any]:
    from tfimgopt.compress import quantize_and_finetune, sparsity_report
    from tfimgopt.export import export_tflite, verify_tflite

    c = config.compress
    work = os.path.join(out, "work", "qat")
    qat = quantize_and_finetune(pruned, data.train, data.val, c.qat_epochs, learning_rate=c.qat_learning_rate,
                                work_dir=work, strategy=strategy)
    path = _io.safe_join(out, "tflite/pruned_qat_int8.tflite")
    blob = export_tflite(qat, "int8", calibration_images(data), path, num_calibration=config.export.num_calibration)
    check = verify_tflite(blob, qat, data.test, num_samples=64)
    record = {"preserved_sparsity": sparsity_report(pruned)["overall"], "path": _rel(path, out), "verify": check,
              "history": _rel(os.path.join(work, "history.csv"), out)}
    if not check["passed"]:
        record["failed"] = _failure_reason(check)
    return record


def _failure_reason(check: dict[str, Any]) -> str:
    """Why a verification failed, with its numbers."""
    return (f"verification failed: relative logit diff {check['relative_diff']:.2g}, top-1 agreement "
            f"{check['top1_agreement']:.3f} on {check['num_samples']} test images; needed {check['criterion']}")


def _export_stage(config, data, models: dict[str, keras.Model], out, log, only=None) -> dict[str, Any]:
    """Exports every variant (or those in `only`); one that fails verification is recorded, not fatal."""
    from tfimgopt.export import export_tflite, verify_tflite

    e = config.export
    calibration = calibration_images(data)
    files, failed = {}, {}
    for name, model in models.items():
        for mode in (e.modes if name == "baseline" else [m for m in ("float32", "int8") if m in e.modes]):
            variant = f"{name}_{mode}"
            if only is not None and variant not in only:
                continue
            path = _io.safe_join(out, f"tflite/{variant}.tflite")
            began = time.monotonic()
            blob = export_tflite(model, mode, calibration if mode == "int8" else None, path,
                                 num_calibration=e.num_calibration)
            converted = time.monotonic()
            check = verify_tflite(blob, model, data.test, num_samples=64)
            entry = {"path": _rel(path, out), "verify": check, "convert_s": round(converted - began, 2),
                     "verify_s": round(time.monotonic() - converted, 2)}
            if check["passed"]:
                files[variant] = entry
            else:
                failed[variant] = {**entry, "reason": _failure_reason(check)}
                log(f"   warning: {variant} {failed[variant]['reason']}; it is left out of the selection")
    return {"files": files, "failed": failed}


def _evaluate_stage(config, data, files: dict[str, str], sparsity: dict[str, float], out) -> dict[str, Any]:
    from tfimgopt.export import compare, evaluate_tflite

    e = config.export
    results = {}
    for name, rel in files.items():
        began = time.monotonic()
        result = evaluate_tflite(_io.safe_join(out, rel), data.test, num_threads=e.num_threads,
                                 latency_runs=e.latency_runs)
        result["sparsity"] = sparsity.get(name.rsplit("_", 1)[0].replace("_qat", ""))
        result["path"] = rel
        result["evaluate_s"] = round(time.monotonic() - began, 2)
        results[name] = result
    table = compare(results, "baseline_float32")
    for row in table["rows"]:
        row["path"] = results[row["variant"]]["path"]
    return table


def chance_level(test_split: tf.data.Dataset) -> dict[str, Any]:
    """Majority-class accuracy on the test split, and how far above it an accuracy must be to mean anything.

    Returns:
        `{"accuracy", "noise", "test_images", "resolution_points"}`: `noise` is two binomial
        standard deviations of an accuracy at chance on this many images (about a 95% band),
        `resolution_points` what one test image is worth, in accuracy points.
    """
    labels = np.concatenate([np.asarray(y).reshape(len(y), -1).argmax(1) if np.asarray(y).ndim > 1
                             else np.asarray(y) for _, y in test_split.batch(4096).as_numpy_iterator()])
    n = len(labels)
    chance = float(np.bincount(labels.astype(np.int64)).max() / n)
    return {"accuracy": chance, "noise": float(2 * np.sqrt(chance * (1 - chance) / n)), "test_images": n,
            "resolution_points": 100.0 / n}


def at_chance(accuracy: float, chance: dict[str, Any] | None) -> bool:
    """True when `accuracy` is within the noise of chance level."""
    return chance is not None and accuracy <= chance["accuracy"] + chance["noise"]


def select_variant(rows: list[dict[str, Any]], optimize_for: str, max_accuracy_drop: float,
                   chance: dict[str, Any] | None = None) -> dict[str, Any]:
    """Picks the best variant by measurement among those within `max_accuracy_drop` points.

    `optimize_for`: `"size"` (smallest file), `"latency"` (fastest median) or
    `"accuracy"` (most accurate; ties go to the smaller file). The reference accuracy is
    the float32 baseline's (`baseline_float32`), whatever the order of the rows. A variant
    within the noise of `chance` (see `chance_level`) is never picked: when no other is
    left, the result says "no usable variant" and `variant` is None.
    """
    reference_row = next((r for r in rows if r["variant"] == "baseline_float32"), rows[0])
    reference = reference_row["accuracy"]
    allowed = [r for r in rows if 100 * (reference - r["accuracy"]) <= max_accuracy_drop + 1e-9]
    usable = [r for r in allowed if not at_chance(r["accuracy"], chance)]
    base = {"optimize_for": optimize_for, "max_accuracy_drop_points": max_accuracy_drop}
    if not usable:
        return {**base, "variant": None, "path": None, "accuracy": None, "candidates": 0, "reason": (
            f"no usable variant: every variant within {max_accuracy_drop:g} points of {reference_row['variant']} "
            f"({100 * reference:.2f}%) is within the noise of chance level ({100 * chance['accuracy']:.2f}% "
            f"+ {100 * chance['noise']:.2f} points on {chance['test_images']} test images). Train longer, on more "
            "data, or check the labels."
        )}
    key = {
        "size": lambda r: (r["size_bytes"], -r["accuracy"]),
        "latency": lambda r: (r["latency_ms_median"], -r["accuracy"]),
        "accuracy": lambda r: (-r["accuracy"], r["size_bytes"]),
    }[optimize_for]
    best = min(usable, key=key)
    superlative = {"size": "smallest", "latency": "fastest", "accuracy": "most accurate"}[optimize_for]
    return {
        **base, "variant": best["variant"], "path": best.get("path"), "accuracy": best["accuracy"],
        "candidates": len(usable),
        "reason": (
            f"{best['variant']} is the {superlative} of the {len(usable)} variants within "
            f"{max_accuracy_drop:g} accuracy points of {reference_row['variant']} "
            f"({100 * reference:.2f}%): accuracy {100 * best['accuracy']:.2f}%, "
            f"{best['size_bytes'] / 1024:,.1f} KiB ({best['size_ratio']:.1f}x smaller), "
            f"{best['latency_ms_median']:.3f} ms ({best['latency_ratio']:.2f}x the baseline's latency)"
        ),
    }


def run_warnings(records: dict[str, Any], rows: list[dict[str, Any]], chance: dict[str, Any],
                 failed: dict[str, Any]) -> list[str]:
    """What a person must not miss in a run: models at chance, failed variants."""
    warnings = []
    trained = [(name, r["test_accuracy"]) for name, r in records.items() if "test_accuracy" in r]
    low = [f"{name} {100 * acc:.2f}%" for name, acc in trained if at_chance(acc, chance)]
    low += [f"{r['variant']} {100 * r['accuracy']:.2f}%" for r in rows if at_chance(r["accuracy"], chance)]
    if low:
        warnings.append(
            f"AT CHANCE LEVEL: {', '.join(low)}; chance is {100 * chance['accuracy']:.2f}% (majority class) "
            f"+ {100 * chance['noise']:.2f} points of noise on {chance['test_images']} test images. These models "
            "have not learned the task: train longer, use more data, or check the labels.")
    if failed:
        warnings.append(f"{len(failed)} variant(s) failed verification and were left out: " + "; ".join(
            f"{name}: {entry['reason']}" for name, entry in failed.items()) + ". A rerun retries them.")
    return warnings


def _warning_box(warnings: list[str]) -> str:
    bar = "!" * 78
    return "\n".join([bar, *[f"! WARNING: {w}" for w in warnings], bar])


def artifact_hashes(out: str) -> list[dict[str, Any]]:
    """SHA-256 and byte size of every model, TFLite file and plot in a run folder."""
    entries = []
    for folder in ("models", "tflite", "plots"):
        root = os.path.join(out, folder)
        if not os.path.isdir(root):
            continue
        for name in sorted(os.listdir(root)):
            path = os.path.join(root, name)
            if os.path.isfile(path) and not name.startswith("."):
                with open(path, "rb") as f:
                    data = f.read()
                entries.append({"path": f"{folder}/{name}", "sha256": hashlib.sha256(data).hexdigest(),
                                "bytes": len(data)})
    return entries


# Settings that only change the final selection; any other change affects stages.
_SELECTION_KEYS = {"export.optimize_for", "export.max_accuracy_drop"}


def _flatten(config: dict):
    """`section.key -> value` of a config dict (two levels; builder options stay whole)."""
    for key, value in config.items():
        if isinstance(value, dict):
            for sub, leaf in value.items():
                yield f"{key}.{sub}", leaf
        else:
            yield key, value


def _warn_changed_config(out, config, log) -> None:
    path, stages_dir = os.path.join(out, "config.json"), os.path.join(out, "stages")
    if not os.path.isfile(path) or not os.path.isdir(stages_dir) or not os.listdir(stages_dir):
        return
    with open(path) as f:
        before = dict(_flatten(json.load(f)))
    now = dict(_flatten(json.loads(json.dumps(config.to_dict()))))
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k) and k not in _SELECTION_KEYS)
    if changed:
        log(f"warning: {', '.join(changed)} changed since this run folder was started; finished stages keep "
            "their old results. Use a new --out (or delete stages/) to redo them.")


def run(config: RunConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs the optimization job described by `config` and writes its run folder.

    Stages: baseline (teacher) -> distill (student) -> prune (+ QAT) -> export (every
    TFLite mode, each verified against its Keras model) -> evaluate (LiteRT: accuracy,
    size, latency) -> report (selection, plots, hashes).  Rerunning with the same
    `out_dir` skips finished stages and resumes an interrupted training stage from its
    last epoch backup.

    Args:
        config: A validated `RunConfig`.
        log: Where progress lines go.

    Returns:
        The report (also written to `out_dir/report.json` and `report.md`).

    Raises:
        ConfigError: for a bad config, an `out_dir` that is a file or a non-empty folder not
            made by tfimgopt, or a run folder another run holds (an OS lock, held for the run).

    Example:
        >>> from tfimgopt.pipeline import load_config, run
        >>> # a whole job (minutes), so the doctest run skips it
        >>> report = run(load_config(overrides=["train.epochs=1"]))  # doctest: +SKIP
    """
    config.validate()
    with _io.claim_run_folder(config.out_dir):
        return _run(config, log)


def _run(config: RunConfig, log: Callable[[str], None]) -> dict[str, Any]:
    from tfimgopt.distribute import create_strategy, set_precision, strategy_kind

    out = config.out_dir
    stale = _io.remove_stale_temporaries(out)
    if stale:
        log(f"removed {stale} half-written temporary file(s) left by an interrupted run")
    _warn_changed_config(out, config, log)
    _io.write_json(os.path.join(out, "config.json"), config.to_dict())
    strategy = create_strategy(config.train.strategy)
    precision = set_precision(config.train.precision, strategy)
    keras.utils.set_random_seed(config.seed)
    stages = _Stages(out, log)
    data = prepare_data(config, log, strategy)
    info = data.splits.info
    models_dir = os.path.join(out, "models")

    if config.distill.enabled and not stages.done("distill"):
        _check_student_smaller(config, info)
    baseline = stages.run("baseline", lambda: train_classifier(
        config, data, os.path.join(models_dir, "baseline.keras"), os.path.join(out, "work", "baseline"), out,
        strategy))
    log(f"baseline {baseline['model']}: test accuracy {baseline['test_accuracy']:.4f}, "
        f"{baseline['params']:,} parameters")
    loaded = {"baseline": load_model(os.path.join(out, baseline["path"]))}
    records = {"baseline": baseline}
    deployed = "baseline"
    if config.distill.enabled:
        records["student"] = stages.run("distill", lambda: _distill_stage(
            config, data, loaded["baseline"], out, strategy, log))
        loaded["student"] = load_model(os.path.join(out, records["student"]["path"]))
        deployed = "student"
        log(f"student {records['student']['model']}: test accuracy {records['student']['test_accuracy']:.4f}")
    sparsity = {}
    if config.compress.enabled:
        records["pruned"] = stages.run("prune", lambda: _prune_stage(
            config, data, deployed, loaded[deployed], out, strategy))
        loaded["pruned"] = load_model(os.path.join(out, records["pruned"]["path"]))
        sparsity["pruned"] = records["pruned"]["sparsity"]
        log(f"pruned {deployed}: sparsity {records['pruned']['sparsity']:.1%}, "
            f"test accuracy {records['pruned']['test_accuracy']:.4f}")
        if config.compress.qat_epochs and "int8" in config.export.modes:
            records["qat"] = stages.run("qat", lambda: _qat_stage(config, data, loaded["pruned"], out, strategy))
    resumed = stages.done("export")
    exported = stages.run("export", lambda: _export_stage(config, data, loaded, out, log))
    if resumed and exported.get("failed"):
        log(f"== retrying the export(s) that failed verification last time: {', '.join(exported['failed'])}")
        again = _export_stage(config, data, loaded, out, log, only=set(exported["failed"]))
        exported = {"files": {**exported["files"], **again["files"]}, "failed": again["failed"]}
        _io.write_json(stages.record_path("export"), exported)
        if stages.done("evaluate"):
            os.remove(stages.record_path("evaluate"))
    failed = dict(exported.get("failed", {}))
    files = {name: entry["path"] for name, entry in exported["files"].items()}
    if "qat" in records:
        if records["qat"].get("failed"):
            failed["pruned_qat_int8"] = {"path": records["qat"]["path"], "verify": records["qat"]["verify"],
                                         "reason": records["qat"]["failed"]}
        else:
            files["pruned_qat_int8"] = records["qat"]["path"]
    table = stages.run("evaluate", lambda: _evaluate_stage(config, data, files, sparsity, out))
    chance = chance_level(data.splits.test)
    selection = select_variant(table["rows"], config.export.optimize_for, config.export.max_accuracy_drop, chance)
    warnings = run_warnings(records, table["rows"], chance, failed)
    plots = _plots(table["rows"], records, selection["variant"], out)
    from tfimgopt.pipeline.steps import save_verification_data

    sample = next(iter(data.splits.test.batch(16)))[0].numpy().astype("float32")
    save_verification_data(out, files, sample)
    report = {
        "dataset": {"name": info.name, "num_classes": info.num_classes, "image_shape": list(info.image_shape),
                    "num_examples": dict(info.num_examples), "unlabelled": data.num_unlabelled},
        "strategy": f"{_strategy_name(strategy)} on {strategy_kind(strategy).upper()}",
        "replicas": strategy.num_replicas_in_sync, "precision": precision,
        **records,
        "verification": {k: v["verify"] for k, v in {**exported["files"], **failed}.items()}
        | ({"pruned_qat_int8": records["qat"]["verify"]} if "qat" in records else {}),
        "variants": table["rows"],
        "failed_variants": {name: {"reason": entry["reason"], "verify": entry["verify"]}
                            for name, entry in failed.items()},
        "chance": chance,
        "warnings": warnings,
        "selection": selection,
        "plots": plots,
        "seconds": round(time.monotonic() - stages.start, 2),
        "stage_seconds": stages.seconds,
        "artifacts": artifact_hashes(out),
    }
    _io.write_json(os.path.join(out, "report.json"), report)
    markdown = report_markdown(report, table["markdown"])
    _io.write_text(os.path.join(out, "report.md"), markdown)
    summary = (f"\n{table['markdown']}\n\n{_resolution_note(chance)}\n{_time_note(stages.seconds)}\n"
               f"selected: {selection['reason']}\nrun folder: {out}")
    log(summary + ("\n" + _warning_box(warnings) if warnings else ""))
    return report


def _time_note(seconds: dict[str, float]) -> str:
    total = sum(seconds.values())
    tail = seconds.get("export", 0.0) + seconds.get("evaluate", 0.0)
    return (f"Stage time {total:.0f} s: export + evaluation {tail:.0f} s ({100 * tail / max(total, 1e-9):.0f}%), "
            + ", ".join(f"{name} {sec:.0f} s" for name, sec in seconds.items()) + ".")


def _resolution_note(chance: dict[str, Any]) -> str:
    return (f"Accuracy resolution: {chance['test_images']} test images, so one image = "
            f"{chance['resolution_points']:.2f} points; chance level (majority class) "
            f"{100 * chance['accuracy']:.2f}% + {100 * chance['noise']:.2f} points of noise.")


def _strategy_name(strategy) -> str:
    name = type(strategy).__name__
    return "default strategy" if name.startswith("_Default") else name


def _plots(rows, records, chosen, out) -> list[str]:
    from tfimgopt.pipeline.plots import tradeoff_plot, training_curves

    plots_dir = os.path.join(out, "plots")
    paths = [
        tradeoff_plot(rows, "size_bytes", os.path.join(plots_dir, "accuracy_vs_size.png"), chosen=chosen),
        tradeoff_plot(rows, "latency_ms_median", os.path.join(plots_dir, "accuracy_vs_latency.png"), chosen=chosen),
    ]
    histories = {name: os.path.join(out, r["history"]) for name, r in records.items() if r.get("history")}
    curves = training_curves(histories, os.path.join(plots_dir, "training_curves.png"))
    if curves:
        paths.append(curves)
    return [os.path.relpath(p, out) for p in paths]


def report_markdown(report: dict[str, Any], table: str) -> str:
    """The human-readable report of a run."""
    data = report["dataset"]
    lines = [
        "# tfimgopt run report",
        "",
        f"Dataset: {data['name']} ({data['num_classes']} classes, images {tuple(data['image_shape'])}, "
        f"examples {data['num_examples']}" + (f", {data['unlabelled']} unlabelled" if data["unlabelled"] else "")
        + f"). Strategy: {report['strategy']} ({report['replicas']} replica(s)), precision {report['precision']}.",
        "",
        "## Training",
        "",
        "| stage | model | test accuracy (Keras) | notes |",
        "|---|---|---:|---|",
        f"| baseline | {report['baseline']['model']} ({report['baseline']['params']:,} params) | "
        f"{report['baseline']['test_accuracy']:.4f} | |",
    ]
    if "student" in report:
        s = report["student"]
        note = f"alpha {s['alpha']:g}, T {s['temperature']:g}" + (" (tuned)" if s["tuning"] else "")
        note += f", transfer set with {s['unlabelled_images']} unlabelled images" if s["transfer_set"] else ""
        lines.append(f"| distill | {s['model']} ({s['params']:,} params) | {s['test_accuracy']:.4f} | {note} |")
    if "pruned" in report:
        p = report["pruned"]
        lines.append(f"| prune | {p['from']} | {p['test_accuracy']:.4f} | sparsity {p['sparsity']:.1%} "
                     f"(target {p['target_sparsity']:.0%}) |")
    if "qat" in report:
        kept = report["qat"]["preserved_sparsity"]
        lines.append(f"| qat | pruned, sparsity-preserving | | sparsity kept {kept:.1%} |")
    sel = report["selection"]
    if report.get("warnings"):
        lines[2:2] = ["> **WARNING**", *[f"> - {w}" for w in report["warnings"]], ""]
    lines += [
        "",
        "## TFLite variants (measured in the LiteRT interpreter on the test split)",
        "",
        table,
        "",
        _resolution_note(report["chance"]),
        "",
        *(["Failed verification (left out of the selection): "
           + "; ".join(f"**{n}**: {e['reason']}" for n, e in report["failed_variants"].items()), ""]
          if report.get("failed_variants") else []),
        f"Selected for `{sel['optimize_for']}` with at most {sel['max_accuracy_drop_points']:g} points of "
        f"accuracy lost: **{sel['variant']}** (`{sel['path']}`). {sel['reason']}." if sel["variant"] else
        f"Selected for `{sel['optimize_for']}`: **nothing**. {sel['reason']}",
        "",
        *[f"![{os.path.basename(p)}]({p})" for p in report["plots"]],
        "",
        f"{_time_note(report['stage_seconds'])} Artifact hashes (SHA-256) are in report.json; "
        "`tfimgopt verify RUN_DIR` re-checks them.",
        "",
    ]
    return "\n".join(lines)


__all__ = ["PreparedData", "at_chance", "chance_level", "load_model", "prepare_data", "run", "select_variant",
           "train_classifier"]
