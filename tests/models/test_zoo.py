"""The model zoo: every model builds, outputs float32 logits, and bad names fail clearly."""

import numpy as np
import pytest

from tfimgopt.compat import keras
from tfimgopt.errors import ConfigError
from tfimgopt.models import create_model, is_graph_model, list_models, register_model


@pytest.mark.parametrize(
    "name, shape", [("small_cnn", (32, 32, 1)), ("tiny_cnn", (16, 16, 1)), ("mobilenet_v2", (32, 32, 3)),
                    ("resnet50", (32, 32, 3))]
)
def test_zoo_models_build_and_output_logits(name, shape):
    model = create_model(name, shape, 7)
    assert is_graph_model(model)
    assert model.output_shape == (None, 7)
    assert model.layers[-1].name == "classifier"
    assert model.layers[-1].dtype_policy.compute_dtype == "float32"
    x = np.random.default_rng(0).integers(0, 256, (2, *shape)).astype("float32")
    out = model(x, training=False).numpy()
    assert out.shape == (2, 7) and np.all(np.isfinite(out))
    # Logits, not probabilities.
    assert not np.allclose(out.sum(1), 1.0)


def test_list_models_and_default_teacher_size():
    assert {"small_cnn", "tiny_cnn", "mobilenet_v2", "resnet50"} <= set(list_models())
    assert create_model("small_cnn", (32, 32, 1), 10).count_params() > 1_000_000


def test_user_models_are_accepted_and_registered():
    own = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    assert create_model(own) is own

    @register_model("test_linear")
    def linear(input_shape, num_classes):
        return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(num_classes)])

    assert "test_linear" in list_models() and list_models("test_*") == ["test_linear"]
    assert "test_linear" not in list_models(exclude=["test_*"])
    assert create_model("test_linear", (4, 4, 1), 2).output_shape == (None, 2)
    with pytest.raises(ConfigError, match="A model named 'test_linear' is registered already"):
        register_model("test_linear")(linear)
    assert create_model("test_linear", (4, 4, 1), 2).output_shape == (None, 2)  # the first one stays


def test_subclassed_models_are_marked_not_graph():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    assert not is_graph_model(Sub())


@pytest.mark.parametrize(
    "args, message",
    [
        (("nope", (8, 8, 1), 3), r"Valid names: \[.*'small_cnn'.*Received: model='nope'"),
        (("smal_cnn", (8, 8, 1), 3), r"Unknown model 'smal_cnn'; did you mean 'small_cnn'"),
        (("small_cnn", (8, 8), 3), r"Received: input_shape=\(8, 8\)"),
        (("small_cnn", (8, 8, 1), 1), "Received: num_classes=1"),
        ((3.5,), "Received: model of type builtins.float"),
    ],
)
def test_bad_model_requests(args, message):
    with pytest.raises(ConfigError, match=message):
        create_model(*args)


def test_keras3_model_is_pointed_to_tf_keras():
    import keras as keras3

    k3 = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(2)])
    with pytest.raises(ConfigError, match="Keras 3 model"):
        create_model(k3)


@pytest.mark.slow
def test_application_batchnorm_momentum_suits_short_training(tmp_path):
    model = create_model("mobilenet_v2", (32, 32, 3), 4, alpha=0.35)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(layer.momentum == 0.9 for layer in bns)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert all(layer.momentum == 0.9 for layer in loaded.layers if isinstance(layer, keras.layers.BatchNormalization))
    assert create_model("mobilenet_v2", (32, 32, 3), 4, alpha=0.35, bn_momentum=0.99).layers[3].momentum == 0.99
    with pytest.raises(ConfigError, match="Received: bn_momentum=1"):
        create_model("mobilenet_v2", (32, 32, 3), 4, bn_momentum=1)
