"""Typed, validated run configuration: defaults -> config file -> command-line overrides."""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import typing
from typing import Any

from tfimgopt.errors import ConfigError, received

#: The commands that take the data flags (every command that loads the data).
DATA_COMMANDS = ("run", "train", "distill", "prune", "quantize", "export", "evaluate")


def setting(default: Any = dataclasses.MISSING, *, help: str, flags: dict[str, str] | None = None,  # noqa: A002
            choices: str | None = None, factory: Any = dataclasses.MISSING,
            bools: tuple[str, str] | None = None) -> Any:
    """A config field with what the CLI and the docs need to know about it.

    Args:
        default: The default value (or `factory` for lists and dicts).
        help: One line for `--help` and the docs; the default is appended by the CLI.
        flags: `{command: flag name}` for the commands that take it as a flag, e.g.
            `{"run": "epochs", "train": "epochs"}` gives `tfimgopt run --epochs`.
            Every setting is also reachable as `--set section.key=value`.
        choices: The name of a lister in `CHOICES` whose names are the accepted values.
        bools: For a word setting: the words (false, true) that YAML booleans stand for
            (YAML reads an unquoted `on`, `off`, `yes`, `no` as a boolean).
    """
    metadata = {"help": help, "flags": dict(flags or {}), "choices": choices, "bools": bools}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _on(commands: tuple[str, ...], flag: str) -> dict[str, str]:
    return dict.fromkeys(commands, flag)


def _augmentation_names() -> list[str]:
    from tfimgopt.augment import list_augmentations

    names = list_augmentations()
    return ["auto", *names["policies"], *[n for n in names["layers"] if n not in names["policies"]]]


def _lister(module: str, name: str):
    def names() -> list[str]:
        import importlib

        return list(getattr(importlib.import_module(module), name)())

    return names


#: Where the accepted values of a setting come from: the registries, read when needed
#: (so `tfimgopt --help` does not import TensorFlow). The CLI lists (and checks) at parse time
#: only those in `CHEAP_CHOICES`, which need no TensorFlow; config validation checks the others
#: and names them on a wrong value.
CHOICES = {
    "models": _lister("tfimgopt.models", "list_models"),
    "exporters": _lister("tfimgopt.export", "list_exporters"),
    "strategies": _lister("tfimgopt.distribute._names", "list_strategies"),
    "augmentations": _augmentation_names,
    "optimize_for": lambda: ["size", "latency", "accuracy"],
}
CHEAP_CHOICES = ("strategies", "optimize_for")


@dataclasses.dataclass
class DataConfig:
    """Where the images come from and how they are batched."""

    source: str = setting("digits", help="digits | tfds:<name> | a folder of class subfolders | a .npz file of "
                                         "arrays (images/labels or x_train/y_train[/x_test/y_test]) | a shard "
                                         "folder (tfimgopt data shard; local or gs://)",
                          flags=_on(DATA_COMMANDS, "source"))
    image_size: int | None = setting(None, help="square image size in pixels; null: your model file's input size, "
                                                "else 32", flags=_on(DATA_COMMANDS, "image-size"))
    input_range: str = setting("auto", help="pixel range your model was trained on: 0-255, 0-1 or -1-1; auto: "
                                            "0-255 for zoo models, measured on a sample for yours (a Rescaling layer "
                                            "then feeds it that range)", flags=_on(DATA_COMMANDS, "input-range"))
    channels: int | None = setting(None, help="1 or 3; null keeps the source's own count")
    batch_size: int = setting(64, help="global batch size", flags=_on(DATA_COMMANDS, "batch-size"))
    val_fraction: float = setting(0.1, help="share of the training data held out for validation")
    test_fraction: float = setting(0.2, help="share held out for testing where the source has no test split")
    data_dir: str | None = setting(None, help="TFDS data directory (e.g. gs://bucket/tfds)",
                                   flags=_on(DATA_COMMANDS, "data-dir"))
    try_gcs: bool = setting(False, help="let TFDS read prepared data from Google's public bucket")
    download: bool = setting(False, help="let TFDS download the dataset (needs network access)",
                             flags=_on(DATA_COMMANDS, "download"))
    unlabelled_fraction: float = setting(
        0.0, help="drop the labels of this share of the training split (an experiment: distillation then uses "
                  "those images as an unlabelled transfer set)", flags=_on(("run", "distill"), "unlabelled-fraction"))
    unlabelled_folder: str | None = setting(
        None, help="a folder of extra images without labels (any layout) for the transfer set",
        flags=_on(("run", "distill"), "unlabelled-folder"))

    def validate(self, in_memory: bool = False) -> None:
        """Checks every value; `in_memory`: the data comes as a Python object (`tfimgopt.optimize`),
        and `source` only names it."""
        _check(0 <= self.unlabelled_fraction < 1, "data.unlabelled_fraction", self.unlabelled_fraction, "[0, 1)")
        if self.unlabelled_folder is not None:
            _check(os.path.isdir(self.unlabelled_folder), "data.unlabelled_folder", self.unlabelled_folder,
                   "an existing folder of images")
        if not in_memory:
            from tfimgopt.data import find_source

            kind = find_source(self.source)
            _check(kind is not None and kind.name not in IN_MEMORY_SOURCES, "data.source", self.source,
                   "'digits', 'tfds:<name>', an existing folder of class subfolders, a shard folder or an existing "
                   ".npz file "
                   "(arrays and tf.data.Dataset objects go to tfimgopt.optimize(model, data))")
        from tfimgopt.data.sources import MAX_IMAGE_SIZE

        _check(self.image_size is None or 8 <= self.image_size <= MAX_IMAGE_SIZE, "data.image_size", self.image_size,
               f"an int in [8, {MAX_IMAGE_SIZE}], or null (your model's input size, else 32)")
        _check(self.input_range in INPUT_RANGES, "data.input_range", self.input_range, f"one of {INPUT_RANGES}")
        _check(self.channels in (None, 1, 3), "data.channels", self.channels, "1, 3 or null")
        _check(self.batch_size >= 1, "data.batch_size", self.batch_size, "an int >= 1")
        _check(0 <= self.val_fraction < 1, "data.val_fraction", self.val_fraction, "[0, 1)")
        _check(0 <= self.test_fraction < 1, "data.test_fraction", self.test_fraction, "[0, 1)")
        _check(bool(self.source), "data.source", self.source, "a non-empty source name")


#: Data sources that only exist as Python objects (config files and the CLI name files instead).
IN_MEMORY_SOURCES = ("arrays", "dataset")
#: What `data.input_range` accepts; the pixel range each names is `tfimgopt.pipeline.adopt.RANGES`.
INPUT_RANGES = ("auto", "0-255", "0-1", "-1-1")
#: The image size of a run whose `data.image_size` is null and whose model has no fixed size.
DEFAULT_IMAGE_SIZE = 32
#: Training epochs of a zoo baseline when `train.epochs` is null (a model file: 0, used as it is).
DEFAULT_EPOCHS = 20
#: `compress.target_sparsity` when null: pruning a distilled student or zoo baseline, or the user's own model.
DEFAULT_SPARSITY = 0.5
ADOPTED_SPARSITY = 0.8
#: The student `distill.student: auto` means under a zoo teacher.
DEFAULT_STUDENT = "compact_cnn"
#: File names (or folders) `train.model` and `distill.student` take as the user's own model.
MODEL_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")
#: The exporter of the run's reference variant: accuracies and ratios are measured against
#: the baseline's export in this mode.
REFERENCE_MODE = "float32"


def is_model_file(value: Any) -> bool:
    """Whether a `train.model` / `distill.student` value names a model file (or SavedModel folder)
    rather than a zoo model: it ends in .keras/.h5/.hdf5, or it is an existing file or folder."""
    if not isinstance(value, str) or not value:
        return False
    return value.endswith(MODEL_FILE_SUFFIXES) or os.path.exists(value)


def _check_model(key: str, value: str, models: list[str]) -> None:
    """A zoo name or an existing model file; an unknown name lists the zoo with close names."""
    if value in models:
        return
    if is_model_file(value):
        _check(os.path.exists(value), key, value, "an existing model file (.keras; .h5 or a SavedModel folder with "
                                                  "--unsafe)")
        return
    import difflib

    close = difflib.get_close_matches(value, models, n=3)
    hint = f" (did you mean: {', '.join(close)})" if close else ""
    _check(False, key, value, f"a zoo model ({', '.join(models)}) or your model file (.keras){hint}")


FINE_TUNE_CHOICES = ("auto", "on", "off")


@dataclasses.dataclass
class FineTuneConfig:
    """Two-phase fine-tuning of a pretrained `train.model` (`tfimgopt.training.fine_tune`):
    `train.epochs` train the head with the backbone frozen, then these epochs train the top
    layers too, at a lower learning rate."""

    enabled: str = setting("auto", help="on, off, or auto (on when train.weights is set)", bools=("off", "on"))
    epochs: int = setting(5, help="epochs of phase 2 (the top layers unfrozen)",
                          flags=_on(("run", "train"), "fine-tune-epochs"))
    unfreeze: int = setting(20, help="layers with weights below the head trained in phase 2 (BatchNorm stays "
                                     "frozen)")
    learning_rate: float = setting(1e-4, help="starting learning rate of phase 2 (10-100x below train.learning_rate)")
    schedule: str = setting("cosine", help="phase 2's learning rate: cosine (decays to 0) or constant")
    head: list[str] = setting(help="layers trained in phase 1 (the zoo's classifier is 'classifier')",
                              factory=lambda: ["classifier"])

    def active(self, weights: str | None) -> bool:
        """Whether the baseline trains in two phases (pretrained weights, or `enabled: on`)."""
        return self.enabled == "on" or (self.enabled == "auto" and weights is not None)

    def validate(self, weights: str | None, model_file: bool = False) -> None:
        from tfimgopt.training.fine_tune import SCHEDULES

        _check(self.enabled in FINE_TUNE_CHOICES, "train.fine_tune.enabled", self.enabled,
               f"one of {FINE_TUNE_CHOICES}")
        _check(self.enabled != "on" or weights is not None or model_file, "train.fine_tune.enabled", self.enabled,
               "'auto' or 'off' without pretrained weights (fine-tuning needs train.weights: 'imagenet' or a "
               "weights file, or train.model: your model file)")
        _check(self.epochs >= 0, "train.fine_tune.epochs", self.epochs, "an int >= 0")
        _check(self.unfreeze >= 0, "train.fine_tune.unfreeze", self.unfreeze, "an int >= 0")
        _check_rate("train.fine_tune.learning_rate", self.learning_rate)
        _check(self.schedule in SCHEDULES, "train.fine_tune.schedule", self.schedule, f"one of {SCHEDULES}")
        _check(bool(self.head) and all(isinstance(n, str) and n for n in self.head), "train.fine_tune.head",
               self.head, "a non-empty list of layer names")


@dataclasses.dataclass
class TrainConfig:
    """The baseline (teacher) model and how it is trained."""

    model: str = setting("small_cnn", help="a zoo model (list_models()) or your trained model file (.keras from "
                                           "tf_keras or Keras 3; .h5 or a SavedModel folder only with train.unsafe), "
                                           "which the run then adopts as its baseline",
                         flags=_on(("run", "train"), "model"))
    unsafe: bool = setting(False, help="DANGEROUS: load train.model / distill.student files with Keras safe mode "
                                       "off (.h5, SavedModel, Lambda layers): stored code can run arbitrary Python; "
                                       "only for files you made or trust", flags={"run": "unsafe"})
    model_options: dict | None = setting(None, help='keyword arguments of the model builder, e.g. {"width": 16}')
    weights: str | None = setting(None, help="pretrained weights: null (random), imagenet (MobileNets, "
                                             "EfficientNetB0; downloads once) or a weights file; the baseline is "
                                             "then fine-tuned (train.fine_tune)",
                                  flags=_on(("run", "train"), "weights"))
    fine_tune: FineTuneConfig = dataclasses.field(default_factory=FineTuneConfig)
    epochs: int | None = setting(None, help="training epochs of the baseline (with fine-tuning: of the head, "
                                            f"phase 1); null: {DEFAULT_EPOCHS} for a zoo model, 0 for your model "
                                            "file (measured as it is; > 0 fine-tunes it)",
                                 flags=_on(("run", "train"), "epochs"))
    optimizer: str = setting("adam", help="adam | adamw | sgd | rmsprop")
    learning_rate: float = setting(1e-3, help="learning rate of the baseline",
                                   flags=_on(("run", "train"), "learning-rate"))
    jit_compile: bool = setting(False, help="compile training steps with XLA")
    strategy: str = setting("auto", help="distribution strategy (tfimgopt.distribute.create_strategy)",
                            flags=_on(("run", "train"), "strategy"), choices="strategies")
    precision: str = setting("auto", help="Keras precision policy; auto follows the device (bfloat16 TPU, "
                                          "float16 GPU, float32 CPU)")
    augment: str = setting("auto", help="augmentation policy or layer; auto = the digits policy for digits, "
                                        "none for your own model file, default otherwise; none = off",
                           flags=_on(("run", "train"), "augment"), choices="augmentations")
    augment_spec: list | None = setting(None, help="a declarative list of augmentation ops; replaces augment")
    augment_placement: str = setting("auto", help="where augmentation runs: auto, data (tf.data) or model")

    @property
    def adopts_file(self) -> bool:
        """Whether the baseline is the user's model file (adopted) rather than a zoo model."""
        return is_model_file(self.model)

    @property
    def epochs_to_train(self) -> int:
        """`epochs`, or its default: 20 for a zoo model, 0 (as it is) for a model file."""
        if self.epochs is not None:
            return self.epochs
        return 0 if self.adopts_file else DEFAULT_EPOCHS

    def validate(self) -> None:
        from tfimgopt.augment import PLACEMENTS
        from tfimgopt.distribute import PRECISIONS, STRATEGIES
        from tfimgopt.models import list_models
        from tfimgopt.models.zoo import IMAGENET_MODELS

        _check_model("train.model", self.model, list_models())
        _check(self.weights is None or self.model in list_models(), "train.weights", self.weights,
               "null when train.model is your model file (its weights are the file's)")
        _check(self.model_options is None or self.model in list_models(), "train.model_options", self.model_options,
               "null when train.model is your model file")
        _check(self.weights != "imagenet" or self.model in IMAGENET_MODELS, "train.weights", self.weights,
               f"'imagenet' only with a model that has ImageNet weights ({', '.join(IMAGENET_MODELS)}), or a "
               "weights file")
        _check(self.model_options is None or isinstance(self.model_options, dict), "train.model_options",
               self.model_options, "a table of builder arguments")
        _check(self.weights is None or self.weights == "imagenet" or os.path.isfile(self.weights), "train.weights",
               self.weights, "null, 'imagenet' or the path of a weights file that exists")
        _check("weights" not in (self.model_options or {}), "train.model_options", self.model_options,
               "builder arguments without 'weights' (set train.weights)")
        self.fine_tune.validate(self.weights, model_file=self.model not in list_models())
        if self.model in list_models():
            _check(self.epochs is None or self.epochs >= 1, "train.epochs", self.epochs,
                   "an int >= 1 for a zoo model, or null")
        else:
            _check(self.epochs is None or self.epochs >= 0, "train.epochs", self.epochs,
                   "an int >= 0 (0: your model as it is), or null")
        from tfimgopt.training.fit import OPTIMIZERS

        _check(self.optimizer in OPTIMIZERS, "train.optimizer", self.optimizer, f"one of {OPTIMIZERS}")
        _check_rate("train.learning_rate", self.learning_rate)
        _check(self.strategy in STRATEGIES, "train.strategy", self.strategy, f"one of {STRATEGIES}")
        _check(self.precision in PRECISIONS, "train.precision", self.precision, f"one of {PRECISIONS}")
        names = CHOICES["augmentations"]()
        _check(self.augment in names, "train.augment", self.augment, f"one of {names}")
        _check(self.augment_placement in PLACEMENTS, "train.augment_placement", self.augment_placement,
               f"one of {PLACEMENTS}")
        if self.augment_spec is not None:
            from tfimgopt.augment import create_augmentation

            create_augmentation(self.augment_spec)  # raises ConfigError naming the bad op


@dataclasses.dataclass
class DistillConfig:
    """The distilled student."""

    enabled: bool = setting(True, help="distil the baseline into a smaller student")
    student: str = setting("auto", help="student: a zoo model, a model file (its architecture and weights are the "
                                        "start), or auto: compact_cnn (student_options) under a zoo teacher; under "
                                        "your own model the largest zoo candidate with at most 1/8 of its parameters "
                                        "(distillation is skipped, saying why, when none is that small)",
                           flags=_on(("run", "distill"), "student"))
    student_options: dict | None = setting(help='keyword arguments of the student builder (compact_cnn, tiny_cnn: '
                                                '{"filters": N})', factory=lambda: {"filters": 16})
    epochs: int = setting(40, help="distillation epochs", flags={"distill": "epochs"})
    alpha: float = setting(0.9, help="weight of the hard-label loss in [0, 1]", flags={"distill": "alpha"})
    temperature: float = setting(4.0, help="softening temperature > 0", flags={"distill": "temperature"})
    losses: list[dict] = setting(help='distillation terms and weights: [{"type": "logits"}] (KL at the temperature), '
                                      'or add {"type": "feature", "teacher_layer_name": ..., "student_layer_name": '
                                      '..., "loss": "mse", "weight": 0.5}', factory=lambda: [{"type": "logits"}])
    learning_rate: float = setting(3e-3, help="learning rate of the student")
    tune: bool = setting(False, help="choose alpha and temperature by validation accuracy",
                         flags={"distill": "tune"})
    tune_alphas: list[float] = setting(help="alphas tried when tuning", factory=lambda: [0.0, 0.5])
    tune_temperatures: list[float] = setting(help="temperatures tried when tuning", factory=lambda: [1.0, 2.0, 4.0])
    tune_method: str = setting("halving", help="grid | halving")
    allow_larger_student: bool = setting(False, help="distil into a student at least as large as the teacher "
                                                     "(refused otherwise)")

    def validate(self) -> None:
        from tfimgopt.distill import METHODS
        from tfimgopt.models import list_models

        if self.student != "auto":
            _check_model("distill.student", self.student, list_models())
        _check(self.student_options is None or isinstance(self.student_options, dict), "distill.student_options",
               self.student_options, "a table of builder arguments")
        _check(self.epochs >= 1, "distill.epochs", self.epochs, "an int >= 1")
        _check(0 <= self.alpha <= 1, "distill.alpha", self.alpha, "a number in [0, 1]")
        _check(0 < self.temperature < float("inf"), "distill.temperature", self.temperature, "a number > 0")
        _check_rate("distill.learning_rate", self.learning_rate)
        _check(bool(self.tune_alphas) and all(0 <= a <= 1 for a in self.tune_alphas), "distill.tune_alphas",
               self.tune_alphas, "a non-empty list of numbers in [0, 1]")
        _check(bool(self.tune_temperatures) and all(t > 0 for t in self.tune_temperatures),
               "distill.tune_temperatures", self.tune_temperatures, "a non-empty list of numbers > 0")
        _check(self.tune_method in METHODS, "distill.tune_method", self.tune_method, f"one of {METHODS}")
        from tfimgopt.distill.losses import losses_from_config

        losses_from_config(self.losses, self.temperature)  # raises, naming the bad entry


@dataclasses.dataclass
class CompressConfig:
    """Pruning, optional weight clustering, and sparsity-/cluster-preserving QAT of the deployed model."""

    enabled: bool = setting(True, help="prune (and quantization-aware fine-tune) the deployed model")
    target_sparsity: float | None = setting(
        None, help=f"target fraction of zero weights; null: {ADOPTED_SPARSITY} when pruning your own model (TFMOT's "
                   f"tutorial value), {DEFAULT_SPARSITY} for a distilled student or zoo baseline",
        flags={"run": "sparsity", "prune": "sparsity"})
    epochs: int = setting(4, help="pruning fine-tuning epochs", flags={"prune": "epochs"})
    learning_rate: float = setting(1e-3, help="pruning fine-tuning learning rate")
    skip: list[str] | None = setting(None, help="layer names to leave dense; null = first conv and classifier "
                                                "(every layer when that would leave nothing to prune)")
    qat_epochs: int = setting(1, help="quantization-aware fine-tuning epochs after pruning (0 skips QAT)",
                              flags={"quantize": "epochs"})
    qat_learning_rate: float = setting(1e-4, help="quantization-aware fine-tuning learning rate")
    clusters: int = setting(0, help="weight clustering after pruning: distinct values per kernel (0: off); QAT "
                                    "then preserves zeros and clusters (PCQAT)", flags={"run": "clusters"})
    cluster_epochs: int = setting(2, help="clustering fine-tuning epochs")
    cluster_learning_rate: float = setting(1e-4, help="clustering fine-tuning learning rate")
    channel_ratio: float = setting(0.0, help="structured pruning before magnitude pruning: share of the channels "
                                            "removed (0: off); variants channel_pruned_*",
                                   flags={"run": "channel-ratio", "prune": "channel-ratio"})
    channel_criterion: str = setting("l1", help="channel importance: l1 (filter norm) or bn_gamma")
    channel_scope: str = setting("local", help="local (the ratio in every group) or global (one ranking)")
    channel_steps: int = setting(2, help="structured pruning rounds (each prunes, then fine-tunes)")
    channel_epochs: int = setting(2, help="fine-tuning epochs after each structured pruning round")
    channel_round_to: int = setting(1, help="kept channel counts rounded up to a multiple of this (8 suits "
                                            "vector units)")

    def validate(self) -> None:
        _check(self.target_sparsity is None or 0 < self.target_sparsity < 1, "compress.target_sparsity",
               self.target_sparsity, "a number in (0, 1), or null")
        _check(self.epochs >= 1, "compress.epochs", self.epochs, "an int >= 1")
        _check_rate("compress.learning_rate", self.learning_rate)
        _check(self.qat_epochs >= 0, "compress.qat_epochs", self.qat_epochs, "an int >= 0")
        _check_rate("compress.qat_learning_rate", self.qat_learning_rate)
        _check(self.clusters == 0 or self.clusters >= 2, "compress.clusters", self.clusters, "0 (off) or an int >= 2")
        _check(self.cluster_epochs >= 1, "compress.cluster_epochs", self.cluster_epochs, "an int >= 1")
        _check_rate("compress.cluster_learning_rate", self.cluster_learning_rate)
        from tfimgopt.compress.channels import CRITERIA, SCOPES

        _check(0 <= self.channel_ratio < 1, "compress.channel_ratio", self.channel_ratio, "a number in [0, 1)")
        _check(self.channel_criterion in CRITERIA, "compress.channel_criterion", self.channel_criterion,
               f"one of {CRITERIA}")
        _check(self.channel_scope in SCOPES, "compress.channel_scope", self.channel_scope, f"one of {SCOPES}")
        _check(self.channel_steps >= 1, "compress.channel_steps", self.channel_steps, "an int >= 1")
        _check(self.channel_epochs >= 0, "compress.channel_epochs", self.channel_epochs, "an int >= 0")
        _check(self.channel_round_to >= 1, "compress.channel_round_to", self.channel_round_to, "an int >= 1")


@dataclasses.dataclass
class ExportConfig:
    """Export (TFLite modes by default) and measurement in the LiteRT interpreter."""

    modes: list[str] = setting(help="exporters run for the baseline (list_exporters()); float32 is the reference",
                               factory=lambda: ["float32", "dynamic", "float16", "int8"], choices="exporters")
    num_calibration: int = setting(200, help="calibration images of int8 export")
    latency_runs: int = setting(50, help="timed single-image invokes per variant")
    num_threads: int = setting(1, help="LiteRT interpreter threads (1 mimics a phone core)")
    optimize_for: str = setting("size", help="which measured variant to select",
                                flags={"run": "optimize-for"}, choices="optimize_for")
    max_accuracy_drop: float = setting(1.0, help="largest accepted accuracy loss in percentage points against the "
                                                 "float32 baseline", flags={"run": "max-accuracy-drop"})
    backend: str = setting("converter", help="who quantizes the dynamic/int8/int16x8 modes: converter "
                                             "(TFLiteConverter) or litert (LiteRT Quantizer: pip install "
                                             "litert-quantizer); int4 modes are always LiteRT Quantizer's",
                           flags={"run": "backend", "export": "backend"})
    float_layers: list[str] = setting(help="layer names or shell patterns kept in float in every quantized mode "
                                           "(needs backend litert for dynamic/int8/int16x8; QAT variants ignore it)",
                                      factory=list)
    mixed_candidates: list[str] = setting(help="precisions the `mixed` exporter's per-layer search may give a layer "
                                               "besides float32: float16, int8, int4",
                                          factory=lambda: ["int8", "int4"])
    metadata: str = setting("auto", help="TFLite metadata (label names, input normalization, name, version) that "
                                         "MediaPipe Tasks and the TFLite Task Library read: on (auto is the same) "
                                         "or off",
                            flags={"run": "metadata", "export": "metadata"}, bools=("off", "on"))
    model_name: str = setting("", help="model name in the metadata (default: '<variant or file name> (<dataset>)')")
    model_version: str = setting("1", help="model version in the metadata")
    author: str = setting("", help="author in the metadata")
    license: str = setting("", help="license in the metadata (e.g. Apache-2.0)")

    def validate(self) -> None:
        from tfimgopt.export import list_exporters

        names = list_exporters()
        _check(bool(self.modes) and all(m in names for m in self.modes) and len(set(self.modes)) == len(self.modes),
               "export.modes", self.modes, f"a non-empty list of distinct exporters from {names}")
        _check(REFERENCE_MODE in self.modes, "export.modes", self.modes,
               f"a list that includes {REFERENCE_MODE!r} (the reference)")
        _check(self.backend in BACKENDS, "export.backend", self.backend, f"one of {BACKENDS}")
        _check(all(isinstance(p, str) and p for p in self.float_layers), "export.float_layers", self.float_layers,
               "a list of layer names or shell patterns")
        from tfimgopt.export.mixed_precision import CANDIDATES

        _check(bool(self.mixed_candidates) and set(self.mixed_candidates) <= set(CANDIDATES),
               "export.mixed_candidates", self.mixed_candidates, f"a non-empty list of {sorted(CANDIDATES)}")
        _check(self.num_calibration >= 1, "export.num_calibration", self.num_calibration, "an int >= 1")
        _check(self.latency_runs >= 1, "export.latency_runs", self.latency_runs, "an int >= 1")
        _check(self.num_threads >= 1, "export.num_threads", self.num_threads, "an int >= 1")
        targets = ("size", "latency", "accuracy")
        _check(self.optimize_for in targets, "export.optimize_for", self.optimize_for, f"one of {targets}")
        _check(0 <= self.max_accuracy_drop <= 100, "export.max_accuracy_drop", self.max_accuracy_drop,
               "percentage points in [0, 100]")
        _check(self.metadata in METADATA_CHOICES, "export.metadata", self.metadata, f"one of {METADATA_CHOICES}")
        for key in ("model_name", "model_version", "author", "license"):
            value = getattr(self, key)
            _check(isinstance(value, str) and "\n" not in value, f"export.{key}", value, "a one-line string")


METADATA_CHOICES = ("auto", "on", "off")
#: Who quantizes the converter's modes (`export.backend`).
BACKENDS = ("converter", "litert")


@dataclasses.dataclass
class RunConfig:
    """Everything `tfimgopt run` does, in one validated object."""

    out_dir: str = setting("runs/digits", help="run folder (rerun with the same folder to resume)",
                           flags={"run": "out"})
    seed: int = setting(0, help="seed for splits, shuffling and weights", flags=_on(DATA_COMMANDS, "seed"))
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)
    compress: CompressConfig = dataclasses.field(default_factory=CompressConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)

    def validate(self, in_memory_data: bool = False) -> RunConfig:
        """Checks every value; returns self so calls chain. `in_memory_data`: the data comes as a
        Python object (`tfimgopt.optimize`), so `data.source` only names it.

        Raises:
            ConfigError: naming the key, the accepted values and the value received.
        """
        _check(bool(self.out_dir), "out_dir", self.out_dir, "a folder path")
        _check(0 <= self.seed <= MAX_SEED, "seed", self.seed, f"an int in [0, 2**32 - 1 = {MAX_SEED}]")
        self.data.validate(in_memory_data)
        self.train.validate()
        self.distill.validate()
        self.compress.validate()
        self.export.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], in_memory_data: bool = False) -> RunConfig:
        """Builds a config from nested dicts; unknown keys and wrong types are errors."""
        return _build(cls, values, prefix="").validate(in_memory_data)


_FLOAT = __import__("re").compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
#: The largest seed NumPy and TensorFlow accept.
MAX_SEED = 2**32 - 1


def _check_rate(key: str, value: float) -> None:
    """A learning rate: > 0 and finite (an infinite one passes `> 0` and makes every loss NaN)."""
    import math

    _check(value > 0 and math.isfinite(value), key, value, "a finite float > 0")


def _check(ok: bool, key: str, value: Any, accepted: str) -> None:
    if not ok:
        raise ConfigError(f"Bad value for {key}: expected {accepted}. {received(key, value)}")


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Checks `value` against a field type; allows int for float and None for Optional."""
    args = typing.get_args(annotation)
    if args and type(None) in args:
        if value is None:
            return None
        annotation = next(a for a in args if a is not type(None))
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-3 (no dot) as text; a user means the number
    if typing.get_origin(annotation) is list or annotation is list:
        if not isinstance(value, list):
            raise ConfigError(
                f"Bad type for {key}: expected a list. Received: {key}={value!r} ({type(value).__name__})"
            )
        (item_type,) = typing.get_args(annotation) or (None,)
        if item_type is None:
            return value
        return [_coerce(f"{key}[{i}]", v, item_type) for i, v in enumerate(value)]
    if annotation in (int, float, str, bool):
        if isinstance(value, annotation) and not (annotation is int and isinstance(value, bool)):
            return value
        raise ConfigError(
            f"Bad type for {key}: expected {annotation.__name__}. "
            f"Received: {key}={value!r} ({type(value).__name__})"
        )
    return value


def _build(cls: type, values: Any, prefix: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(
            f"Expected a table of settings for {prefix or 'the config'}. "
            f"Received: {prefix or 'config'}={values!r}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields), key=str)
    if unknown:
        import difflib

        close = difflib.get_close_matches(str(unknown[0]), list(fields), n=3)
        hint = f" Did you mean: {', '.join(prefix + c for c in close)}?" if close else ""
        raise ConfigError(
            f"Unknown key {prefix}{unknown[0]}.{hint} Valid keys here: {sorted(fields)}. "
            f"Received: {prefix}{unknown[0]}={values[unknown[0]]!r}"
        )
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if fields[name].metadata.get("bools") and isinstance(value, bool):
            value = fields[name].metadata["bools"][value]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(f"{prefix}{name}", value, hint)
    return cls(**kwargs)


EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs")


def list_example_configs() -> list[str]:
    """Names of the example configs shipped with tfimgopt (`tfimgopt run NAME`)."""
    return sorted(os.path.splitext(n)[0] for n in os.listdir(EXAMPLES_DIR) if n.endswith(".yaml"))


# Real configs are a few hundred bytes and four levels deep; these bounds stop a small file
# from expanding into gigabytes (YAML aliases: "billion laughs") or recursing without end.
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_DEPTH = 16


def _safe_yaml(text: str, where: str) -> Any:
    """`yaml.safe_load` that refuses aliases and deep nesting before building anything."""
    import yaml

    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise ConfigError(f"YAML aliases (*{event.anchor}) are not accepted in configs: write the value out. "
                              f"Received: config={where!r}")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_CONFIG_DEPTH:
                raise _too_deep(where)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return yaml.safe_load(text)


def _too_deep(where: str) -> ConfigError:
    return ConfigError(f"Config nesting deeper than {MAX_CONFIG_DEPTH} levels. Received: config={where!r}")


def _check_depth(value: Any, where: str) -> None:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > MAX_CONFIG_DEPTH:
                raise _too_deep(where)
            stack += [(child, depth + 1) for child in (node.values() if isinstance(node, dict) else node)]


def load_config(path: str | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Loads defaults, then a YAML/TOML/JSON file, then `key=value` overrides.

    Args:
        path: A `.yaml`/`.yml`, `.toml` or `.json` file, the name of a shipped example
            (`list_example_configs()`: digits, cifar10_tpu, folder), or None for defaults.
        overrides: Dotted assignments such as `["train.epochs=3", "data.source=digits"]`;
            values are parsed as YAML scalars (`3` is an int, `null` is None).

    Returns:
        A validated `RunConfig`.

    Raises:
        ConfigError: missing file, unknown extension, unknown key, wrong type or value.

    Example:
        >>> from tfimgopt.pipeline import load_config
        >>> load_config(overrides=["train.epochs=2"]).train.epochs
        2
    """
    import yaml

    values: dict[str, Any] = {}
    if path is not None and not os.path.isfile(path) and path in list_example_configs():
        path = os.path.join(EXAMPLES_DIR, f"{path}.yaml")
    if path is not None:
        if not os.path.isfile(path):
            raise ConfigError(
                f"Config file not found (shipped examples: {list_example_configs()}). {received('config', path)}"
            )
        ext = os.path.splitext(path)[1].lower()
        size = os.path.getsize(path)
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"Config files are at most {MAX_CONFIG_BYTES:,} bytes; this one has "
                              f"{size:,}. {received('config', path)}")
        with open(path, "rb") as f:
            raw = f.read()
        try:
            if ext in (".yaml", ".yml"):
                values = _safe_yaml(raw.decode("utf-8"), path) or {}
            elif ext == ".toml":
                values = tomllib.loads(raw.decode("utf-8"))
            elif ext == ".json":
                values = json.loads(raw)
            else:
                raise ConfigError(
                    f"Config files must end in .yaml, .yml, .toml or .json. {received('config', path)}"
                )
        except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError,
                RecursionError) as err:
            raise ConfigError(f"Cannot parse config file {path}: {type(err).__name__}: {err}") from None
        _check_depth(values, path)
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"A config file holds a table of settings (data:, train:, ...) at its top level; this "
                              f"one holds a {type(values).__name__}. Received: config={path!r}")
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"Overrides look like key=value, e.g. train.epochs=3. {received('override', item)}")
        try:
            value = _safe_yaml(text, item)
        except (yaml.YAMLError, RecursionError, ConfigError):
            value = text  # not YAML we accept: the literal string (validation then names the key)
        _check_depth(value, item)
        node = values
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{part} is a value, not a table. {received('override', item)}")
        node[leaf] = value
    return RunConfig.from_dict(values)
