"""Every workaround for a third-party package's behaviour, in one place, each with the
versions it was verified on and a probe that says whether upstream still needs it
(`tests/test_upstream.py` fails the day a probe says it is fixed, so the workaround goes).

- TFMOT 0.8 sets `TF_USE_LEGACY_KERAS=1` for the whole process when imported (and for every
  child process after), which silently turns a Keras 3 project's `tf.keras` into Keras 2.
  `import_tfmot` settles `tf.keras` under the project's own setting first and restores the
  variable after.
- tf_keras keeps the counters behind automatic layer names ("conv2d", "conv2d_1") in a
  private map; TFMOT's SeparableConv2D quantization creates auto-named layers that collide
  with names already in a converted model. `name_counters` reaches that map (no public
  accessor exists) and returns an empty one where a future tf_keras moved it, so the caller
  degrades to TFMOT's own naming instead of crashing.
"""

from __future__ import annotations

import os
from typing import Any

#: Workaround -> (package, versions it was verified on).
VERIFIED = {
    "tfmot_legacy_keras_variable": ("tensorflow-model-optimization", ("0.8.0", "0.8.1")),
    "tf_keras_name_counters": ("tf-keras", ("2.20", "2.21")),
}

_LEGACY_VARIABLE = "TF_USE_LEGACY_KERAS"


def import_tfmot() -> Any:
    """`tensorflow_model_optimization`, imported without its process-wide side effect."""
    from tfimgopt.compat import tf

    before = os.environ.get(_LEGACY_VARIABLE)
    _ = tf.keras.__name__  # resolves TensorFlow's lazy `tf.keras` with the project's own setting
    try:
        import tensorflow_model_optimization as tfmot
    finally:
        if before is None:
            os.environ.pop(_LEGACY_VARIABLE, None)
        else:
            os.environ[_LEGACY_VARIABLE] = before
    return tfmot


def name_counters() -> dict:
    """tf_keras's counters behind automatic layer names, keyed `(namespace, prefix)` (a
    `defaultdict(int)`), or an empty dict where tf_keras no longer has them."""
    import collections

    from tfimgopt.compat import keras_backend_internals

    try:
        return keras_backend_internals().get_default_graph_uid_map()
    except (ImportError, AttributeError):
        return collections.defaultdict(int)


def tfmot_still_sets_legacy_keras() -> bool:
    """Probe (in a fresh interpreter): does importing TFMOT still set `TF_USE_LEGACY_KERAS`?"""
    import subprocess
    import sys

    code = ("import os; os.environ.pop('TF_USE_LEGACY_KERAS', None); import tensorflow_model_optimization; "
            "print(os.environ.get('TF_USE_LEGACY_KERAS'))")
    env = {k: v for k, v in os.environ.items() if k != _LEGACY_VARIABLE}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    return child.stdout.strip().splitlines()[-1:] == ["1"]


def tf_keras_name_counters_reachable() -> bool:
    """Probe: the private map `name_counters` reads is still where it reads it."""
    from tfimgopt.compat import keras_backend_internals

    try:
        return isinstance(keras_backend_internals().get_default_graph_uid_map(), dict)
    except (ImportError, AttributeError):
        return False


def installed(package: str) -> str | None:
    """The installed version of `package`, or None."""
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
