"""The one place that decides which Keras tfimgopt uses: Keras 2 (`tf_keras`).

TFMOT 0.8 only works with Keras 2, so every other module imports `keras` and `tf` from
here, never `import keras` or `tf.keras`. Keras 2 comes from the `tf_keras` package
directly, so `tf.keras` keeps meaning whatever the project chose (Keras 3 by default in
TensorFlow 2.20+, or Keras 2 with `TF_USE_LEGACY_KERAS=1`); Keras 3 models meet tfimgopt
through `tfimgopt.keras3` (`from_keras3` / `to_keras3`).
"""

from __future__ import annotations

import warnings

from tfimgopt import _platform

# A too-new libtpu would abort `import tensorflow`, and a TPU build on a host without a TPU
# would make it wait for TPU workers: both are settled here, before TensorFlow loads.
for _finding in _platform.check_before_tensorflow_import():
    warnings.warn(f"tfimgopt: {_finding}", stacklevel=2)

import tensorflow as tf  # noqa: E402  (must follow the environment checks above)
import tf_keras as keras  # noqa: E402

_platform.restore_environment()

KERAS_VERSION: str = keras.__version__


def is_keras3(obj: object) -> bool:
    """True for a Keras 3 object (model, layer, tensor), subclasses included: a class in its
    MRO lives in the `keras` package (tf_keras's live in `tf_keras`)."""
    return any((c.__module__ or "") == "keras" or (c.__module__ or "").startswith("keras.")
               for c in type(obj).__mro__)


def keras_backend_internals():
    """tf_keras's private backend module, for the workarounds in `tfimgopt._upstream` only
    (this module owns every import of tf_keras)."""
    from tf_keras.src import backend

    return backend


__all__ = ["KERAS_VERSION", "is_keras3", "keras", "keras_backend_internals", "tf"]
