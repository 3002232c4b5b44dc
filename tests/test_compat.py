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
