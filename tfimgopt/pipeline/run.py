"""The main job, orchestrated: stage order, resume, invalidation, selection, report.

The stages themselves live in `tfimgopt.pipeline.stages` (baseline -> distill -> one per
compression technique -> export -> evaluate). Every stage leaves a record in
`out_dir/stages/` with the fingerprint of what it read; a rerun with the same folder
skips a stage whose fingerprint still matches, redoes it (and every later stage) when a
setting it reads, the seed or the data changed, and training stages resume mid-way
from their epoch backups.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any

from tfimgopt import _io
from tfimgopt.compat import keras
from tfimgopt.errors import ConfigError, TrainingError
from tfimgopt.pipeline.adopt import load_user_model, save_input_model, settle_choices, settle_shapes
from tfimgopt.pipeline.config import RunConfig
from tfimgopt.pipeline.context import RunContext
from tfimgopt.pipeline.data import data_fingerprint, prepare_data
from tfimgopt.pipeline.report import write_report
from tfimgopt.pipeline.stages import Stage, fingerprint, get_stage, list_stages
from tfimgopt.pipeline.stages.base import RECORD_VERSION


def run(config: RunConfig, log: Callable[[str], None] = print, *, model: Any = None, data: Any = None
        ) -> dict[str, Any]:
    """Runs the optimization job described by `config` and writes its run folder.

    Stages: baseline (teacher) -> distill (student) -> prune (+ QAT) -> export (every
    TFLite mode, each verified against its Keras model) -> evaluate (LiteRT: accuracy,
    size, latency) -> report (selection, plots, hashes).  Rerunning with the same
    `out_dir` skips finished stages whose inputs are unchanged, redoes the ones whose
    settings, seed or data changed, and resumes an interrupted training stage from its
    last epoch backup.

    With `train.model` a model file (or `model` given), the run adopts that model as its
    baseline instead of training a zoo model: see `tfimgopt.optimize`.

    Args:
        config: A validated `RunConfig`.
        log: Where progress lines go.
        model: Your model object (tf_keras or Keras 3), instead of `train.model`; it is saved
            as `input/model.keras` in the run folder (kept while unchanged, so a rerun resumes).
        data: In-memory data (`(images, labels)` arrays or a mapping of splits, see
            `load_dataset`) instead of `data.source`, which then only names it.

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
    config.validate(in_memory_data=data is not None)
    with _io.claim_run_folder(config.out_dir):
        return _run(config, log, model, data)


class _Records:
    """The stage records of a run folder, and how long each stage took."""

    def __init__(self, out: str, log: Callable[[str], None]):
        self.dir = os.path.join(out, "stages")
        self.log = log
        self.start = time.monotonic()
        self.seconds: dict[str, float] = {}

    def path(self, stage: Stage) -> str:
        return os.path.join(self.dir, f"{stage.name}.json")

    def load(self, stage: Stage) -> dict[str, Any] | None:
        try:
            with open(self.path(stage)) as f:
                record = json.load(f)
        except (OSError, ValueError):
            return None  # missing, or not ours to trust: the stage runs again
        return record if isinstance(record, dict) else None

    def write(self, stage: Stage, record: dict[str, Any]) -> None:
        _io.write_json(self.path(stage), record)

    def elapsed(self) -> float:
        return time.monotonic() - self.start


def _leaves(prefix: str, value: Any):
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            yield from _leaves(f"{prefix}.{key}", sub)
    else:
        yield prefix, value


def _why_redone(before: dict[str, Any], stage: Stage, config: RunConfig, data_hash: str, redone: list[str]) -> str:
    """What changed since a stage's old record: its settings, the data or seed, or an earlier stage."""
    old = dict(_leaves("", before.get("inputs") or {}))
    now = dict(_leaves("", stage.inputs(config)))
    reasons = [k.lstrip(".") for k in sorted(set(old) | set(now)) if old.get(k) != now.get(k)]
    if stage.uses_data and before.get("data") not in (None, data_hash):
        reasons.append("the data or the seed")
    if redone:
        reasons.append(f"{', '.join(redone)} redone")
    if not reasons:
        reasons.append("its record is from an older tfimgopt" if before.get("version") != RECORD_VERSION
                       else "an earlier stage's record changed")
    return "; ".join(reasons)


def _artifact_paths(record: dict[str, Any]) -> list[str]:
    """Run-folder-relative paths of the files a stage record says it wrote."""
    paths = [record["path"]] if isinstance(record.get("path"), str) else []
    for group in ("files", "failed"):
        paths += [e["path"] for e in (record.get(group) or {}).values() if isinstance(e, dict) and "path" in e]
    return paths


def _hashes(ctx: RunContext, record: dict[str, Any]) -> dict[str, str]:
    return {rel: _io.sha256_tree(ctx.path(rel)) for rel in _artifact_paths(record)}


def _tampered(ctx: RunContext, stage: Stage, record: dict[str, Any]) -> str | None:
    """Why a finished stage's files cannot be reused (missing or changed since it wrote them, or
    another stage's), or None."""
    if record.get("stage") != stage.name:
        return f"its record names stage {record.get('stage')!r}, not {stage.name!r}"
    recorded = record.get("artifacts")
    if not isinstance(recorded, dict):
        return "its record lists no artifact hashes"
    for rel in recorded:
        owner = next((name for name, other in ctx.records.items() if rel in (other.get("artifacts") or {})), None)
        if owner is not None:  # e.g. an edited record pointing at another stage's model with its real hash
            return f"its record claims {rel}, which stage {owner} wrote"
    for rel, digest in recorded.items():
        try:
            path = ctx.path(rel)
        except ConfigError:
            return f"{rel!r} leaves the run folder"
        if not os.path.exists(path):
            return f"{rel} is missing"
        if _io.sha256_tree(path) != digest:
            return f"{rel} changed since the stage wrote it"
    return None


def _run_stage(stage: Stage, ctx: RunContext, records: _Records, data_hash: str, redone: list[str]
               ) -> dict[str, Any]:
    upstream = list(ctx.records.values())
    print_ = records.log
    want = fingerprint(stage, ctx.config, data_hash, upstream)
    record = records.load(stage)
    tampered = _tampered(ctx, stage, record) if record is not None and record.get("fingerprint") == want else None
    if record is not None and record.get("fingerprint") == want and tampered is None:
        print_(f"== stage {stage.name}: already done, skipped [{records.elapsed():6.1f}s]")
        updated = stage.resume(ctx, record)
        if updated is not None:
            record = {**updated, "artifacts": _hashes(ctx, updated)}
            records.write(stage, record)
            redone.append(stage.name)
        records.seconds[stage.name] = record.get("seconds", 0.0)
        return record
    if record is not None:
        why = tampered or _why_redone(record, stage, ctx.config, data_hash, redone)
        print_(f"== stage {stage.name}: redoing it, changed since its record: {why}")
    redone.append(stage.name)
    print_(f"== stage {stage.name} [{records.elapsed():6.1f}s]")
    began = time.monotonic()
    ctx.fingerprint = want
    try:
        record = stage.run(ctx)
    except TrainingError as err:  # say which stage diverged; earlier stages' results stay for a rerun
        raise TrainingError(f"stage {stage.name}: {err}") from None
    record["seconds"] = round(time.monotonic() - began, 2)
    record["stage"], record["version"] = stage.name, RECORD_VERSION
    record["fingerprint"] = want
    record["inputs"] = stage.inputs(ctx.config)
    record["data"] = data_hash if stage.uses_data else None
    record["artifacts"] = _hashes(ctx, record)
    records.seconds[stage.name] = record["seconds"]
    records.write(stage, record)
    print_(f"   stage {stage.name} finished in {record['seconds']:.1f}s")
    return record


def _run(config: RunConfig, log: Callable[[str], None], model: Any, source: Any) -> dict[str, Any]:
    from tfimgopt.distribute import create_strategy, set_precision, strategy_kind

    out = config.out_dir
    stale = _io.remove_stale_temporaries(out)
    if stale:
        log(f"removed {stale} half-written temporary file(s) left by an interrupted run")
    came_as_keras3 = False
    if model is not None:
        path, came_as_keras3 = save_input_model(out, model)
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, model=path))
    user = None
    if config.train.adopts_file:
        user = load_user_model(config.train.model, safe_mode=not config.train.unsafe)
        user.keras3 = user.keras3 or came_as_keras3
    config = settle_shapes(config, user)
    strategy = create_strategy(config.train.strategy)
    precision = set_precision(config.train.precision, strategy)
    keras.utils.set_random_seed(config.seed)
    records = _Records(out, log)
    data = prepare_data(config, log, strategy, source)
    config, user, notes = settle_choices(config, user, data, log)
    _io.write_json(os.path.join(out, "config.json"), config.to_dict())
    ctx = RunContext(config, out, data, strategy, log, user=user, notes=notes)
    data_hash = data_fingerprint(config.data, config.seed, source)
    stages = [s for s in map(get_stage, list_stages()) if s.enabled(config)]
    for stage in stages:
        stage.preflight(ctx)
    by_key, redone, rows = {}, [], []
    for stage in stages:
        record = _run_stage(stage, ctx, records, data_hash, redone)
        ctx.records[stage.name] = record
        stage.publish(ctx, record)
        by_key[stage.key] = record
        rows += [row for row in [stage.report_row(record)] if row is not None]
    where = f"{_strategy_name(strategy)} on {strategy_kind(strategy).upper()}"
    roles = {stage.key: stage.role for stage in stages}
    return write_report(ctx, records.seconds, records.elapsed(), by_key, roles, rows, strategy_desc=where,
                        precision=precision)


def _strategy_name(strategy) -> str:
    name = type(strategy).__name__
    return "default strategy" if name.startswith("_Default") else name


__all__ = ["run"]
