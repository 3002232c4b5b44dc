"""Clustering, cluster- and sparsity-preserving QAT (CQAT/PCQAT), read back from the int8 file."""

import numpy as np
import pytest

from tfimgopt.compat import keras
from tfimgopt.compress import prune, quantize_aware, sparsity_report, strip
from tfimgopt.compress.cluster import cluster, strip_clustering, unique_values
from tfimgopt.data import build_pipeline
from tfimgopt.errors import ConfigError
from tfimgopt.export import export_tflite
from tfimgopt.export.tflite import TFLiteRunner


def _fit(model, ds, callbacks=(), lr=1e-3):
    model.compile(keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(ds, epochs=1, callbacks=list(callbacks), verbose=0)


@pytest.fixture(scope="module")
def batches(digits16):
    return build_pipeline(digits16.train.take(512), 32)


@pytest.fixture(scope="module")
def test_batches(digits16):
    return build_pipeline(digits16.test, 64)


@pytest.fixture(scope="module")
def images16(digits16):
    return np.stack([x.numpy() for x, _ in digits16.train.take(128)]).astype("float32")


@pytest.fixture(scope="module")
def pruned_clustered(trained_cnn, batches):
    pruned = prune(trained_cnn, 0.8, schedule="constant", frequency=1)
    _fit(pruned.model, batches, pruned.callbacks)
    stripped = strip(pruned.model)
    wrapped, names = cluster(stripped, 8)
    _fit(wrapped, batches, lr=1e-4)
    return strip_clustering(wrapped), names, pruned.pruned_layers


def _int8_kernels(blob):
    """{tensor name: int8 array} of the weight tensors in a TFLite file (rank >= 2, constant)."""
    runner = TFLiteRunner(blob)
    kernels = {}
    for detail in runner.interpreter.get_tensor_details():
        if detail["dtype"] == np.int8 and len(detail["shape"]) >= 2:
            try:
                kernels[detail["name"]] = runner.interpreter.get_tensor(detail["index"]).copy()
            except ValueError:  # an activation tensor: no data outside invoke
                continue
    return kernels


@pytest.mark.slow
def test_cluster_leaves_at_most_n_values_per_kernel_and_the_original_untouched(trained_cnn, batches, test_batches):
    before = [w.copy() for w in trained_cnn.get_weights()]
    wrapped, names = cluster(trained_cnn, 16)
    assert names and "conv1" not in names and "classifier" not in names  # the pruning default skips them
    counts_before = unique_values(trained_cnn)
    _fit(wrapped, batches, lr=1e-4)
    clustered = strip_clustering(wrapped)
    counts = unique_values(clustered)
    for name in names:
        assert counts[name] <= 16 < counts_before[name], name
    for a, b in zip(before, trained_cnn.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    clustered.compile(metrics=["accuracy"], loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    trained_cnn.compile(metrics=["accuracy"], loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    accuracy = clustered.evaluate(test_batches, verbose=0)[1]
    assert accuracy >= trained_cnn.evaluate(test_batches, verbose=0)[1] - 0.03


@pytest.mark.slow
def test_clustering_a_pruned_model_keeps_its_zeros(pruned_clustered):
    clustered, names, pruned_layers = pruned_clustered
    report = sparsity_report(clustered)["layers"]
    counts = unique_values(clustered)
    for name in set(names) & set(pruned_layers):
        assert report[name]["sparsity"] >= 0.79 and counts[name] <= 8, (name, report[name], counts[name])


@pytest.mark.slow
def test_pcqat_int8_file_keeps_zeros_and_at_most_n_values_per_channel(pruned_clustered, batches, images16):
    clustered, names, pruned_layers = pruned_clustered
    qat = quantize_aware(clustered, preserve=("sparsity", "clusters"), calibration_data=images16)
    _fit(qat, batches, lr=1e-5)
    after = sparsity_report(qat)["layers"]
    assert all(after[name]["sparsity"] >= 0.79 for name in set(names) & set(pruned_layers))
    kernels = _int8_kernels(export_tflite(qat, "int8", representative_data=images16))
    checked = 0
    for name in set(names) & set(pruned_layers):
        kernel = next(k for tensor, k in kernels.items() if name in tensor and k.size == after[name]["params"])
        assert (kernel == 0).mean() >= 0.79, name
        per_channel = kernel.reshape(kernel.shape[0], -1)  # TFLite stores output channels first
        assert max(len(np.unique(row)) for row in per_channel) <= 8, name
        checked += 1
    assert checked >= 2


def test_cqat_without_sparsity_and_bad_arguments(trained_cnn, images16):
    wrapped, names = cluster(trained_cnn, 4, init="linear")
    clustered = strip_clustering(wrapped)
    qat = quantize_aware(clustered, preserve=("clusters",), calibration_data=images16)
    assert qat.output_shape == (None, 10)
    with pytest.raises(ConfigError, match=r"number_of_clusters must be an int >= 2\. Received: number_of_clusters=1"):
        cluster(trained_cnn, 1)
    with pytest.raises(ConfigError, match=r"Valid: \['kmeans\+\+', 'linear', 'density'\]\. Received: init='kmeans'"):
        cluster(trained_cnn, 8, init="kmeans")
    with pytest.raises(ConfigError, match=r"preserve takes .*'sparsity', 'clusters'.*Received: preserve=\('zeros',\)"):
        quantize_aware(trained_cnn, preserve=("zeros",))
