"""Every `>>>` example in tfimgopt's docstrings runs, and prints what it says it prints.

Examples that use a `model`, `images` or `keras3_model` without building it get small real
ones here, as a reader would have in hand; each module runs in a fresh folder.
"""

import doctest
import importlib
import os
import pkgutil

import numpy as np
import pytest

import tfimgopt

ROOT = os.path.dirname(tfimgopt.__file__)
MODULES = sorted(
    info.name for info in pkgutil.walk_packages([ROOT], "tfimgopt.")
    if not info.ispkg and ">>>" in open(os.path.join(ROOT, *info.name.split(".")[1:]) + ".py").read()
)


@pytest.fixture(scope="module")
def namespace(digits16):
    from tfimgopt.models import create_model

    images = np.stack([x for x, _ in digits16.train.take(16).as_numpy_iterator()]).astype("float32")
    return {"images": images, "model": create_model("tiny_cnn", digits16.info.image_shape, 10)}


def test_the_doctest_list_covers_the_package():
    assert {"tfimgopt.models.zoo", "tfimgopt.compress.prune", "tfimgopt._registry", "tfimgopt.training.fit"} <= set(
        MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, namespace, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    extra = dict(namespace)
    if name == "tfimgopt.keras3":
        import keras as keras3

        extra["keras3_model"] = keras3.Sequential([
            keras3.Input((8, 8, 1)), keras3.layers.Conv2D(4, 3), keras3.layers.Conv2D(8, 3),
            keras3.layers.Flatten(), keras3.layers.Dense(16), keras3.layers.Dense(3)])
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    tests = doctest.DocTestFinder().find(module, globs={**vars(module), **extra})
    assert tests
    for test in tests:
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
