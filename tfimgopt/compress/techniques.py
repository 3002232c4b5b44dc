"""Compression techniques by name: what the run applies, in order, to the model it deploys.

Each `Technique` takes a trained model and the training data, fine-tunes, and returns the
compressed model with a report. The run makes one stage per registered technique (in
`order`), so a new technique is one file with a `Technique` and one `register_technique`
call, as the built-in ones are (`prune.py`, `channels.py`, `cluster.py`, `quantize.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from tfimgopt._registry import Registry
from tfimgopt.compat import keras

#: What the run does with a technique's model: keep it (`KEEP_MODEL`: later techniques and the
#: exporters start from it) or export it at once in its `export_modes` (`EXPORT_MODEL`, as QAT).
KEEP_MODEL, EXPORT_MODEL = "model", "export"
RESULTS = (KEEP_MODEL, EXPORT_MODEL)


@dataclasses.dataclass(frozen=True)
class CompressResult:
    """What every `*_and_finetune` function and every technique returns: the compressed,
    fine-tuned model and what it measured (`sparsity`, `clusters`, parameters before and
    after...). Unpacks as `model, report = result`.
    """

    model: keras.Model
    report: dict[str, Any]

    def __iter__(self):
        return iter((self.model, self.report))


#: The name techniques used before `CompressResult` served every compression function.
TechniqueResult = CompressResult


@dataclasses.dataclass(frozen=True)
class Technique:
    """A compression technique the run can apply.

    Attributes:
        name: Registry name, also the run's stage name.
        summary: One line for `list_techniques` and the docs.
        order: Position in the chain (lower runs first; pruning 30, QAT 40).
        settings: Config keys it reads, `section.key` (e.g. `compress.target_sparsity`);
            `apply` gets their values under the leaf names, and they make up the
            stage's fingerprint.
        apply: `fn(model, train_ds, val_ds, settings, *, work_dir, strategy) -> CompressResult`.
        enabled: `fn(config) -> bool`: whether a run with this config applies it.
        result: What the run does with the output: `"model"` (saved; later stages and
            the exporters start from it) or `"export"` (exported at once in
            `export_modes`, e.g. a quantization-aware model).
        variant_tag: Inserted into the variant names it yields (`pruned_qat_int8`).
        report_key: Key of its record in report.json (default: the name).
        describe: `fn(record) -> str`: what it did, in a few words, from its record (the
            `CompressResult.report` plus `from`, `test_accuracy` and the settings): the
            notes of its row in report.md and its log line.
    """

    name: str
    summary: str
    order: int
    settings: tuple[str, ...]
    apply: Callable[..., CompressResult]
    enabled: Callable[[Any], bool]
    result: str = KEEP_MODEL
    export_modes: tuple[str, ...] = ()
    variant_tag: str = ""
    report_key: str = ""
    describe: Callable[[dict[str, Any]], str] = lambda record: ""

    def settings_from(self, config: Any) -> dict[str, Any]:
        """`{leaf name: value}` of this technique's settings in a `RunConfig`."""
        values = {}
        for key in self.settings:
            section, _, leaf = key.partition(".")
            values[leaf] = getattr(getattr(config, section), leaf)
        return values


_TECHNIQUES: Registry[Technique] = Registry("compression technique")


def register_technique(technique: Technique) -> Technique:
    """Adds a technique under `technique.name`; a name registered already raises `ConfigError`."""
    if technique.result not in RESULTS:
        from tfimgopt.errors import ConfigError, received

        raise ConfigError(f"Technique result must be one of {RESULTS}. {received('result', technique.result)}")
    return _TECHNIQUES.register(technique.name, technique)


def get_technique(name: str) -> Technique:
    """The technique registered as `name`; an unknown name raises `ConfigError` with close names."""
    return _TECHNIQUES.get(name)


def list_techniques(filter: str | None = None, exclude: Sequence[str] = ()) -> list[str]:  # noqa: A002
    """Registered technique names, in the order a run applies them.

    Example:
        >>> from tfimgopt.compress import list_techniques
        >>> list_techniques()
        ['channel_prune', 'prune', 'cluster', 'qat']
    """
    names = _TECHNIQUES.names(filter, exclude)
    return sorted(names, key=lambda n: (_TECHNIQUES.get(n).order, n))
