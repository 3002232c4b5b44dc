"""Helpers shared by tests."""

import os
import subprocess
import sys


def run_python(code: str, *, env: dict | None = None, timeout: int = 300, cwd: str | None = None):
    """Runs `code` in a fresh Python process; returns the CompletedProcess. An `env` value of
    None removes that variable."""
    full_env = {**os.environ, **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
        env=full_env, cwd=cwd,
    )


PYTHON_OPS = ("PyFunc", "EagerPyFunc", "PyFuncStateless")


def dataset_graph_ops(dataset) -> set[str]:
    """Names of every op in a dataset's serialized graph, including its functions."""
    from tfimgopt.compat import tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(dataset._as_serialized_graph().numpy())
    ops = {node.op for node in graph_def.node}
    for fn in graph_def.library.function:
        ops.update(node.op for node in fn.node_def)
    return ops


def make_photo_folder(root, per_class: int = 120, seed: int = 0) -> str:
    """A folder of real photographs in two classes, made offline from scikit-learn's sample images.

    Each class is one of the two bundled photos (china.jpg, flower.jpg); its images are
    random crops of 60-140 px saved as JPEG, as a user's own photo folder would hold.
    """
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    bunch = load_sample_images()
    for photo, name in zip(bunch.images, bunch.filenames, strict=True):
        label = os.path.splitext(os.path.basename(name))[0]
        folder = os.path.join(str(root), label)
        os.makedirs(folder, exist_ok=True)
        height, width = photo.shape[:2]
        for i in range(per_class):
            size = int(rng.integers(60, 141))
            top, left = int(rng.integers(0, height - size)), int(rng.integers(0, width - size))
            crop = photo[top:top + size, left:left + size]
            Image.fromarray(crop).save(os.path.join(folder, f"{label}_{i:03d}.jpg"), quality=90)
    return str(root)


def subclassed_model():
    """A tiny subclassed tf_keras model (class `Subclassed`): what graph rewrites must refuse."""
    from tfimgopt.compat import keras

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    return Subclassed()
