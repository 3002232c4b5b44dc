"""TFLite export in every mode, checked in the LiteRT interpreter against Keras."""

import os

import numpy as np
import pytest

from tfimgopt.compat import keras
from tfimgopt.compress import quantize_aware
from tfimgopt.data import build_pipeline
from tfimgopt.errors import ConfigError, DataError
from tfimgopt.export import (
    FLOAT_TOLERANCE,
    MODES,
    TFLiteRunner,
    compare,
    detect_mode,
    evaluate_tflite,
    export_tflite,
    file_sizes,
    op_names,
    verify_tflite,
)


@pytest.fixture(scope="module")
def calibration(digits16):
    return digits16.train.take(120)


@pytest.fixture(scope="module")
def test_ds(digits16):
    return build_pipeline(digits16.test, 64)


@pytest.fixture(scope="module")
def exported(trained_cnn, calibration):
    return {mode: export_tflite(trained_cnn, mode, representative_data=calibration) for mode in MODES}


def test_every_mode_matches_keras_within_stated_tolerance(trained_cnn, exported, test_ds):
    for mode, blob in exported.items():
        assert detect_mode(blob) == mode
        result = verify_tflite(blob, trained_cnn, test_ds, num_samples=64)
        assert result["passed"], (mode, result)
        if mode != "int8":
            assert result["relative_diff"] <= FLOAT_TOLERANCE[mode]
    # float32 is essentially exact; the others are not, so the tolerances are doing work.
    assert verify_tflite(exported["float32"], trained_cnn, test_ds)["max_abs_diff"] < 1e-4
    assert verify_tflite(exported["dynamic"], trained_cnn, test_ds)["max_abs_diff"] > 1e-6


def test_verify_fails_for_a_different_model(trained_cnn, exported, test_ds):
    other = keras.models.clone_model(trained_cnn)  # same architecture, fresh weights
    assert not verify_tflite(exported["float32"], other, test_ds)["passed"]


def test_sizes_shrink_and_int8_uses_integer_kernels(exported):
    sizes = {mode: len(blob) for mode, blob in exported.items()}
    assert sizes["dynamic"] < 0.4 * sizes["float32"]
    assert sizes["int8"] < 0.4 * sizes["float32"]
    assert sizes["float16"] < 0.6 * sizes["float32"]
    assert "QUANTIZE" in op_names(exported["int8"]) and "QUANTIZE" not in op_names(exported["dynamic"])


def test_int8_io_tensors_are_int8_and_accuracy_holds(trained_cnn, calibration, test_ds, tmp_path):
    path = tmp_path / "m_int8.tflite"
    blob = export_tflite(trained_cnn, "int8", calibration, path=str(path), io_type="int8")
    assert path.read_bytes() == blob
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]
    runner = TFLiteRunner(str(path))
    assert runner.input_dtype == np.int8
    assert np.dtype(runner.output["dtype"]) == np.int8
    conv_inputs = [
        runner.interpreter.get_tensor_details()[op["inputs"][0]]
        for op in runner.interpreter._get_ops_details() if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED")
    ]
    assert conv_inputs and all(np.dtype(t["dtype"]) == np.int8 for t in conv_inputs)
    float_acc = evaluate_tflite(export_tflite(trained_cnn, "float32"), test_ds, latency_runs=5)["accuracy"]
    int8 = evaluate_tflite(blob, test_ds, latency_runs=5)
    assert int8["accuracy"] > float_acc - 0.03
    assert verify_tflite(blob, trained_cnn, test_ds)["passed"]


def test_evaluate_matches_a_manual_count_and_reports_latency(exported, test_ds):
    result = evaluate_tflite(exported["float32"], test_ds, latency_runs=20, num_threads=1)
    images = np.concatenate([x.numpy() for x, _ in test_ds])
    labels = np.concatenate([y.numpy() for _, y in test_ds])
    manual = (TFLiteRunner(exported["float32"]).predict(images).argmax(1) == labels).mean()
    assert result["accuracy"] == pytest.approx(manual)
    assert result["num_examples"] == len(labels)
    assert 0 < result["latency_ms_median"] <= result["latency_ms_p90"]
    assert result["size_bytes"] == len(exported["float32"])
    assert result["gzip_bytes"] == file_sizes(exported["float32"])["gzip_bytes"] < result["size_bytes"]


@pytest.mark.slow
def test_qat_model_exports_to_int8(trained_cnn, calibration, test_ds, digits16):
    qat = quantize_aware(trained_cnn)
    qat.compile(keras.optimizers.Adam(1e-4), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(build_pipeline(digits16.train, 32), epochs=1, verbose=0)
    blob = export_tflite(qat, "int8", calibration)
    assert detect_mode(blob) == "int8"
    result = verify_tflite(blob, qat, test_ds, num_samples=64)
    # Fake quantization in Keras mirrors the int8 kernels, so the logits agree closely too.
    assert result["passed"] and result["relative_diff"] < 0.1, result
    assert evaluate_tflite(blob, test_ds, latency_runs=3)["accuracy"] > 0.8


def test_compare_builds_ratios_against_baseline():
    results = {
        "float32": {"accuracy": 0.9, "size_bytes": 400, "gzip_bytes": 300, "latency_ms_median": 2.0},
        "int8": {"accuracy": 0.89, "size_bytes": 100, "gzip_bytes": 50, "latency_ms_median": 3.0, "sparsity": 0.8},
    }
    table = compare(results)
    int8 = table["rows"][1]
    assert int8["size_ratio"] == 4.0 and int8["gzip_ratio"] == 6.0 and int8["latency_ratio"] == 1.5
    assert int8["accuracy_delta_points"] == pytest.approx(-1.0)
    assert "| int8 | 0.8900 | -1.00 |" in table["markdown"] and "80%" in table["markdown"]
    with pytest.raises(ConfigError, match="Received: baseline='fp32'"):
        compare(results, baseline="fp32")


def test_bad_export_arguments(trained_cnn, calibration):
    valid = r"Valid: \['float32', 'dynamic', 'float16', 'int8', 'int16x8'\]\. Received: mode='int4'"
    with pytest.raises(ConfigError, match=valid):
        export_tflite(trained_cnn, "int4")
    with pytest.raises(ConfigError, match="needs representative_data.*Received: representative_data=None"):
        export_tflite(trained_cnn, "int8")
    with pytest.raises(DataError, match=r"shape \(N, 16, 16, 1\).*Received: shape=\(5, 8, 8, 1\)"):
        export_tflite(trained_cnn, "int8", np.zeros((5, 8, 8, 1), np.float32))
    with pytest.raises(ConfigError, match="needs mode='int8'"):
        export_tflite(trained_cnn, "float16", io_type="int8")


def test_corrupt_or_missing_tflite_files(tmp_path, exported):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(exported["float32"][:100])
    with pytest.raises(DataError, match="Not a valid TFLite model"):
        TFLiteRunner(str(bad))
    with pytest.raises(DataError, match="TFLite file not found"):
        TFLiteRunner(str(tmp_path / "missing.tflite"))


@pytest.mark.slow
def test_fast_conversion_writes_what_from_keras_model_writes(trained_cnn, digits16):
    """Our converter (a light tf.Module) against TensorFlow's own Keras path: same file, same signature."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from tfimgopt.compat import tf
    from tfimgopt.export.tflite import TFLiteRunner, to_tflite_bytes

    images = np.stack([x for x, _ in digits16.test.take(16).as_numpy_iterator()]).astype("float32")
    for mode in ("float32", "dynamic"):
        reference = tf.lite.TFLiteConverter.from_keras_model(trained_cnn)
        if mode == "dynamic":
            reference.optimizations = [tf.lite.Optimize.DEFAULT]
        want, got = reference.convert(), to_tflite_bytes(trained_cnn, mode)
        assert len(got) == len(want), mode
        np.testing.assert_array_equal(TFLiteRunner(got).predict(images), TFLiteRunner(want).predict(images))
        assert Interpreter(model_content=got).get_signature_list() == Interpreter(
            model_content=want).get_signature_list()


def test_int16x8_has_int16_activations_and_keeps_float32_accuracy(exported, test_ds, trained_cnn):
    from tfimgopt.export import tensor_dtypes

    dtypes = tensor_dtypes(exported["int16x8"])
    assert dtypes.get("int16", 0) >= 5 and dtypes.get("int8", 0) >= 4  # activations int16, kernels int8
    float32, int16x8 = (evaluate_tflite(exported[m], test_ds, latency_runs=1)["accuracy"]
                        for m in ("float32", "int16x8"))
    assert abs(int16x8 - float32) <= 0.003
    int8 = verify_tflite(exported["int8"], trained_cnn, test_ds)["relative_diff"]
    # int16 activations: 256x finer than int8 ones; the int8 weights are shared, so the logits gain ~3x (measured)
    assert verify_tflite(exported["int16x8"], trained_cnn, test_ds)["relative_diff"] < int8 / 2
    with pytest.raises(ConfigError, match="mode='int16x8' needs representative_data"):
        export_tflite(trained_cnn, "int16x8")


@pytest.mark.slow
def test_sparse_storage_is_smaller_with_equal_outputs_and_auto_keeps_what_litert_runs(trained_cnn, digits16,
                                                                                       calibration, test_ds):
    from tfimgopt.compress import prune, strip
    from tfimgopt.export import is_sparse, kernel_zeros

    pruned = prune(keras.models.clone_model(trained_cnn), 0.8, schedule="constant", frequency=1, skip=[])
    pruned.model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.model.fit(build_pipeline(digits16.train.take(64), 32), epochs=1, verbose=0, callbacks=pruned.callbacks)
    model = strip(pruned.model)
    assert kernel_zeros(model) > 0.79
    dense, packed = (export_tflite(model, "float32", sparse=flag) for flag in (False, True))
    assert is_sparse(packed) and not is_sparse(dense)
    assert len(packed) < len(dense) / 1.8
    x = np.stack([image.numpy() for image, _ in digits16.test.take(32)]).astype("float32")
    np.testing.assert_allclose(TFLiteRunner(packed).predict(x), TFLiteRunner(dense).predict(x), rtol=1e-5, atol=1e-5)
    assert export_tflite(model, "float32") == packed  # auto: sparse when smaller
    assert not is_sparse(export_tflite(trained_cnn, "float32"))  # auto: a dense model stays dense
    # LiteRT's XNNPACK refuses sparse int8 fully-connected layers: auto must ship the dense file then.
    int8 = export_tflite(model, "int8", representative_data=calibration)
    assert verify_tflite(int8, model, test_ds)["passed"]


def test_top1_agreement_leaves_out_near_ties_only():
    from tfimgopt.export.tflite import TIE_MARGIN, top1_agreement

    want = np.array([[5.0, 1.0, 0.0], [2.0, 2.0 - TIE_MARGIN * 5 / 2, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 0.0]])
    got = np.array([[5.0, 1.0, 0.0], [1.9, 2.0, 0.0], [0.0, 1.0, 3.0], [1.0, 0.0, 0.0]])
    # Row 2 is a near-tie (margin half of TIE_MARGIN x the logit scale 5): left out. Row 3 flips a
    # decided input: counted against.
    assert top1_agreement(got, want) == (2 / 3, 1)
    assert top1_agreement(want, want) == (1.0, 1)
    flat = np.zeros((4, 3))
    assert top1_agreement(np.eye(4, 3), flat) == (1.0, 4)  # all near-ties: nothing to judge
    assert top1_agreement(got[:, :1], want[:, :1]) == (1.0, 0)  # one output: no top-1 to compare


def test_a_collapsed_model_passes_verification_when_its_logits_match():
    # An untrained model whose two logits are equal up to noise: dynamic-range quantization
    # flips its top-1 on about half the inputs, by amounts far below the logit tolerance.
    rng = np.random.default_rng(0)
    column = rng.normal(0, 0.05, (1024, 1))
    kernel = np.concatenate([column, column + rng.normal(0, 1e-7, (1024, 1))], axis=1).astype(np.float32)
    model = keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    model.layers[-1].set_weights([kernel, np.zeros(2, np.float32)])
    images = rng.uniform(0, 1, (32, 32, 32, 1)).astype(np.float32)
    result = verify_tflite(export_tflite(model, "dynamic"), model, images)
    assert result["relative_diff"] < 0.01
    assert result["near_ties"] == 32
    assert result["passed"], result
    raw = (TFLiteRunner(export_tflite(model, "dynamic")).predict(images).argmax(1)
           == model.predict(images, verbose=0).argmax(1)).mean()
    assert raw < 0.9  # the old plain top-1 agreement would have failed this export
