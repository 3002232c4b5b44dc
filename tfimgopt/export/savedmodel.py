"""The SavedModel exporter: a TensorFlow SavedModel folder with one `serving_default`
signature (float images in, logits out), ready for TF Serving and the TF.js converter."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from tfimgopt import _io
from tfimgopt.compat import keras, tf
from tfimgopt.export.artifact import Artifact
from tfimgopt.export.exporters import Exporter, register_exporter

SIGNATURE = "serving_default"


def serving_module(model: keras.Model) -> tf.Module:
    """A `tf.Module` holding the model's weights and its inference function as `serve`
    (input `[None, *input_shape]` float32 named after the model's input, output a dict
    `{output name: logits}`): what TFLite's converter and TF Serving both read."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"A serving signature needs one input and one output; the model has {len(model.inputs)} "
                         f"and {len(model.outputs)}. Received: model={model.name!r}")
    input_name = (getattr(model, "input_names", None) or [model.inputs[0].name])[0]
    spec = tf.TensorSpec([None, *model.input_shape[1:]], model.inputs[0].dtype, name=input_name)
    output = (getattr(model, "output_names", None) or [model.outputs[0].name])[0]
    module = tf.Module()
    module.weights = [getattr(w, "value", w) if not isinstance(w, tf.Variable) else w for w in model.weights]
    module.serve = tf.function(lambda image: {output: model(image, training=False)}, input_signature=[spec])
    return module


class _Signature:
    def __init__(self, path: str):
        self.loaded = tf.saved_model.load(path)
        self.fn = self.loaded.signatures[SIGNATURE]
        self.input = next(iter(self.fn.structured_input_signature[1]))

    def predict(self, images: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(images), 256):
            result = self.fn(**{self.input: tf.constant(images[start:start + 256], tf.float32)})
            out.append(next(iter(result.values())).numpy())
        return np.concatenate(out) if out else np.zeros((0,), np.float32)

    def invoke(self, image: np.ndarray) -> np.ndarray:
        return next(iter(self.fn(**{self.input: tf.constant(image[None], tf.float32)}).values())).numpy()[0]


class SavedModelArtifact(Artifact):
    """A SavedModel folder, run through its `serving_default` signature (the same float32
    graph as the Keras model, so it verifies at float32's tolerance)."""

    untrusted_parser = True  # TensorFlow's protobuf reader, and a graph's ops, run when it loads
    tolerance = 1e-4

    def runner(self, num_threads: int = 1) -> _Signature:
        return _Signature(self.path)


class SavedModelExporter(Exporter):
    name = "savedmodel"
    summary = "TensorFlow SavedModel folder with a serving_default signature (TF Serving, TF.js converter)"

    def export(self, model: keras.Model, path: str, **options: Any) -> SavedModelArtifact:
        module = serving_module(model)
        _io.write_with(path, lambda tmp: tf.saved_model.save(
            module, tmp, signatures={SIGNATURE: module.serve.get_concrete_function()}))
        return SavedModelArtifact(path, self.name)

    def open(self, path: str) -> SavedModelArtifact:
        return SavedModelArtifact(path, self.name)

    def recognizes(self, path: str) -> bool:
        # A Keras SavedModel (keras_metadata.pb) is a model to adopt, not a serving export.
        return (os.path.isfile(os.path.join(path, "saved_model.pb"))
                and not os.path.exists(os.path.join(path, "keras_metadata.pb")))


register_exporter(SavedModelExporter())
