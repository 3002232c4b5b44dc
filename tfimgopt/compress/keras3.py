"""Rebuilds a Keras 3 model in tf_keras (Keras 2) with the same weights, for TFMOT."""

from __future__ import annotations

import inspect
from typing import Any

from tfimgopt.compat import keras
from tfimgopt.errors import ConfigError

_BASE_KEYS = {"name", "trainable", "dtype"}


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


def _translate_layer(layer: Any) -> keras.layers.Layer:
    name = type(layer).__name__
    cls = getattr(keras.layers, name, None)
    if cls is None:
        raise ConfigError(
            f"Cannot rebuild Keras 3 layer {layer.name!r} ({name}) in tf_keras: tf_keras has no such layer. "
            f"Rebuild the model with tfimgopt.compat.keras instead. Received: layer={layer.name!r}"
        )
    config = dict(layer.get_config())
    accepted = set(inspect.signature(cls.__init__).parameters) | _BASE_KEYS
    kwargs = {k: _plain(v) for k, v in config.items() if k in accepted}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"Cannot rebuild Keras 3 layer {layer.name!r} ({name}) in tf_keras: {err}. Received: layer={layer.name!r}"
        ) from None


def from_keras3(model: Any) -> keras.Model:
    """Rebuilds a Keras 3 Sequential or functional model of standard layers in tf_keras.

    TFMOT (pruning, QAT) only accepts tf_keras models and fails on Keras 3 ones with
    "can only prune an object of the following types ... You passed ... Sequential".
    This makes the same architecture from tf_keras layers and copies every weight.

    Args:
        model: A built Keras 3 `Sequential` or functional `Model`.

    Returns:
        A tf_keras model computing the same function.

    Raises:
        ConfigError: for a layer tf_keras cannot rebuild (named), or a subclassed model.

    Example:
        >>> from tfimgopt.compress import from_keras3, prune
        >>> pruned = prune(from_keras3(keras3_model), 0.5)
    """
    import keras as keras3

    if not isinstance(model, keras3.Model):
        raise ConfigError(f"from_keras3 takes a Keras 3 model. Received: model of type {type(model).__name__}")
    if isinstance(model, keras3.Sequential):
        layers = [keras.Input(model.input_shape[1:], name=model.inputs[0].name)]
        pairs = [(old, _translate_layer(old)) for old in model.layers]
        rebuilt = keras.Sequential(layers + [new for _, new in pairs], name=model.name)
    elif any(cls.__name__ == "Functional" for cls in type(model).__mro__):
        tensors: dict[int, Any] = {}
        for old_input in model.inputs:
            tensors[id(old_input)] = keras.Input(old_input.shape[1:], name=old_input.name)
        pairs = []
        for old in model.layers:
            if isinstance(old, keras3.layers.InputLayer):
                continue
            new = _translate_layer(old)
            pairs.append((old, new))
            for node in old._inbound_nodes:
                inputs = node.input_tensors
                if not all(id(t) in tensors for t in inputs):
                    continue  # a call from outside this model
                args = [tensors[id(t)] for t in inputs]
                out = new(args[0] if len(args) == 1 else args)
                outs = out if isinstance(out, list | tuple) else [out]
                for old_t, new_t in zip(node.output_tensors, outs, strict=True):
                    tensors[id(old_t)] = new_t
        rebuilt = keras.Model(
            [tensors[id(t)] for t in model.inputs], [tensors[id(t)] for t in model.outputs], name=model.name
        )
    else:
        raise ConfigError(
            "from_keras3 rebuilds Sequential and functional models only; a subclassed model's graph is "
            f"not visible. Received: model of type {type(model).__name__}"
        )
    for old, new in pairs:
        new.set_weights([w.numpy() if hasattr(w, "numpy") else w for w in old.get_weights()])
    return rebuilt
