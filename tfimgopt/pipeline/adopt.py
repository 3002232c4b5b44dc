"""Your own model as the run's baseline: loaded (a Keras 3 file converted, proven equal), the
run's image size and pixel range settled from it, and a student picked for it.

Every `auto` the run resolves is decided here, once, and written into the run's config.json
(with a line saying what was chosen and why), so a rerun reads the same choices.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from tfimgopt import _io
from tfimgopt.compat import is_keras3, keras
from tfimgopt.errors import ConfigError
from tfimgopt.pipeline.config import (
    ADOPTED_SPARSITY,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_SPARSITY,
    DEFAULT_STUDENT,
    RunConfig,
)

logger = logging.getLogger("tfimgopt")

#: Pixel ranges a model may have been trained on, as (scale, offset) applied to 0..255 pixels.
RANGES = {"0-255": (1.0, 0.0), "0-1": (1.0 / 255.0, 0.0), "-1-1": (1.0 / 127.5, -1.0)}
#: Names of the layers put in front of a user's model: a Rescaling for a model trained on another
#: range than 0..255, a Reshape for a model taking (height, width) without channels.
RANGE_LAYER = "input_range"
CHANNEL_LAYER = "input_channels"
#: Images the automatic range choice measures the model on, and how much above the lowest
#: cross-entropy a range's may be and still be chosen (for its accuracy).
RANGE_SAMPLE = 512
RANGE_LOSS_FACTOR = 2.0
#: Zoo students tried for your model, largest first; the first with at most 1/STUDENT_RATIO of
#: the teacher's parameters (counted at the run's image shape) is the student.
STUDENT_CANDIDATES = (
    ("mobilenet_v3_small", {}), ("mobilenet_v3_small", {"alpha": 0.75}),
    ("compact_cnn", {"filters": 32}), ("compact_cnn", {"filters": 16}), ("compact_cnn", {"filters": 8}),
    ("tiny_cnn", {"filters": 8}), ("compact_cnn", {"filters": 4}), ("tiny_cnn", {"filters": 4}),
)
STUDENT_RATIO = 8


@dataclasses.dataclass
class UserModel:
    """A model the user brought: the tf_keras model the run works on, and where it came from.

    Attributes:
        model: The tf_keras model (a Keras 3 file rebuilt with `from_keras3`; a softmax output
            dropped, since the run works on logits).
        source: The file it was loaded from.
        keras3: Whether it came from Keras 3 (the selected variant then goes back as Keras 3).
        softmax: Whether its output was a softmax (dropped here; put back on models handed back).
        input_shape: Its input shape without the batch (models handed back take it again).
    """

    model: keras.Model
    source: str
    keras3: bool
    softmax: bool = False
    input_shape: tuple = ()

    @property
    def label(self) -> str:
        return f"your model ({os.path.basename(os.path.normpath(self.source))})"

    def report(self, baseline: dict[str, Any], input_range: str) -> dict[str, Any]:
        """The report's `your_model` entry: what came in, how it measured, what goes back."""
        return {"source": self.source, "keras3": self.keras3, "softmax": self.softmax,
                "input_shape": list(self.input_shape), "test_accuracy": baseline["test_accuracy"],
                "input_range": input_range}


def load_user_model(path: str, *, safe_mode: bool = True, what: str = "train.model") -> UserModel:
    """Loads the user's model file for a run: safe mode unless asked, Keras 3 converted, logits.

    Raises:
        ConfigError: an unreadable or unsafe file, a subclassed model (TFMOT needs its graph),
            or a model whose input is not one image tensor.
    """
    from tfimgopt.keras3 import as_logits, softmax_layer
    from tfimgopt.models import is_graph_model
    from tfimgopt.models.files import load_model, saved_by_keras3

    keras3 = os.path.isfile(path) and saved_by_keras3(path)
    model = load_model(path, safe_mode=safe_mode)
    if not is_graph_model(model):
        raise ConfigError(
            f"{what}: the model in {path} is subclassed, and the run rewrites layer graphs (pruning, quantization): "
            "rebuild it with keras.Sequential or the functional API and save it again. "
            f"Received: {what}={path!r} ({type(model).__name__})")
    if len(model.inputs) != 1 or len(model.inputs[0].shape) not in (3, 4):
        shapes = [tuple(t.shape) for t in model.inputs]
        raise ConfigError(f"{what}: the run takes image classifiers with one (batch, height, width[, channels]) "
                          f"input. Received: {what}={path!r} with inputs {shapes}")
    softmax = softmax_layer(model) is not None
    shape = tuple(model.inputs[0].shape[1:])
    return UserModel(as_image_model(as_logits(model, what)), path, keras3, softmax, shape)


def save_input_model(out: str, model: Any) -> tuple[str, bool]:
    """Writes an in-memory model (tf_keras or Keras 3) to `input/model.keras` in the run folder,
    as tf_keras, unless the file there already holds the same architecture and weights (so a
    rerun of `tfimgopt.optimize` with the same model resumes). Returns (path, was Keras 3)."""
    from tfimgopt.keras3 import as_tf_keras

    keras3 = is_keras3(model)
    model = as_tf_keras(model, "tfimgopt.optimize")
    digest = model_digest(model)
    path = os.path.join(out, "input", "model.keras")
    stamp = os.path.join(out, "input", "model.sha256")
    try:
        with open(stamp) as f:
            same = f.read().strip() == digest and os.path.isfile(path)
    except OSError:
        same = False
    if not same:
        _io.write_with(path, model.save)
        _io.write_text(stamp, digest)
    return path, keras3


def model_digest(model: keras.Model) -> str:
    """SHA-256 of a model's architecture and weights (not of a file: saving twice gives other bytes)."""
    h = hashlib.sha256(json.dumps(model.get_config(), sort_keys=True, default=str).encode())
    for w in model.get_weights():
        h.update(str((w.shape, w.dtype)).encode())
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def data_digest(source: Any) -> str:
    """SHA-256 of in-memory data (arrays, or a mapping of splits of them)."""
    h = hashlib.sha256()

    def add(value: Any) -> None:
        if isinstance(value, dict):
            for key in sorted(value):
                h.update(str(key).encode())
                add(value[key])
        elif isinstance(value, list | tuple):
            for item in value:
                add(item)
        else:
            array = np.asarray(value)
            h.update(str((array.shape, array.dtype)).encode())
            h.update(np.ascontiguousarray(array).tobytes())

    add(source)
    return h.hexdigest()


def settle_shapes(config: RunConfig, user: UserModel | None) -> RunConfig:
    """A copy of `config` with the image size and channels taken from the user's model (where
    the config leaves them null) and `train.epochs` resolved.

    Raises:
        ConfigError: a `data.image_size` or `data.channels` that contradicts the model's input.
    """
    config = copy.deepcopy(config)
    d = config.data
    config.train.epochs = config.train.epochs_to_train
    if user is None:
        if d.image_size is None:
            d.image_size = DEFAULT_IMAGE_SIZE
        return config
    height, width, channels = tuple(user.model.inputs[0].shape[1:])
    where = f"{user.label} takes images of shape {(height, width, channels)}"
    if height is not None and width is not None:
        if height != width:
            raise ConfigError(f"{where}; the run's images are square (data.image_size). Give the model a square input. "
                              f"Received: train.model={user.source!r}")
        if d.image_size is None:
            d.image_size = int(height)
        elif d.image_size != height:
            raise ConfigError(f"{where}, but data.image_size asks for {d.image_size}x{d.image_size}: leave "
                              "--image-size out (the model's size is used) or resize the model's input. "
                              f"Received: data.image_size={d.image_size}")
    elif d.image_size is None:
        d.image_size = DEFAULT_IMAGE_SIZE
    if channels is not None:
        if channels not in (1, 3):
            raise ConfigError(f"{where}; the run feeds 1 (grayscale) or 3 (RGB) channels. "
                              f"Received: train.model={user.source!r}")
        if d.channels is None:
            d.channels = int(channels)
        elif d.channels != channels:
            raise ConfigError(f"{where}, but data.channels asks for {d.channels}: leave data.channels out (the "
                              f"model's count is used). Received: data.channels={d.channels}")
    return config


def _copy_weights(source: keras.Model, target: keras.Model) -> keras.Model:
    for layer in source.layers:
        if layer.weights:
            target.get_layer(layer.name).set_weights(layer.get_weights())
    return target


def _rewire(config: dict, old: str, new: str) -> None:
    """Points every inbound node of a functional config that reads layer `old` at `new`."""
    for layer in config["layers"]:
        for node in layer.get("inbound_nodes", []):
            for entry in node if isinstance(node, list) else []:
                if isinstance(entry, list) and entry and entry[0] == old:
                    entry[0] = new


def _front(model: keras.Model, add: list[dict], drop: tuple[str, ...], input_shape: tuple) -> keras.Model:
    """`model` rebuilt flat with `input_shape`, the layers named `drop` removed from its front and
    the serialized layers `add` put there instead (in order); weights copied by layer name."""
    if isinstance(model, keras.Sequential):
        layers = [keras.Input(input_shape, name=f"{model.name}_input"), *map(keras.layers.deserialize, add)]
        layers += [type(layer).from_config(layer.get_config()) for layer in model.layers if layer.name not in drop]
        return _copy_weights(model, keras.Sequential(layers, name=model.name))
    config = model.get_config()
    (input_name, *_), = config["input_layers"]
    for name in drop:  # each dropped layer reads the one before it: skip it
        layer = next(entry for entry in config["layers"] if entry["name"] == name)
        _rewire(config, name, layer["inbound_nodes"][0][0][0])
    config["layers"] = [layer for layer in config["layers"] if layer["name"] not in drop]
    at = next(i for i, layer in enumerate(config["layers"]) if layer["name"] == input_name)
    config["layers"][at]["config"]["batch_input_shape"] = [None, *input_shape]
    previous = input_name
    for offset, layer in enumerate(add, start=1):
        name = layer["config"]["name"]
        _rewire(config, previous, name)
        config["layers"].insert(at + offset, {**layer, "name": name, "inbound_nodes": [[[previous, 0, 0, {}]]]})
        previous = name
    return _copy_weights(model, keras.Model.from_config(config))


def as_image_model(model: keras.Model) -> keras.Model:
    """A model whose input is (height, width) without channels (MNIST-style, as TFMOT's tutorial
    builds it) made to take (height, width, 1) images: a Reshape layer `input_channels` in front.
    Image models are returned as they are."""
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 2:
        return model
    reshape = {"class_name": "Reshape", "config": {"name": CHANNEL_LAYER, "trainable": False, "dtype": "float32",
                                                   "target_shape": list(shape)}}
    return _front(model, [reshape], (), (*shape, 1))


def with_input_range(model: keras.Model, input_range: str) -> keras.Model:
    """`model` taking 0..255 pixels: for a model trained on [0, 1] or [-1, 1] a Rescaling layer
    (named `input_range`) is put in front, in the same flat graph (pruning and channel pruning
    see every layer). Weights are copied; the given model is not changed."""
    scale, offset = RANGES[input_range]
    if input_range == "0-255":
        return model
    rescale = {"class_name": "Rescaling",
               "config": {"name": RANGE_LAYER, "trainable": False, "dtype": "float32", "scale": scale,
                          "offset": offset}}
    return _front(model, [rescale], (), tuple(model.inputs[0].shape[1:]))


def with_softmax(model: keras.Model) -> keras.Model:
    """`model` with a softmax on its logits (what a user whose model ended in one gets back)."""
    return keras.Model(model.input, keras.layers.Softmax(name="softmax")(model.output), name=model.name)


def as_given(model: keras.Model, input_range: str, input_shape: tuple) -> keras.Model:
    """A model of the run (taking 0..255 images of the data's shape) made to take what the user's
    model took: `input_shape` (channel-less, maybe) in `input_range`. The layers the run put in
    front of the user's model are removed; a model the run built (a zoo student) gets the inverse
    in front instead: a Rescaling from the user's range to 0..255, a Reshape adding the channel."""
    names = [layer.name for layer in model.layers]
    if RANGE_LAYER in names or CHANNEL_LAYER in names or input_range == "0-255" and len(input_shape) == 3:
        return without_input_range(model)
    scale, offset = RANGES[input_range]
    add = []
    if len(input_shape) == 2:
        add.append({"class_name": "Reshape", "config": {"name": CHANNEL_LAYER, "trainable": False, "dtype": "float32",
                                                        "target_shape": [*input_shape, 1]}})
    if input_range != "0-255":
        add.append({"class_name": "Rescaling", "config": {"name": RANGE_LAYER, "trainable": False, "dtype": "float32",
                                                          "scale": 1.0 / scale, "offset": -offset / scale}})
    return _front(model, add, (), tuple(input_shape))


def without_input_range(model: keras.Model) -> keras.Model:
    """The inverse of `with_input_range` and `as_image_model`: the model as the user gave it, without
    the layers the run put in front (what goes back to a user who trained on [0, 1], or on
    channel-less images); other models are returned as they are."""
    names = [layer.name for layer in model.layers]
    drop = tuple(name for name in (RANGE_LAYER, CHANNEL_LAYER) if name in names)
    if not drop:
        return model
    shape = tuple(model.inputs[0].shape[1:])
    if CHANNEL_LAYER in drop:
        shape = tuple(model.get_layer(CHANNEL_LAYER).target_shape)
    return _front(model, [], drop, shape)


def measure_input_ranges(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, float]]:
    """Accuracy and mean cross-entropy of `model` (logits) on `images` (0..255) fed in each range."""
    measured = {}
    for name, (scale, offset) in RANGES.items():
        logits = model.predict(images.astype("float32") * scale + offset, batch_size=128, verbose=0)
        logits = logits.astype("float64") - logits.max(axis=-1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        measured[name] = {"accuracy": float(np.mean(np.argmax(logits, axis=-1) == labels)),
                          "loss": float(-np.mean(log_probs[np.arange(len(labels)), labels]))}
    return measured


def choose_input_range(model: keras.Model, train_ds, log: Callable[[str], None]) -> str:
    """The range a model was trained on, by measurement on a sample of the training images fed
    as 0..255, [0, 1] and [-1, 1]: the most accurate wins among the ranges whose cross-entropy
    is within `RANGE_LOSS_FACTOR` of the lowest (0..255 on a tie: no layer added). Loss rules
    out what accuracy alone misses: a ReLU network keeps much of its accuracy when its inputs
    are scaled 255x, while its loss explodes."""
    images, labels = [], []
    for x, y in train_ds.take(RANGE_SAMPLE).as_numpy_iterator():
        images.append(x)
        labels.append(y)
    measured = measure_input_ranges(model, np.stack(images), np.asarray(labels))
    lowest = min(m["loss"] for m in measured.values())
    plausible = [name for name, m in measured.items() if m["loss"] <= RANGE_LOSS_FACTOR * lowest]
    best = max(plausible, key=lambda name: (measured[name]["accuracy"], name == "0-255"))
    log(f"input range: {best} (data.input_range auto: on {len(images)} training images fed as "
        + ", ".join(f"{name} loss {m['loss']:.3g} accuracy {m['accuracy']:.3f}" for name, m in measured.items())
        + (f"; a Rescaling layer {RANGE_LAYER!r} feeds your model {best} from 0..255 pixels)" if best != "0-255"
           else ")"))
    return best


def pick_student(teacher_params: int, info) -> tuple[str, dict, int] | tuple[None, str, int]:
    """The largest zoo candidate with at most 1/8 of the teacher's parameters at the run's image
    shape: `(name, options, params)`, or `(None, why not, smallest params)`."""
    from tfimgopt.models import create_model

    smallest = None
    for name, options in STUDENT_CANDIDATES:
        try:
            params = create_model(name, info.image_shape, info.num_classes, **options).count_params()
        except (ValueError, ConfigError):  # e.g. a MobileNet below its smallest input size
            continue
        smallest = params if smallest is None else min(smallest, params)
        if params * STUDENT_RATIO <= teacher_params:
            return name, options, int(params)
    return None, (f"no zoo student has at most 1/{STUDENT_RATIO} of the teacher's {teacher_params:,} parameters "
                  f"(the smallest has {smallest:,}); set distill.student to distil anyway"), int(smallest or 0)


def settle_sparsity(config: RunConfig, prunes_your_model: bool) -> RunConfig:
    """`compress.target_sparsity` resolved where null: 0.8 (TFMOT's tutorial) when pruning starts
    from the user's own model, 0.5 (measured on the distilled students) otherwise."""
    if config.compress.target_sparsity is None:
        config.compress.target_sparsity = ADOPTED_SPARSITY if prunes_your_model else DEFAULT_SPARSITY
    return config


def settle_choices(config: RunConfig, user: UserModel | None, data, log: Callable[[str], None]
                   ) -> tuple[RunConfig, UserModel | None, list[str]]:
    """Resolves the run's remaining `auto` settings once the data is loaded: the pixel range
    (measured for your model), the student (picked for your model), the augmentation and
    target sparsity, and checks the model's classes. Returns the settled config, the user's
    model taking 0..255 pixels, and notes saying what was chosen.

    Raises:
        ConfigError: a model whose outputs do not match the data's classes, or an input range
            other than 0-255 for a zoo model (zoo models rescale inside).
    """
    config = copy.deepcopy(config)
    notes: list[str] = []
    d, info, c = config.data, data.splits.info, config.distill
    if user is None:
        if d.input_range not in ("auto", "0-255"):
            raise ConfigError(f"Zoo models take 0..255 pixels (they rescale inside): data.input_range applies to your "
                              f"own model file. Received: data.input_range={d.input_range!r}")
        d.input_range = "0-255"
        if c.student == "auto":
            c.student = DEFAULT_STUDENT
        return settle_sparsity(config, False), None, notes
    outputs = user.model.outputs[0].shape[-1]
    if len(user.model.outputs) != 1 or outputs != info.num_classes:
        raise ConfigError(
            f"{user.label} gives {outputs} outputs, and the data has {info.num_classes} classes "
            f"({', '.join(info.class_names[:10])}{'...' if info.num_classes > 10 else ''}): a classifier needs one "
            f"logit per class, in the data's label order. Received: train.model={user.source!r}")
    if d.input_range == "auto":
        d.input_range = choose_input_range(user.model, data.splits.train, log)
        notes.append(f"input range {d.input_range} (measured)")
    user = dataclasses.replace(user, model=with_input_range(user.model, d.input_range))
    if c.enabled and c.student == "auto":
        teacher = user.model.count_params()
        name, options, params = pick_student(teacher, info)
        keras.utils.set_random_seed(config.seed)  # building candidates drew from the seeded generators
        if name is None:
            c.enabled = False
            notes.append(f"distillation skipped: {options}")
        else:
            c.student, c.student_options = name, options
            notes.append(f"student {name} {options or ''} ({params:,} parameters, 1/{teacher / params:.0f} of "
                         f"your model's {teacher:,}), picked by parameter count")
    if config.compress.target_sparsity is None and not c.enabled:
        notes.append(f"target sparsity {ADOPTED_SPARSITY} (pruning your own model, as TFMOT's tutorial)")
    settle_sparsity(config, not c.enabled)
    for note in notes:
        log(f"settled: {note}")
    return config, user, notes


__all__ = [
    "CHANNEL_LAYER", "RANGES", "RANGE_LAYER", "UserModel", "as_given", "as_image_model", "choose_input_range",
    "data_digest", "load_user_model", "measure_input_ranges", "model_digest", "pick_student", "save_input_model",
    "settle_choices", "settle_shapes", "settle_sparsity", "with_input_range", "with_softmax", "without_input_range",
]
