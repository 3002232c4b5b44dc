"""The pipeline builder: order of operations, determinism, static shapes, no Python ops."""

import numpy as np
import pytest

from tests.helpers import PYTHON_OPS, dataset_graph_ops
from tfimgopt.compat import tf
from tfimgopt.data import build_pipeline
from tfimgopt.errors import DataError


def _toy(n=20):
    x = np.arange(n * 4 * 4, dtype=np.uint8).reshape(n, 4, 4, 1)
    return tf.data.Dataset.from_tensor_slices((x, np.arange(n) % 5))


def _labels(ds):
    return np.concatenate([y.numpy() for _, y in ds])


def test_training_shuffle_is_seeded_and_eval_keeps_order():
    a = _labels(build_pipeline(_toy(), 6, training=True, seed=1))
    b = _labels(build_pipeline(_toy(), 6, training=True, seed=1))
    c = _labels(build_pipeline(_toy(), 6, training=True, seed=2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(_labels(build_pipeline(_toy(), 6)), np.arange(20) % 5)


def test_drop_remainder_gives_static_batch_dimension():
    ds = build_pipeline(_toy(), 6, drop_remainder=True)
    assert ds.element_spec[0].shape.as_list() == [6, 4, 4, 1]
    assert sum(1 for _ in ds) == 3
    assert build_pipeline(_toy(), 6).element_spec[0].shape.as_list() == [None, 4, 4, 1]


def test_one_hot_labels_and_augment_only_in_training():
    def invert(images):
        return 255 - images

    train = build_pipeline(_toy(), 4, augment=invert, label_mode="one_hot", num_classes=5, training=True, seed=0)
    evals = build_pipeline(_toy(), 4, augment=invert, label_mode="one_hot", num_classes=5)
    x_tr, y_tr = next(iter(train))
    x_ev, y_ev = next(iter(evals))
    assert y_tr.dtype == tf.float32 and y_tr.shape == (4, 5)
    np.testing.assert_allclose(y_tr.numpy().sum(1), 1.0)
    np.testing.assert_array_equal(x_ev.numpy()[0, ..., 0], np.arange(16).reshape(4, 4))
    originals = {img.numpy().tobytes() for img, _ in _toy()}
    assert all((255 - img).tobytes() in originals for img in x_tr.numpy())
    assert not any(img.tobytes() in originals for img in x_tr.numpy())


def test_augment_receiving_labels_is_called_with_batch():
    def mix(batch):
        images, labels = batch
        return images, labels * 0.5

    mix.takes_labels = True
    ds = build_pipeline(_toy(), 4, augment=mix, label_mode="one_hot", num_classes=5, training=True)
    _, y = next(iter(ds))
    np.testing.assert_allclose(y.numpy().sum(1), 0.5)


def test_graph_has_no_python_ops(digits16):
    ds = build_pipeline(digits16.train, 8, training=True, augment=lambda x: tf.image.flip_left_right(x))
    ops = dataset_graph_ops(ds)
    assert "ShuffleDatasetV3" in ops and "PrefetchDataset" in ops
    assert not ops & set(PYTHON_OPS)
    # The check itself can fail: a py_function shows up.
    bad = ds.map(lambda x, y: (tf.py_function(lambda a: a, [x], tf.uint8), y))
    assert dataset_graph_ops(bad) & set(PYTHON_OPS)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, "Received: batch_size=0"),
        ({"batch_size": 4, "label_mode": "soft"}, "Received: label_mode='soft'"),
        ({"batch_size": 4, "label_mode": "one_hot"}, "needs num_classes"),
    ],
)
def test_bad_pipeline_arguments(kwargs, message):
    with pytest.raises(DataError, match=message):
        build_pipeline(_toy(), **kwargs)
