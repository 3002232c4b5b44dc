"""Compression techniques by name: what the run applies, in order, to the model it deploys.

Each `Technique` takes a trained model and the training data, fine-tunes, and returns the
compressed model with a report. The run makes one stage per registered technique (in
`order`), so a new technique (clustering, channel pruning) is one file with a
`Technique` and one `register_technique` call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tfimgopt._registry import Registry
from tfimgopt.compat import keras, tf


@dataclasses.dataclass(frozen=True)
class TechniqueResult:
    """A technique's output: the compressed model and what it measured (`sparsity`, ...)."""

    model: keras.Model
    report: dict[str, Any]


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
        apply: `fn(model, train_ds, val_ds, settings, *, work_dir, strategy) -> TechniqueResult`.
        enabled: `fn(config) -> bool`: whether a run with this config applies it.
        result: What the run does with the output: `"model"` (saved; later stages and
            the exporters start from it) or `"export"` (exported at once in
            `export_modes`, e.g. a quantization-aware model).
        variant_tag: Inserted into the variant names it yields (`pruned_qat_int8`).
        report_key: Key of its record in report.json (default: the name).
    """

    name: str
    summary: str
    order: int
    settings: tuple[str, ...]
    apply: Callable[..., TechniqueResult]
    enabled: Callable[[Any], bool]
    result: str = "model"
    export_modes: tuple[str, ...] = ()
    variant_tag: str = ""
    report_key: str = ""

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
    if technique.result not in ("model", "export"):
        from tfimgopt.errors import ConfigError, received

        raise ConfigError(f"Technique result must be 'model' or 'export'. {received('result', technique.result)}")
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


# --- the built-in techniques ------------------------------------------------------------


def _prune(model: keras.Model, train_ds: tf.data.Dataset, val_ds: tf.data.Dataset | None,
           settings: Mapping[str, Any], *, work_dir: str | None = None, strategy=None) -> TechniqueResult:
    from tfimgopt.compress.prune import plan_pruning, prune_and_finetune

    skip = settings.get("skip")
    layers, dense = plan_pruning(model, skip)  # the default policy prunes every layer of a small model
    pruned, sparsity = prune_and_finetune(model, train_ds, val_ds, settings["epochs"], settings["target_sparsity"],
                                          learning_rate=settings["learning_rate"], work_dir=work_dir,
                                          strategy=strategy, skip=skip)
    return TechniqueResult(pruned, {"sparsity": sparsity["overall"], "skip": skip, "pruned_layers": layers,
                                    "dense_layers": dense})


def _qat(model: keras.Model, train_ds: tf.data.Dataset, val_ds: tf.data.Dataset | None,
         settings: Mapping[str, Any], *, work_dir: str | None = None, strategy=None) -> TechniqueResult:
    from tfimgopt.compress.prune import sparsity_report
    from tfimgopt.compress.quantize import quantize_and_finetune

    qat = quantize_and_finetune(model, train_ds, val_ds, max(1, settings["qat_epochs"]),
                                learning_rate=settings["qat_learning_rate"], work_dir=work_dir, strategy=strategy)
    return TechniqueResult(qat, {"preserved_sparsity": sparsity_report(model)["overall"]})


register_technique(Technique(
    name="prune", summary="magnitude pruning to compress.target_sparsity, fine-tuned, stripped", order=30,
    settings=("compress.target_sparsity", "compress.epochs", "compress.learning_rate", "compress.skip"),
    apply=_prune, enabled=lambda c: c.compress.enabled, report_key="pruned",
))
register_technique(Technique(
    name="qat", summary="sparsity-preserving quantization-aware fine-tuning, exported as full int8", order=40,
    settings=("compress.qat_epochs", "compress.qat_learning_rate"), apply=_qat,
    enabled=lambda c: c.compress.enabled and c.compress.qat_epochs > 0 and "int8" in c.export.modes,
    result="export", export_modes=("int8",), variant_tag="qat",
))
