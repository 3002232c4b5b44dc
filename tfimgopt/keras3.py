"""Keras 3 at the edges: Keras 3 models come in (rebuilt in tf_keras, proven equal) and go
back out (`to_keras3`), and every entry point that takes a model says what it did.

Inside, tfimgopt is built on tf_keras (Keras 2) because TFMOT 0.8 rejects Keras 3.
"""

from __future__ import annotations

import inspect
import logging
import os
import tempfile
import warnings
from typing import Any

import numpy as np

from tfimgopt.compat import is_keras3, keras
from tfimgopt.errors import ConfigError

logger = logging.getLogger("tfimgopt")

_BASE_KEYS = {"name", "trainable", "dtype"}


def _keras3():
    import keras as keras3

    return keras3


def _plain(value: Any) -> Any:
    """Turns Keras 3 serialized objects (dtype policies, initializers...) into Keras 2 ones."""
    if isinstance(value, dict) and "class_name" in value and "config" in value:
        if value["class_name"] in ("DTypePolicy", "FloatDTypePolicy"):
            return value["config"]["name"]
        cls = getattr(keras.initializers, value["class_name"], None) or getattr(
            keras.regularizers, value["class_name"], None
        ) or getattr(keras.constraints, value["class_name"], None)
        config = value["config"]
        if cls is not None and isinstance(config, dict):
            accepted = set(inspect.signature(cls.__init__).parameters)
            config = {k: _plain(v) for k, v in config.items() if k in accepted}
        return {"class_name": value["class_name"], "config": config}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    return value


def _translate_layer(layer: Any, *, linear: bool = False) -> keras.layers.Layer:
    name = type(layer).__name__
    cls = getattr(keras.layers, name, None)
    if cls is None:
        raise ConfigError(
            f"from_keras3 cannot rebuild Keras 3 layer {layer.name!r} ({name}) in tf_keras: tf_keras has no such "
            "layer. Replace it with a standard layer, or build the model with tfimgopt.compat.keras. "
            f"Received: layer={layer.name!r}"
        )
    config = dict(layer.get_config())
    accepted = set(inspect.signature(cls.__init__).parameters) | _BASE_KEYS
    kwargs = {k: _plain(v) for k, v in config.items() if k in accepted}
    if linear:
        kwargs["activation"] = "linear"
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"from_keras3 cannot rebuild Keras 3 layer {layer.name!r} ({name}) in tf_keras: {err}. "
            f"Received: layer={layer.name!r}"
        ) from None


def _is_functional(model: Any) -> bool:
    return any(cls.__name__ == "Functional" for cls in type(model).__mro__)


def _rebuild(model: Any, inputs: list, pairs: list) -> list:
    """Applies tf_keras copies of `model`'s layers to `inputs`; nested models are flattened into
    the same graph. Returns the output tensors; `pairs` collects (Keras 3 layer, copy)."""
    keras3 = _keras3()
    if isinstance(model, keras3.Sequential):
        x = inputs[0]
        for old in model.layers:
            x = _apply(old, [x], pairs)[0]
        return [x]
    if not _is_functional(model):
        raise ConfigError(
            "from_keras3 rebuilds Sequential and functional models (nested ones included); a subclassed model's "
            f"graph is not visible. Rebuild it as a functional model. Received: model of type {type(model).__name__}")
    tensors: dict[int, Any] = {id(t): new for t, new in zip(model.inputs, inputs, strict=True)}
    # `operations` (not `layers`) also holds tensor ops written as `x + 3.0` in the model code.
    for old in getattr(model, "operations", model.layers):
        if isinstance(old, keras3.layers.InputLayer):
            continue
        for node in old._inbound_nodes:
            node_inputs = node.input_tensors
            if not node_inputs or not all(id(t) in tensors for t in node_inputs):
                continue  # a call from outside this model
            args = [tensors[id(t)] for t in node_inputs]
            if isinstance(old, keras3.layers.Layer):
                outs = _apply(old, args, pairs)
            else:
                outs = [_apply_op(old, node, tensors)]
            for old_t, new_t in zip(node.output_tensors, outs, strict=True):
                tensors[id(old_t)] = new_t
    missing = [t for t in model.outputs if id(t) not in tensors]
    if missing:
        raise ConfigError(
            f"from_keras3 could not follow the graph of {model.name!r} to its outputs: it uses operations that are "
            "not layers (such as `x + 3` on tensors). Write them as layers (e.g. keras.layers.Add, Rescaling). "
            f"Received: model={model.name!r}")
    return [tensors[id(t)] for t in model.outputs]


# Keras 3 activations tf_keras cannot deserialize, or defines differently (Keras 3's
# hard_sigmoid is relu6(x + 3) / 6; tf_keras's is clip(0.2 x + 0.5)): built from layers TFMOT
# can quantize. hard_sigmoid(x) = clip(x / 6 + 1/2, 0, 1); hard_silu(x) = x * hard_sigmoid(x).
_LAYER_ACTIVATIONS = ("hard_silu", "hard_swish", "hard_sigmoid")


def _activation_name(layer: Any) -> str | None:
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", None)
    return name if name in _LAYER_ACTIVATIONS else None


def _hard_activation(x: Any, name: str, prefix: str) -> Any:
    gate = keras.layers.Rescaling(1 / 6, offset=0.5, name=f"{prefix}_hard_sigmoid_scale")(x)
    gate = keras.layers.ReLU(max_value=1.0, name=f"{prefix}_hard_sigmoid")(gate)
    if name == "hard_sigmoid":
        return gate
    return keras.layers.Multiply(name=f"{prefix}_hard_silu")([x, gate])


def _apply(old: Any, args: list, pairs: list) -> list:
    if isinstance(old, _keras3().Model):
        return _rebuild(old, args, pairs)
    special = _activation_name(old)
    if special is not None and type(old).__name__ == "Activation":
        return [_hard_activation(args[0], special, old.name)]
    new = _translate_layer(old, linear=special is not None)
    pairs.append((old, new))
    out = new(args[0] if len(args) == 1 else args)
    outs = list(out) if isinstance(out, list | tuple) else [out]
    if special is not None:  # e.g. Conv2D(activation="hard_silu"): the layer, then the activation
        outs = [_hard_activation(outs[0], special, old.name)]
    return outs


_OP_LAYERS = {"Add": "Add", "Multiply": "Multiply", "Subtract": "Subtract"}


def _apply_op(op: Any, node: Any, tensors: dict) -> Any:
    """A tensor op of a Keras 3 graph (`x + 3.0`, `x * (1 / 6)`, `x + y`) as a tf_keras layer."""
    kind = type(op).__name__
    args = list(node.arguments.args)
    is_tensor = [id(a) in tensors for a in args]
    if len(args) == 2 and all(is_tensor) and kind in _OP_LAYERS:
        return getattr(keras.layers, _OP_LAYERS[kind])(name=op.name)([tensors[id(a)] for a in args])
    if len(args) == 2 and sum(is_tensor) == 1 and isinstance(args[1 - is_tensor.index(True)], int | float):
        x, c = tensors[id(args[is_tensor.index(True)])], float(args[1 - is_tensor.index(True)])
        tensor_first = is_tensor[0]
        scale_offset = {"Add": (1.0, c), "Multiply": (c, 0.0), "Subtract": (1.0, -c) if tensor_first else (-1.0, c),
                        "TrueDivide": (1.0 / c, 0.0) if tensor_first and c else None,
                        "Divide": (1.0 / c, 0.0) if tensor_first and c else None}.get(kind)
        if scale_offset is not None:
            return keras.layers.Rescaling(scale_offset[0], offset=scale_offset[1], name=op.name)(x)
    raise ConfigError(
        f"from_keras3 cannot rebuild the tensor operation {op.name!r} ({kind} of {len(args)} argument(s)) in "
        "tf_keras. Write it as a layer (keras.layers.Add, Multiply, Rescaling...). "
        f"Received: operation={op.name!r}")


def _random_input(model: Any, batch: int = 4) -> np.ndarray:
    shape = tuple(d or 8 for d in model.inputs[0].shape[1:])
    return np.random.default_rng(0).uniform(0, 255, (batch, *shape)).astype("float32")


def _check_equal(a: Any, b: Any, x: np.ndarray, what: str) -> float:
    want = np.asarray(a(x, training=False))
    got = np.asarray(b(x, training=False))
    diff = float(np.abs(want - got).max()) / max(1.0, float(np.abs(want).max()))
    if not diff <= 1e-4:
        raise ConfigError(f"{what}: the rebuilt model's outputs differ from the original's (relative max "
                          f"difference {diff:.3g} on random input); it is not used. Received: model={a.name!r}")
    return diff


def from_keras3(model: Any, *, check: bool = True) -> keras.Model:
    """Rebuilds a Keras 3 Sequential or functional model in tf_keras with the same weights.

    TFMOT (pruning, QAT) only accepts tf_keras models. This makes the same architecture
    out of tf_keras layers, flattening nested models (an augmentation block, a backbone used
    as one layer), copies every weight and, with `check`, proves the outputs equal on
    random input (relative difference <= 1e-4).

    Args:
        model: A built Keras 3 `Sequential` or functional `Model`.
        check: Compare outputs on random input and refuse a rebuild that differs.

    Returns:
        A tf_keras model computing the same function.

    Raises:
        ConfigError: for a layer tf_keras cannot rebuild (named, with what to do), a
            subclassed model, or outputs that differ.

    Example:
        >>> from tfimgopt.keras3 import from_keras3
        >>> from tfimgopt.compress import prune
        >>> pruned = prune(from_keras3(keras3_model), 0.5)
    """
    keras3 = _keras3()
    if not isinstance(model, keras3.Model):
        raise ConfigError(f"from_keras3 takes a Keras 3 model. Received: model of type {type(model).__name__}")
    if not (isinstance(model, keras3.Sequential) or _is_functional(model)):
        raise ConfigError(
            "from_keras3 rebuilds Sequential and functional models (nested ones included); a subclassed model's "
            f"graph is not visible. Rebuild it as a functional model. Received: model of type {type(model).__name__}")
    if not getattr(model, "inputs", None):
        raise ConfigError(f"from_keras3 needs a built model with known inputs. Received: model={model.name!r}")
    pairs: list = []
    inputs = [keras.Input(t.shape[1:], name=t.name) for t in model.inputs]
    outputs = _rebuild(model, inputs, pairs)
    rebuilt = keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)
    for old, new in pairs:
        new.set_weights([np.asarray(w) for w in old.get_weights()])
    if check:
        _check_equal(model, rebuilt, _random_input(model), "from_keras3")
    return rebuilt


def to_keras3(model: keras.Model, *, check: bool = True) -> Any:
    """Returns a Keras 3 model with the same architecture and weights as a tf_keras model.

    Works for dense, pruned-and-stripped and distilled models (standard layers). The
    conversion goes through a temporary HDF5 file that tfimgopt writes itself, which
    Keras 3 reads; with `check`, outputs are proven equal on random input.

    Raises:
        ConfigError: for a quantization-aware model (its deployment artifact is the int8
            TFLite file: `tfimgopt.export.export_tflite(model, "int8", ...)`), or a model
            Keras 3 cannot rebuild.
    """
    keras3 = _keras3()
    if is_keras3(model):
        return model
    if not isinstance(model, keras.Model):
        raise ConfigError(f"to_keras3 takes a tf_keras model. Received: model of type {type(model).__name__}")
    if any(type(layer).__name__ == "QuantizeWrapperV2" or "quantize" in type(layer).__module__
           for layer in model.layers):
        raise ConfigError(
            "to_keras3 does not convert quantization-aware models: Keras 3 has no TFMOT fake-quant layers. Its "
            "deployment artifact is the int8 TFLite file (export_tflite(model, 'int8', representative_data)); "
            f"or convert the model before quantize_aware. Received: model={model.name!r}")
    if any(hasattr(layer, "pruning_vars") for layer in model.layers):
        raise ConfigError(f"Strip the pruning wrappers first (tfimgopt.compress.strip). Received: model={model.name!r}")
    with tempfile.TemporaryDirectory(prefix="tfimgopt-to-keras3-") as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*HDF5 file.*")  # our own hand-over file, not the user's
        path = os.path.join(tmp, "model.h5")
        model.save(path)
        try:
            converted = keras3.models.load_model(path, compile=False)
        except (ValueError, TypeError, KeyError) as err:
            raise ConfigError(f"to_keras3: Keras 3 cannot rebuild this model ({err}). Received: model={model.name!r}"
                              ) from None
    if len(converted.inputs) == 1 and len(converted.outputs) == 1:
        # A single input, not a list of one: Keras 3 warns on every call of a model whose
        # input structure (a list, as the HDF5 config stores it) differs from the tensor passed.
        converted = keras3.Model(converted.inputs[0], converted.outputs[0], name=converted.name)
    if check:
        _check_equal(model, converted, _random_input(model), "to_keras3")
    return converted


def as_tf_keras(model: Any, what: str) -> Any:
    """The tf_keras model an entry point works on: a Keras 3 model is converted with
    `from_keras3` (outputs proven equal) and one line is logged; anything else is returned
    as it is. A Keras 3 model that cannot be converted raises naming `from_keras3`."""
    if not is_keras3(model):
        return model
    try:
        converted = from_keras3(model)
    except ConfigError as err:
        raise ConfigError(f"{what} takes tf_keras models; converting this Keras 3 model with "
                          f"tfimgopt.keras3.from_keras3 failed: {err}") from None
    logger.warning("tfimgopt: %s got a Keras 3 model (%s); converted it to tf_keras with from_keras3 (outputs "
                   "checked equal). tfimgopt.keras3.to_keras3 gives a Keras 3 model back.", what, model.name)
    return converted


def softmax_layer(model: Any) -> str | None:
    """The name of the layer whose softmax is the model's output, or None (logits)."""
    layer = model.layers[-1] if getattr(model, "layers", None) else None
    if layer is None:
        return None
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", str(activation))
    if type(layer).__name__ == "Softmax" or name == "softmax":
        return layer.name
    return None


def as_logits(model: keras.Model, what: str) -> keras.Model:
    """`model` with a softmax output replaced by logits (same weights), logging one line;
    models that already output logits are returned as they are. tfimgopt's losses and
    distillation work on logits (`from_logits=True`)."""
    name = softmax_layer(model)
    if name is None:
        return model
    last = model.layers[-1]
    if type(last).__name__ in ("Softmax", "Activation"):
        logits = keras.Model(model.inputs, last.input, name=model.name)
    else:
        def clone(layer):
            config = layer.get_config()
            if layer is last:
                config["activation"] = "linear"
            return type(layer).from_config(config)

        logits = keras.models.clone_model(model, clone_function=clone)
        logits.set_weights(model.get_weights())
    logger.warning("tfimgopt: %s got a model whose output is a softmax (layer %r); it works on logits, so the "
                   "softmax was dropped (same weights; apply softmax to its outputs for probabilities).", what, name)
    return logits


__all__ = ["as_logits", "as_tf_keras", "from_keras3", "softmax_layer", "to_keras3"]
