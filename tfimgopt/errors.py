"""Error types tfimgopt promises to raise for bad input."""

from __future__ import annotations


class TfimgoptError(Exception):
    """Base class of every error tfimgopt raises on purpose."""


class DataError(TfimgoptError, ValueError):
    """A data source, image or label that cannot be used."""


class ConfigError(TfimgoptError, ValueError):
    """An argument or configuration value outside what is accepted."""


class EnvironmentProblem(TfimgoptError, RuntimeError):
    """Installed packages that cannot work together (found before TensorFlow loads); the message gives the fix."""


def received(name: str, value: object) -> str:
    """Formats the `Received: name=value` suffix every error message ends with."""
    return f"Received: {name}={value!r}"
