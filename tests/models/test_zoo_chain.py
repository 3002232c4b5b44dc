"""The zoo's edge backbones (tf_keras.applications, built by create_model) through prune ->
strip -> QAT -> int8 export -> LiteRT, and their pretrained-weights loading."""

import hashlib

import numpy as np
import pytest

from tests.keras3.test_keras3_chain import _fit_two_steps, _images, _set_batch_norm_statistics
from tfimgopt.compat import keras
from tfimgopt.errors import ConfigError, EnvironmentProblem
from tfimgopt.models import create_model

EDGE = ["mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0"]


@pytest.mark.slow  # 50-80 s a backbone: the chain runs in CI, not in the fast tier
@pytest.mark.parametrize("name", EDGE)
def test_edge_backbone_prunes_trains_quantization_aware_and_exports_int8(name):
    from tfimgopt.compress import prune, quantize_aware, strip
    from tfimgopt.export import export_tflite
    from tfimgopt.export.tflite import TFLiteRunner

    keras.utils.set_random_seed(0)
    x, y = _images()
    model = create_model(name, (32, 32, 3), 10)
    # uint8-range images in, logits out: the backbone scales its input itself.
    assert model.layers[-1].name == "classifier" and model.layers[-1].activation.__name__ == "linear"
    _set_batch_norm_statistics(model, x)
    pruned = prune(model, 0.5, schedule="constant", frequency=1)
    _fit_two_steps(pruned.model, x, y, pruned.callbacks)
    stripped = strip(pruned.model)
    assert pruned.pruned_layers
    qat = quantize_aware(stripped, calibration_data=x)
    _fit_two_steps(qat, x, y)
    want = qat(x, training=False).numpy()
    got = TFLiteRunner(export_tflite(qat, "int8", representative_data=x)).predict(x)
    assert want.std(axis=0).mean() > 1e-3
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.9
    assert np.abs(got - want).mean() < 0.4 * want.std()


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """tf_keras.applications' MobileNetV3 download pointed at a local folder: the real
    get_file (download, SHA-256 check, cache) and load_weights code runs, offline."""
    import tf_keras.src.applications.mobilenet_v3 as mobilenet_v3

    served = tmp_path / "served"
    served.mkdir()
    (tmp_path / "home" / ".keras").mkdir(parents=True)  # get_file falls back to /tmp/.keras without it
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # tf_keras caches in ~/.keras/models
    monkeypatch.setattr(mobilenet_v3, "BASE_WEIGHT_PATH", served.as_uri() + "/")
    keras.utils.set_random_seed(7)  # "ImageNet" weights: the same architecture, other random values
    reference = mobilenet_v3.MobileNetV3Small(input_shape=(32, 32, 3), include_top=False, weights=None,
                                              pooling="avg", include_preprocessing=True)
    path = served / "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
    reference.save_weights(str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    hashes = dict(mobilenet_v3.WEIGHTS_HASHES)
    hashes["small_224_1.0_float"] = (hashes["small_224_1.0_float"][0], digest)
    monkeypatch.setattr(mobilenet_v3, "WEIGHTS_HASHES", hashes)
    return reference, path


@pytest.mark.slow
def test_imagenet_weights_load_through_keras_own_download_code(keras_home, tmp_path):
    reference, path = keras_home
    model = create_model("mobilenet_v3_small", (32, 32, 3), 10, weights="imagenet")
    assert (tmp_path / "home" / ".keras" / "models" / path.name).is_file()  # downloaded and cached by get_file
    for got, want in zip(model.get_weights()[:-2], reference.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    # A path loads the same file; the classifier stays new either way.
    from_file = create_model("mobilenet_v3_small", (32, 32, 3), 10, weights=str(path))
    for got, want in zip(from_file.get_weights()[:-2], reference.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.slow
def test_weights_errors_name_the_problem_and_the_fix(keras_home, tmp_path, monkeypatch):
    import tf_keras.src.applications.mobilenet_v3 as mobilenet_v3

    _, path = keras_home
    with pytest.raises(ConfigError, match="does not fit mobilenet_v3_large"):
        create_model("mobilenet_v3_large", (32, 32, 3), 10, weights=str(path))
    with pytest.raises(ConfigError, match="weights file that exists"):
        create_model("mobilenet_v3_small", (32, 32, 3), 10, weights=str(tmp_path / "missing.h5"))
    with pytest.raises(ConfigError, match="3-channel \\(RGB\\) images; these have 1"):
        create_model("mobilenet_v3_small", (32, 32, 1), 10, weights="imagenet")
    with pytest.raises(ConfigError, match="small_cnn has no ImageNet weights.*mobilenet_v2"):
        create_model("small_cnn", (32, 32, 3), 10, weights="imagenet")
    # No network: the download fails (a closed local port stands in for the blocked host).
    monkeypatch.setattr(mobilenet_v3, "BASE_WEIGHT_PATH", "http://127.0.0.1:9/")
    with pytest.raises(EnvironmentProblem, match="storage.googleapis.com.*Offline: download"):
        create_model("mobilenet_v3_large", (32, 32, 3), 10, weights="imagenet")


def test_whole_model_weights_file_for_the_small_models(tmp_path):
    model = create_model("compact_cnn", (16, 16, 1), 10, filters=4)
    model.save_weights(str(tmp_path / "compact.h5"))
    again = create_model("compact_cnn", (16, 16, 1), 10, filters=4, weights=str(tmp_path / "compact.h5"))
    for got, want in zip(again.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ConfigError, match="does not fit compact_cnn"):
        create_model("compact_cnn", (16, 16, 1), 10, filters=8, weights=str(tmp_path / "compact.h5"))
