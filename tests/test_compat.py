"""The Keras-choice module: Keras 2 from tf_keras, with no process-wide change to what `tf.keras` means."""

import pytest

from tests.helpers import run_python


@pytest.mark.slow
def test_keras2_comes_from_tf_keras_and_tf_keras_keeps_meaning_keras3():
    proc = run_python(
        "import os, subprocess, sys\n"
        "import tfimgopt\n"
        "from tfimgopt.compat import keras, tf\n"
        "import tf_keras\n"
        "assert keras is tf_keras and keras.__version__.startswith('2.'), keras.__version__\n"
        "import tfimgopt.compress  # TFMOT sets TF_USE_LEGACY_KERAS=1 when imported; we take it back\n"
        "assert 'TF_USE_LEGACY_KERAS' not in os.environ, os.environ.get('TF_USE_LEGACY_KERAS')\n"
        "assert tf.keras.__name__ == 'keras._tf_keras.keras', tf.keras.__name__  # Keras 3, as without us\n"
        "child = subprocess.run([sys.executable, '-c', 'import os; print(dict((k, os.environ.get(k)) for k in "
        "(\"TF_USE_LEGACY_KERAS\", \"TF_CPP_MIN_LOG_LEVEL\")))'], capture_output=True, text=True)\n"
        "print('CHILD', child.stdout.strip())\n",
        env={"TF_USE_LEGACY_KERAS": None, "TF_CPP_MIN_LOG_LEVEL": None},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # A child process inherits nothing of ours (no TPU build is installed here, so no TPU_LOAD_LIBRARY).
    assert "CHILD {'TF_USE_LEGACY_KERAS': None, 'TF_CPP_MIN_LOG_LEVEL': None}" in proc.stdout


@pytest.mark.slow
def test_a_project_that_used_tf_keras_as_keras3_first_can_still_prune_and_quantize():
    proc = run_python(
        "import os\n"
        "import keras\n"
        "import tensorflow as tf\n"
        "tf.keras.layers.Dense(2)  # binds tf.keras to Keras 3\n"
        "import numpy as np\n"
        "from tfimgopt.compat import keras as k2\n"
        "from tfimgopt.compress import prune, quantize_aware, strip\n"
        "model = k2.Sequential([k2.Input((8, 8, 1)), k2.layers.Conv2D(4, 3), k2.layers.Flatten(),\n"
        "                       k2.layers.Dense(3)])\n"
        "pruned = strip(prune(model, 0.5, skip=[]).model)\n"
        "qat = quantize_aware(pruned)\n"
        "print('OK', type(qat).__module__.split('.')[0], tf.keras.__name__)\n",
        env={"TF_USE_LEGACY_KERAS": None},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "OK tf_keras keras._tf_keras.keras" in proc.stdout


@pytest.mark.slow
def test_a_project_that_asked_for_keras2_keeps_it():
    proc = run_python(
        "import tensorflow as tf\n"
        "import tfimgopt.compress\n"
        "print('BOUND', tf.keras.__name__)\n",
        env={"TF_USE_LEGACY_KERAS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "BOUND tf_keras" in proc.stdout


@pytest.mark.slow
def test_import_tfimgopt_is_cheap_and_its_public_names_load_on_first_use():
    proc = run_python(
        "import sys, tfimgopt\n"
        "assert 'tensorflow' not in sys.modules\n"
        "missing = [n for n in tfimgopt.__all__ if not hasattr(tfimgopt, n)]\n"
        "assert not missing, missing\n"
        "assert 'tensorflow' in sys.modules and tfimgopt.keras.__name__.startswith('tf_keras')\n"
        "print('OK')\n",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "OK" in proc.stdout


def test_every_error_type_lives_in_errors_and_is_caught_as_a_tfimgopt_error():
    import inspect

    import tfimgopt
    from tfimgopt import errors

    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, Exception)]
    assert {c.__name__ for c in classes} <= set(tfimgopt.__all__)
    assert all(issubclass(c, errors.TfimgoptError) for c in classes)
    for module in ("tfimgopt.compat", "tfimgopt.pipeline.steps", "tfimgopt.compress.quantize",
                   "tfimgopt.distribute.strategy"):  # the old import paths still give the same classes
        mod = __import__(module, fromlist=["_"])
        for name in ("KerasVersionError", "VerificationError", "QuantizationError", "StrategyError"):
            if hasattr(mod, name):
                assert getattr(mod, name) is getattr(errors, name)
    own = [c for _, c in inspect.getmembers(__import__("tfimgopt.pipeline.run", fromlist=["_"]), inspect.isclass)
           if issubclass(c, Exception) and c.__module__.startswith("tfimgopt") and c.__module__ != "tfimgopt.errors"]
    assert not own, own
