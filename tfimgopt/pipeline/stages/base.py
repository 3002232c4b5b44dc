"""The `Stage` contract, its fingerprint, and the stage registry.

A stage has a name, declares what it reads (config keys, the data, every earlier stage's
record) and has `run(ctx) -> record`. Its fingerprint hashes those inputs; the run skips a
stage whose record carries the same fingerprint and redoes it (and so every later one,
whose fingerprints include its record) when anything it reads changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from tfimgopt._registry import Registry
from tfimgopt.pipeline.config import RunConfig
from tfimgopt.pipeline.context import RunContext

#: Bumped when the meaning of a record changes, so older run folders redo their stages.
RECORD_VERSION = 4
#: Stage roles: what the run and the report do with a stage's record.
REFERENCE = "reference"  # trains (or adopts) the model every other one is measured against
TRAINS = "trains"  # makes a model (or exports one it trained): a row of the training table
EXPORTS = "exports"  # writes the artifacts of the run's models
MEASURES = "measures"  # measures the artifacts: its record is the variants table the selection reads
ROLES = (REFERENCE, TRAINS, EXPORTS, MEASURES)


class Stage:
    """One step of the run. Subclass, set the attributes, implement `run`, register.

    Attributes:
        name: Registry name; the record is `stages/<name>.json`.
        order: Position in the run (baseline 10, distill 20, techniques 30-69, export 80,
            evaluate 90).
        settings: Config keys it reads: a section (`"train"`) or one key (`"compress.epochs"`).
            A change to any of them redoes the stage; settings no stage reads (the selection's
            `export.optimize_for`, `export.max_accuracy_drop`) redo nothing.
        uses_data: Whether its result depends on the data (its fingerprint then includes
            `data_fingerprint`: the data settings, the seed and a folder's file listing).
        report_key: Key of its record in report.json (default: the name).
        role: One of `ROLES`: what the run and the report do with its record.
    """

    name: str = ""
    role: str = TRAINS
    order: int = 50
    settings: tuple[str, ...] = ()
    uses_data: bool = True
    report_key: str = ""

    @property
    def key(self) -> str:
        return self.report_key or self.name

    def enabled(self, config: RunConfig) -> bool:
        """Whether a run with `config` includes this stage."""
        return True

    def preflight(self, ctx: RunContext) -> None:
        """Cheap checks run before any stage trains, so a bad config fails in seconds."""

    def run(self, ctx: RunContext) -> dict[str, Any]:
        """Does the work; returns the JSON-serializable record."""
        raise NotImplementedError

    def resume(self, ctx: RunContext, record: dict[str, Any]) -> dict[str, Any] | None:
        """Called instead of `run` when a record with the same fingerprint exists: return an
        updated record (e.g. retried failures) or None to keep it."""
        return None

    def publish(self, ctx: RunContext, record: dict[str, Any]) -> None:
        """Adds what the record made (models, variants) to `ctx` for later stages."""

    def report_row(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The stage's row in report.md's training table (`stage`, `model`, `test_accuracy`,
        `notes`), or None for a stage that trains nothing. The default reads the record's
        `model` and `test_accuracy`."""
        if "test_accuracy" not in record and "model" not in record:
            return None
        return {"stage": self.name, "model": str(record.get("model", self.key)),
                "test_accuracy": record.get("test_accuracy"), "notes": ""}

    def inputs(self, config: RunConfig) -> dict[str, Any]:
        """`{config key: value}` of every setting this stage reads."""
        values = json.loads(json.dumps(config.to_dict()))
        out = {}
        for key in self.settings:
            node: Any = values
            for part in key.split("."):
                node = node[part]
            out[key] = node
        return out


def fingerprint(stage: Stage, config: RunConfig, data_hash: str, upstream: Sequence[dict[str, Any]]) -> str:
    """SHA-256 of everything a stage's result depends on: its name and settings, the data
    (if it uses data), and the records of the stages before it."""
    state = {
        "version": RECORD_VERSION,
        "stage": stage.name,
        "settings": stage.inputs(config),
        "data": data_hash if stage.uses_data else None,
        "upstream": [hashlib.sha256(json.dumps(r, sort_keys=True).encode()).hexdigest() for r in upstream],
    }
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()


_STAGES: Registry[Stage] = Registry("stage")


def register_stage(stage: Stage) -> Stage:
    """Adds a stage to every run (in `stage.order`).

    Raises:
        ConfigError: if a stage of that name is registered already, or its role is unknown.
    """
    if stage.role not in ROLES:
        from tfimgopt.errors import ConfigError, received

        raise ConfigError(f"A stage's role must be one of {ROLES}. {received('role', stage.role)}")
    return _STAGES.register(stage.name, stage)
