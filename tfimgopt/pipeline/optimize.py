"""`tfimgopt.optimize`: the whole job on your own model and data, in one call, and its typed report."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from tfimgopt.errors import ConfigError, received


@dataclasses.dataclass(frozen=True)
class VariantResult:
    """One measured file of a run (a row of the report's table).

    Attributes:
        name: e.g. `pruned_int8`.
        model: The Keras model it was exported from (`baseline`, `student`, `pruned`, `pruned_qat`).
        mode: The exporter (`float32`, `dynamic`, `float16`, `int8`, ...).
        accuracy: Top-1 accuracy on the test split, measured in LiteRT.
        size_bytes: File size; `gzip_bytes` compressed (what sparsity saves shows there).
        latency_ms: Median single-image latency in LiteRT.
        sparsity: Share of zero kernel weights, for pruned models.
        path: Absolute path of the file.
    """

    name: str
    model: str
    mode: str
    accuracy: float
    size_bytes: int
    gzip_bytes: int
    latency_ms: float
    sparsity: float | None
    path: str


@dataclasses.dataclass(frozen=True)
class RunReport:
    """What `tfimgopt.optimize` (and `tfimgopt run`) measured, typed.

    `str(report)` is the table and the selection; in a notebook it renders as a table.

    Attributes:
        out_dir: The run folder (report.md, report.json, plots, models, TFLite files).
        variants: Every verified file, measured.
        selected: The variant chosen under the accuracy budget, or None.
        selection_reason: Why (or why nothing).
        baseline_accuracy: Test accuracy of the baseline (your model) in Keras.
        settled: What the run decided for you (input range, student, sparsity...).
        warnings: What a person must not miss (models at chance, failed variants).
        failed: Variant name -> why it failed verification.
        keras3: Whether the model came in as Keras 3 (`model()` then gives Keras 3 back).
        table: The report's markdown table.
        raw: report.json as a dict.
    """

    out_dir: str
    variants: tuple[VariantResult, ...]
    selected: VariantResult | None
    selection_reason: str
    baseline_accuracy: float
    settled: tuple[str, ...]
    warnings: tuple[str, ...]
    failed: Mapping[str, str]
    keras3: bool
    table: str
    raw: Mapping[str, Any] = dataclasses.field(repr=False)

    @classmethod
    def from_run(cls, report: Mapping[str, Any], table: str | None = None) -> RunReport:
        """Builds the typed report from a run's report dict (or a report.json read back)."""
        out = report["config"]["out_dir"]
        rows = [VariantResult(r["variant"], r["model"], r["mode"], r["accuracy"], r["size_bytes"], r["gzip_bytes"],
                              r["latency_ms_median"], r["sparsity"], os.path.join(out, r["path"]))
                for r in report["variants"]]
        chosen = report["selection"]["variant"]
        return cls(
            out_dir=out, variants=tuple(rows), selected=next((v for v in rows if v.name == chosen), None),
            selection_reason=report["selection"]["reason"],
            baseline_accuracy=report[report["reference"]]["test_accuracy"],
            settled=tuple(report.get("settled", ())), warnings=tuple(report["warnings"]),
            failed={name: entry["reason"] for name, entry in report["failed_variants"].items()},
            keras3=bool(report.get("your_model", {}).get("keras3")), table=table or _table(rows), raw=report,
        )

    @classmethod
    def load(cls, out_dir: str) -> RunReport:
        """The report of a finished run folder (its report.json)."""
        with open(os.path.join(out_dir, "report.json")) as f:
            return cls.from_run(json.load(f))

    def variant(self, name: str) -> VariantResult:
        """The measured variant called `name`; an unknown name lists the run's variants."""
        for v in self.variants:
            if v.name == name:
                return v
        raise ConfigError(f"No variant {name!r} in this run; its variants: {[v.name for v in self.variants]}. "
                          f"{received('variant', name)}")

    def model(self, variant: str | None = None, *, keras3: bool | None = None) -> Any:
        """The Keras model a variant was exported from (default: the selected one), loaded from
        the run folder, taking what your model took (its input shape and pixel range: the
        run's input-range layer removed, or its inverse put in front of a student the run
        built) and ending as yours did (a softmax put back), as a Keras 3 model when yours came in as
        Keras 3 (or `keras3=True`), else tf_keras.

        Raises:
            ConfigError: no selection, or a quantization-aware variant (its deployable artifact
                is the int8 TFLite file; Keras 3 has no TFMOT fake-quant layers).
        """
        from tfimgopt.keras3 import to_keras3
        from tfimgopt.models.files import load_model
        from tfimgopt.pipeline.adopt import as_given, with_softmax

        chosen = self.variant(variant) if variant is not None else self.selected
        if chosen is None:
            raise ConfigError(f"Nothing was selected in this run: {self.selection_reason} Name a variant: "
                              f"{[v.name for v in self.variants]}. Received: variant=None")
        path = os.path.join(self.out_dir, "models", f"{chosen.model}.keras")
        if not os.path.isfile(path):
            raise ConfigError(
                f"{chosen.name} is a quantization-aware export: its deployable artifact is {chosen.path} (Keras 3 has "
                "no TFMOT fake-quant layers). The float model it was fine-tuned from is "
                f"report.model({self._float_source(chosen)!r}). Received: variant={chosen.name!r}")
        yours = self.raw.get("your_model")
        model = load_model(path, compile=False)
        if yours:
            model = as_given(model, yours["input_range"], tuple(yours["input_shape"]))
        if yours and yours.get("softmax"):
            model = with_softmax(model)
        return to_keras3(model) if (self.keras3 if keras3 is None else keras3) else model

    def _float_source(self, chosen: VariantResult) -> str:
        """The float variant of the model a QAT variant was fine-tuned from: the `from` of the
        stage record that exported it (whatever that stage is called)."""
        record = next((r for r in self.raw.values() if isinstance(r, dict) and chosen.name in r.get("files", {})), {})
        return next((v.name for v in self.variants if v.model == record.get("from")), chosen.name)

    def __str__(self) -> str:
        lines = [self.table, "", f"selected: {self.selection_reason}", f"run folder: {self.out_dir}"]
        lines += [f"WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        chosen = f"**{self.selected.name}**" if self.selected else "**nothing**"
        return f"{self.table}\n\nSelected: {chosen}. {self.selection_reason}\n\nRun folder: `{self.out_dir}`"


def _table(rows: list[VariantResult]) -> str:
    lines = ["| variant | accuracy | size KiB | gzip KiB | latency ms | sparsity |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {v.name} | {v.accuracy:.4f} | {v.size_bytes / 1024:,.1f} | {v.gzip_bytes / 1024:,.1f} | "
              f"{v.latency_ms:.3f} | {'' if v.sparsity is None else f'{v.sparsity:.0%}'} |" for v in rows]
    return "\n".join(lines)


def optimize(model: Any, data: Any = "digits", *, test_data: Any = None, out_dir: str = "runs/optimize",
             config: Any = None, log: Callable[[str], None] = print, verbose: bool = False,
             **settings: Any) -> RunReport:
    """Runs the whole job on your trained model and your data: distillation (a student picked
    for your model), pruning, quantization, TFLite files verified in LiteRT, a selection under
    the accuracy budget, plots and a report; resumable (call it again with the same `out_dir`).

    Args:
        model: Your trained model: a tf_keras or Keras 3 Sequential/functional model, or the
            path of a `.keras` file. A Keras 3 model is rebuilt in tf_keras (outputs proven
            equal); `RunReport.model()` gives the selected variant back as Keras 3.
        data: `(images, labels)` arrays, a mapping of splits (`{"train": (x, y), "test": (x, y)}`),
            a `tf.data.Dataset` of (image, label) pairs, a `.npz` file, a folder of class
            subfolders, `"tfds:<name>"` or `"digits"`. Images are 0..255 (uint8 or float) or
            [0, 1] floats; the range your model was trained on is measured (`input_range`).
        test_data: Held-out `(images, labels)` for the test split (else a share of `data`).
        out_dir: The run folder.
        config: A `RunConfig` (or a config file path) to start from; `settings` override it.
        log: Where progress lines go.
        verbose: Show the converter's and LiteRT's own logs and Keras's line per epoch (else one
            progress bar per training stage, as the command line shows).
        **settings: Config values by dotted key with `__` for the dot, or plain for the common
            ones: `epochs=0`, `max_accuracy_drop=1.0`, `optimize_for="size"`, `input_range="0-1"`,
            `image_size=...`, `data__batch_size=32`, `compress__target_sparsity=0.8`,
            `distill__enabled=False`, `modes=["float32", "int8", "int4"]` (`export.modes`),
            `backend="litert"`, `float_layers=["classifier"]`.

    Returns:
        A `RunReport`.

    Raises:
        ConfigError: a bad setting, model or data (the message names it and what is accepted).

    Example:
        >>> import tfimgopt
        >>> report = tfimgopt.optimize(model, (x_train, y_train), test_data=(x_test, y_test))  # doctest: +SKIP
        >>> print(report); small = report.model()  # doctest: +SKIP
    """
    from tfimgopt.compat import is_keras3
    from tfimgopt.pipeline.config import RunConfig, load_config
    from tfimgopt.pipeline.run import run

    if isinstance(config, RunConfig):
        base = config.to_dict()
    else:
        base = load_config(config).to_dict() if config is not None else {}
    overrides = {"out_dir": out_dir, **{_key(k): v for k, v in settings.items()}}
    values = json.loads(json.dumps(base))
    for key, value in overrides.items():
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    model_obj = None
    if isinstance(model, str | os.PathLike):
        values.setdefault("train", {})["model"] = os.fspath(model)
    elif model is not None:
        from tfimgopt.compat import keras

        if not (is_keras3(model) or isinstance(model, keras.Model)):
            raise ConfigError("optimize takes a Keras model (tf_keras or Keras 3) or a model file path. "
                              f"Received: model of type {type(model).__name__}")
        model_obj = model
    source = _in_memory(data, test_data)
    if source is None:
        values.setdefault("data", {})["source"] = os.fspath(data) if isinstance(data, os.PathLike) else data
    else:
        values.setdefault("data", {})["source"] = "arrays"
    cfg = RunConfig.from_dict(values, in_memory_data=source is not None)
    from tfimgopt._quiet import quiet

    with quiet(not verbose):
        report = run(cfg, log, model=model_obj, data=source)
    return RunReport.from_run(report, report.get("table"))


#: Short names `optimize` takes for the settings a user changes most.
SHORT_SETTINGS = {
    "epochs": "train.epochs", "input_range": "data.input_range", "image_size": "data.image_size",
    "batch_size": "data.batch_size", "max_accuracy_drop": "export.max_accuracy_drop",
    "optimize_for": "export.optimize_for", "target_sparsity": "compress.target_sparsity", "seed": "seed",
    "unsafe": "train.unsafe", "student": "distill.student", "modes": "export.modes", "backend": "export.backend",
    "float_layers": "export.float_layers",
}


def _key(name: str) -> str:
    return SHORT_SETTINGS.get(name, name.replace("__", "."))


def _in_memory(data: Any, test_data: Any) -> Any:
    """Array or dataset data as the mapping `load_dataset` takes, or None for a named source."""
    from tfimgopt.compat import tf
    from tfimgopt.data.sources import _dataset_arrays

    def arrays(value: Any, what: str) -> Any:
        if isinstance(value, tf.data.Dataset):
            return _dataset_arrays(value)
        if isinstance(value, tuple) and len(value) == 2:
            return value
        raise ConfigError(f"{what} must be (images, labels) arrays or a tf.data.Dataset of (image, label). "
                          f"Received: {what} of type {type(value).__name__}")

    if isinstance(data, str | os.PathLike):
        if test_data is not None:
            raise ConfigError("test_data goes with in-memory data; a named source has its own test split. "
                              f"Received: data={data!r}")
        return None
    if isinstance(data, Mapping):
        source = dict(data)
    else:
        source = {"train": arrays(data, "data")}
    if test_data is not None:
        if "test" in source:
            raise ConfigError("Give the test split once: in data's mapping or as test_data. Received: both")
        source["test"] = arrays(test_data, "test_data")
    return source


__all__ = ["RunReport", "SHORT_SETTINGS", "VariantResult", "optimize"]
