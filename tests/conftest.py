"""Test set-up: quiet logs, the default Keras (3) for `tf.keras`, and two logical CPUs for distribution tests.

Logical devices must be configured before TensorFlow initializes its runtime, so this
happens here, once, at import time of the test session.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# No TF_USE_LEGACY_KERAS: the suite runs as a Keras 3 project would, with `tf.keras` meaning
# Keras 3 (TensorFlow 2.20+'s default); tfimgopt takes Keras 2 from tf_keras itself.
os.environ.pop("TF_USE_LEGACY_KERAS", None)
# The notebooks and subprocess tests read this to pick their smallest sizes.
os.environ.setdefault("TFIMGOPT_SMOKE", "1")

import pytest  # noqa: E402

from tfimgopt.compat import tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)


@pytest.fixture(scope="session")
def digits16():
    """The digits at 16x16, loaded once per session."""
    from tfimgopt.data import load_dataset

    return load_dataset("digits", image_size=16)


@pytest.fixture(scope="session")
def trained_cnn(digits16):
    """A narrow small_cnn trained for a few epochs on 16x16 digits, and its test split."""
    from tfimgopt.compat import keras
    from tfimgopt.data import build_pipeline
    from tfimgopt.models import create_model
    from tfimgopt.training import train

    keras.utils.set_random_seed(0)
    model = create_model("small_cnn", digits16.info.image_shape, 10, width=8, dense=64)
    train(model, build_pipeline(digits16.train, 32, training=True), epochs=4, learning_rate=3e-3, verbose=0)
    return model


@pytest.fixture(scope="session")
def mirrored():
    """One MirroredStrategy over the two logical CPUs for the whole session.

    Several MirroredStrategy objects in one process reuse collective instance keys and
    can abort each other's all-reduces ("Shape mismatch in the collective instance").
    """
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
