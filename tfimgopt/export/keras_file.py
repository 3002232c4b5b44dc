"""The Keras exporter: the model itself as a `.keras` file, a variant like the others
(loaded back in safe mode to be verified and measured)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tfimgopt import _io
from tfimgopt.compat import keras, tf
from tfimgopt.export.artifact import Artifact
from tfimgopt.export.exporters import Exporter, register_exporter


class _Model:
    def __init__(self, path: str):
        from tfimgopt.models.files import load_model

        self.model = load_model(path, safe_mode=True, compile=False)
        self.call = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.model.predict(images, batch_size=256, verbose=0)

    def invoke(self, image: np.ndarray) -> np.ndarray:
        return self.call(tf.constant(image[None], tf.float32)).numpy()[0]


class KerasArtifact(Artifact):
    """A `.keras` file, loaded in safe mode (stored code refused) and run by Keras."""

    untrusted_parser = True  # the weights are HDF5 inside the zip: h5py parses them
    tolerance = 1e-5

    def runner(self, num_threads: int = 1) -> _Model:
        return _Model(self.path)


class KerasExporter(Exporter):
    name = "keras"
    summary = "the Keras model itself as a .keras file (Keras 2 format, loads in tf_keras)"
    suffix = ".keras"

    def export(self, model: keras.Model, path: str, **options: Any) -> KerasArtifact:
        _io.write_with(path, model.save)
        return KerasArtifact(path, self.name)

    def open(self, path: str) -> KerasArtifact:
        return KerasArtifact(path, self.name)


register_exporter(KerasExporter())
