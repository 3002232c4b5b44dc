"""tfimgopt: train image classifiers faster and ship them smaller, on TensorFlow/Keras.

Importing tfimgopt is cheap and does not import TensorFlow: it asks TensorFlow for Keras 2
(`tf_keras`, which TFMOT needs) and settles TPU-library loading before TensorFlow loads
(see `tfimgopt.compat`). The names below load their modules on first use.
"""

from __future__ import annotations

from tfimgopt import _platform
from tfimgopt._lazy import lazy_attributes
from tfimgopt.errors import (
    ConfigError,
    DataError,
    EnvironmentProblem,
    KerasVersionError,
    QuantizationError,
    StorageError,
    StrategyError,
    TfimgoptError,
    TrainingError,
    VerificationError,
)

_platform.prepare_environment()

__version__ = "0.1.0"

# Public name -> the module that defines it, imported on first access (PEP 562).
_LAZY = {
    "keras": "tfimgopt.compat",
    "tf": "tfimgopt.compat",
    "create_augmentation": "tfimgopt.augment",
    "list_augmentations": "tfimgopt.augment",
    "DatasetInfo": "tfimgopt.data",
    "build_pipeline": "tfimgopt.data",
    "list_sources": "tfimgopt.data",
    "load_dataset": "tfimgopt.data",
    "create_strategy": "tfimgopt.distribute",
    "list_strategies": "tfimgopt.distribute",
    "create_model": "tfimgopt.models",
    "list_models": "tfimgopt.models",
    "register_model": "tfimgopt.models",
    "train": "tfimgopt.training",
    "doctor": "tfimgopt.doctor",
    "load_plugin": "tfimgopt._plugins",
    "load_model": "tfimgopt.models",
    "optimize": "tfimgopt.pipeline.optimize",
    "RunReport": "tfimgopt.pipeline.optimize",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())


__all__ = [
    "ConfigError",
    "DataError",
    "DatasetInfo",
    "EnvironmentProblem",
    "KerasVersionError",
    "QuantizationError",
    "RunReport",
    "StorageError",
    "StrategyError",
    "TfimgoptError",
    "TrainingError",
    "VerificationError",
    "__version__",
    "build_pipeline",
    "create_augmentation",
    "create_model",
    "create_strategy",
    "doctor",
    "keras",
    "list_augmentations",
    "list_models",
    "list_sources",
    "list_strategies",
    "load_dataset",
    "load_model",
    "load_plugin",
    "optimize",
    "register_model",
    "tf",
    "train",
]
