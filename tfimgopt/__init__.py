"""tfimgopt: train image classifiers faster and ship them smaller, on TensorFlow/Keras.

Importing tfimgopt first pins Keras 2 (`tf_keras`), which TFMOT needs; see
`tfimgopt.compat`.
"""

from tfimgopt.compat import keras, tf  # noqa: I001  (must run before anything imports TF)
from tfimgopt.augment import create_augmentation, list_augmentations
from tfimgopt.data import DatasetInfo, build_pipeline, list_sources, load_dataset
from tfimgopt.distribute import create_strategy, list_strategies
from tfimgopt.errors import ConfigError, DataError, TfimgoptError
from tfimgopt.models import create_model, list_models, register_model
from tfimgopt.training import train

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "DatasetInfo",
    "TfimgoptError",
    "__version__",
    "build_pipeline",
    "create_augmentation",
    "create_model",
    "create_strategy",
    "list_augmentations",
    "keras",
    "list_models",
    "list_sources",
    "list_strategies",
    "load_dataset",
    "register_model",
    "tf",
    "train",
]
