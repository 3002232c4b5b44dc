"""Typed, validated run configuration: defaults -> config file -> command-line overrides."""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import typing
from typing import Any

from tfimgopt.errors import ConfigError, received


@dataclasses.dataclass
class DataConfig:
    """Where the images come from and how they are batched."""

    source: str = "digits"
    image_size: int = 32
    channels: int | None = None
    batch_size: int = 64
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    data_dir: str | None = None
    try_gcs: bool = False
    download: bool = False

    def validate(self) -> None:
        _check(self.image_size >= 8, "data.image_size", self.image_size, "an int >= 8")
        _check(self.channels in (None, 1, 3), "data.channels", self.channels, "1, 3 or null")
        _check(self.batch_size >= 1, "data.batch_size", self.batch_size, "an int >= 1")
        _check(0 <= self.val_fraction < 1, "data.val_fraction", self.val_fraction, "[0, 1)")
        _check(0 <= self.test_fraction < 1, "data.test_fraction", self.test_fraction, "[0, 1)")
        _check(bool(self.source), "data.source", self.source, "a non-empty source name")


@dataclasses.dataclass
class TrainConfig:
    """The baseline (teacher) model and how it is trained."""

    model: str = "small_cnn"
    epochs: int = 10
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    jit_compile: bool = False

    def validate(self) -> None:
        from tfimgopt.models import list_models

        _check(self.model in list_models(), "train.model", self.model, f"one of {list_models()}")
        _check(self.epochs >= 1, "train.epochs", self.epochs, "an int >= 1")
        optimizers = ("adam", "adamw", "sgd", "rmsprop")
        _check(self.optimizer in optimizers, "train.optimizer", self.optimizer, f"one of {optimizers}")
        _check(self.learning_rate > 0, "train.learning_rate", self.learning_rate, "a float > 0")


@dataclasses.dataclass
class RunConfig:
    """Everything `tfimgopt run` does, in one validated object."""

    out_dir: str = "runs/digits"
    seed: int = 0
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def validate(self) -> RunConfig:
        """Checks every value; returns self so calls chain.

        Raises:
            ConfigError: naming the key, the accepted values and the value received.
        """
        _check(bool(self.out_dir), "out_dir", self.out_dir, "a folder path")
        self.data.validate()
        self.train.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Builds a config from nested dicts; unknown keys and wrong types are errors."""
        return _build(cls, values, prefix="").validate()


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
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"Unknown key {prefix}{unknown[0]}. Valid keys here: {sorted(fields)}. "
            f"Received: {prefix}{unknown[0]}={values[unknown[0]]!r}"
        )
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(f"{prefix}{name}", value, hint)
    return cls(**kwargs)


def load_config(path: str | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Loads defaults, then a YAML/TOML/JSON file, then `key=value` overrides.

    Args:
        path: A `.yaml`/`.yml`, `.toml` or `.json` file, or None for defaults.
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
    if path is not None:
        if not os.path.isfile(path):
            raise ConfigError(f"Config file not found. {received('config', path)}")
        ext = os.path.splitext(path)[1].lower()
        with open(path, "rb") as f:
            raw = f.read()
        try:
            if ext in (".yaml", ".yml"):
                values = yaml.safe_load(raw) or {}
            elif ext == ".toml":
                values = tomllib.loads(raw.decode("utf-8"))
            elif ext == ".json":
                values = json.loads(raw)
            else:
                raise ConfigError(
                    f"Config files must end in .yaml, .yml, .toml or .json. {received('config', path)}"
                )
        except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"Cannot parse config file {path}: {err}") from None
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"Overrides look like key=value, e.g. train.epochs=3. {received('override', item)}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        node = values
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{part} is a value, not a table. {received('override', item)}")
        node[leaf] = value
    return RunConfig.from_dict(values)
