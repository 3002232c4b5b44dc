"""The Keras-choice module: Keras 2 is pinned, and a Keras 3 binding fails clearly."""

from tests.helpers import run_python


def test_import_pins_tf_keras_in_fresh_process():
    proc = run_python(
        "import os\n"
        "import tfimgopt\n"
        "from tfimgopt.compat import keras, tf\n"
        "import tf_keras\n"
        "assert os.environ['TF_USE_LEGACY_KERAS'] == '1'\n"
        "assert keras is tf_keras\n"
        "assert tf.keras.__name__.startswith('tf_keras'), tf.keras.__name__\n"
        "assert keras.__version__.startswith('2.'), keras.__version__\n"
        "print('OK')\n",
        env={"TF_USE_LEGACY_KERAS": ""},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "OK" in proc.stdout


def test_tensorflow_already_bound_to_keras3_fails_with_fix():
    proc = run_python(
        "import os\n"
        "os.environ.pop('TF_USE_LEGACY_KERAS', None)\n"
        "import tensorflow as tf\n"
        "tf.keras.layers.Dense  # binds tf.keras to Keras 3\n"
        "from tfimgopt.compat import KerasVersionError\n",
    )
    assert proc.returncode != 0
    assert "KerasVersionError" in proc.stderr
    assert "TF_USE_LEGACY_KERAS=1" in proc.stderr
    assert "Received: tf.keras='keras._tf_keras.keras'" in proc.stderr


def test_environment_asking_for_keras3_fails():
    proc = run_python("import tfimgopt\nfrom tfimgopt.compat import keras\n", env={"TF_USE_LEGACY_KERAS": "0"})
    assert proc.returncode != 0
    assert "Received: TF_USE_LEGACY_KERAS='0'" in proc.stderr


def test_tensorflow_imported_first_but_keras_untouched_is_fine():
    proc = run_python(
        "import os\n"
        "os.environ.pop('TF_USE_LEGACY_KERAS', None)\n"
        "import tensorflow as tf\n"
        "import tfimgopt\n"
        "assert tf.keras.__name__.startswith('tf_keras')\n"
        "print('OK')\n",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


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
