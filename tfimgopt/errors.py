"""Every error type tfimgopt raises on purpose, in one place; each means one thing.

All derive from `TfimgoptError`, which the command line catches and prints as one line.
"""

from __future__ import annotations


class TfimgoptError(Exception):
    """Base class of every error tfimgopt raises on purpose."""


class DataError(TfimgoptError, ValueError):
    """A data source, image or label that cannot be used."""


class ConfigError(TfimgoptError, ValueError):
    """An argument or configuration value outside what is accepted."""


class QuantizationError(ConfigError):
    """A layer that TFMOT's 8-bit scheme cannot quantize (the message names it and what to do)."""


class StrategyError(TfimgoptError, RuntimeError):
    """The requested hardware or cluster is not there."""


class KerasVersionError(TfimgoptError, RuntimeError):
    """Deprecated, never raised: tfimgopt takes Keras 2 from `tf_keras` whatever `tf.keras`
    means in the process, so a Keras 3 `tf.keras` is no longer an error. Kept so that old
    `except KerasVersionError` clauses still import."""


class TrainingError(TfimgoptError, RuntimeError):
    """Training that cannot go on: the loss became NaN or infinite (it diverged)."""


class VerificationError(TfimgoptError):
    """A run folder's artifacts do not match what its report recorded."""


class StorageError(TfimgoptError, OSError):
    """A file or folder that cannot be written: disk full, read-only, no permission, name too long."""


class EnvironmentProblem(TfimgoptError, RuntimeError):
    """Installed packages that cannot work together (found before TensorFlow loads); the message gives the fix."""


def received(name: str, value: object) -> str:
    """Formats the `Received: name=value` suffix every error message ends with."""
    return f"Received: {name}={value!r}"
