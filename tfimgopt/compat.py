"""The one place that decides which Keras tfimgopt uses: Keras 2 (`tf_keras`).

TFMOT 0.8 and keras-cv 0.9 (on tf_keras) only work with Keras 2, so every other
module imports `keras` and `tf` from here, never `import keras` or `tf.keras`.
"""

from __future__ import annotations

import os
import warnings

from tfimgopt._platform import LEGACY_KERAS_VALUES, check_before_tensorflow_import
from tfimgopt.errors import KerasVersionError

_ENV_VAR = "TF_USE_LEGACY_KERAS"

_FIX = (
    "Set the environment variable TF_USE_LEGACY_KERAS=1 before TensorFlow is imported "
    "(for example `import os; os.environ['TF_USE_LEGACY_KERAS'] = '1'` in the first cell "
    "of a notebook, then restart the runtime), or import tfimgopt before anything that "
    "imports TensorFlow."
)


def _ensure_legacy_keras() -> None:
    value = os.environ.get(_ENV_VAR)
    if value and value not in LEGACY_KERAS_VALUES:
        raise KerasVersionError(
            f"tfimgopt needs Keras 2 (tf_keras) because tensorflow-model-optimization "
            f"does not support Keras 3, but the environment asks TensorFlow for Keras 3. "
            f"{_FIX} Received: {_ENV_VAR}={value!r}"
        )


_ensure_legacy_keras()
# A too-new libtpu would abort `import tensorflow`, and a TPU build on a host without a TPU
# would make it wait for TPU workers: both are settled here, before TensorFlow loads.
for _finding in check_before_tensorflow_import():
    warnings.warn(f"tfimgopt: {_finding}", stacklevel=2)

import tensorflow as tf  # noqa: E402  (must follow the environment set-up above)
import tf_keras as keras  # noqa: E402


def _check_tf_keras_binding() -> None:
    # tf.keras is resolved lazily on first access; if something touched it before the
    # variable was set, TensorFlow stays bound to Keras 3 for the life of the process.
    bound = getattr(tf.keras, "__name__", "")
    if not bound.startswith("tf_keras"):
        raise KerasVersionError(
            "TensorFlow was imported and `tf.keras` was used with Keras 3 before tfimgopt "
            f"was imported; tfimgopt and TFMOT need Keras 2 (tf_keras). {_FIX} "
            f"Received: tf.keras={bound!r}"
        )


_check_tf_keras_binding()

KERAS_VERSION: str = keras.__version__

__all__ = ["KERAS_VERSION", "KerasVersionError", "keras", "tf"]

