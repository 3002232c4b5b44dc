"""Imports TFMOT without its process-wide side effect.

TFMOT 0.8 sets `TF_USE_LEGACY_KERAS=1` for the whole process when imported, and then reads
`tf.keras` to choose its Keras: if nothing had touched `tf.keras` yet, that binds it to
Keras 2 for the life of the process and for every child process, and a Keras 3 project's
own `tf.keras` code silently changes meaning. Here `tf.keras` is settled first under the
project's own setting and the variable is restored afterwards; TFMOT then takes Keras 2
from `tf_keras` by itself.
"""

from __future__ import annotations

import os

from tfimgopt.compat import tf

_VAR = "TF_USE_LEGACY_KERAS"
_before = os.environ.get(_VAR)
_ = tf.keras.__name__  # resolves TensorFlow's lazy `tf.keras` with the project's own setting
try:
    import tensorflow_model_optimization as tfmot
finally:
    if _before is None:
        os.environ.pop(_VAR, None)
    else:
        os.environ[_VAR] = _before

__all__ = ["tfmot"]
