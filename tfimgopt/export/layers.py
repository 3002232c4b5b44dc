"""What a `.tflite` file holds, layer by layer: each weighted op's Keras layer and what its
weights are stored as (read from the flatbuffer, no interpreter), and the output tensors of
chosen layers (what selective quantization keeps in float)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from typing import Any

from tfimgopt.errors import ConfigError

#: Ops whose weights a quantizer quantizes: the ones `layer_precisions` reports on.
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL")


def _schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _tensor_name(tensor) -> str:
    name = tensor.Name()
    return name.decode() if isinstance(name, bytes) else str(name)


def operators(blob: bytes, shapes: bool = False):
    """(op name, output tensor name, weight tensor type name, writes a graph output) of every
    weighted op of subgraph 0; the weight's type is looked through a DEQUANTIZE (weight-only
    files keep int weights that way). With `shapes`, each tuple ends with the weight's shape."""
    schema = _schema()
    model = schema.Model.GetRootAs(blob, 0)
    graph = model.Subgraphs(0)
    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    producer = {}
    ops = []
    graph_outputs = {graph.Outputs(j) for j in range(graph.OutputsLength())}
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = builtin.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        outputs = [op.Outputs(j) for j in range(op.OutputsLength())]
        inputs = [op.Inputs(j) for j in range(op.InputsLength())]
        for out in outputs:
            producer[out] = (name, inputs)
        ops.append((name, inputs, outputs))
    found = []
    for name, inputs, outputs in ops:
        if name not in WEIGHTED_OPS or len(inputs) < 2 or not outputs:
            continue
        weight = inputs[1]
        made_by = producer.get(weight)
        if made_by and made_by[0] == "DEQUANTIZE":
            weight = made_by[1][0]
        tensor = graph.Tensors(weight)
        row = (name, _tensor_name(graph.Tensors(outputs[0])), types[tensor.Type()], outputs[0] in graph_outputs)
        found.append((*row, tuple(tensor.ShapeAsNumpy().tolist())) if shapes else row)
    return found


def layer_precisions(blob_or_path: bytes | str, layers: Sequence[str] = ()) -> dict[str, str]:
    """What each weighted op's weights are stored as (`INT4`, `INT8`, `FLOAT32`...), keyed by
    the Keras layer name found in its output tensor's name (or the tensor name).

    Args:
        blob_or_path: A `.tflite` file or its bytes.
        layers: The Keras model's layer names, to key the result by (longest match wins).
    """
    blob = blob_or_path if isinstance(blob_or_path, bytes | bytearray) else open(blob_or_path, "rb").read()
    result = {}
    for _, tensor, dtype, is_output in operators(bytes(blob)):
        result[layer_of(tensor, layers, is_output) or tensor] = dtype
    return result


def layer_of(tensor: str, layers: Sequence[str], is_output: bool = False) -> str | None:
    """The Keras layer whose name is a path segment of a TFLite tensor name; the op writing
    the graph's output (named after the signature, not the layer) is the last layer's."""
    segments = set(re.split(r"[/;:]", tensor))
    hits = [layer for layer in layers if layer in segments]
    if hits:
        return max(hits, key=len)
    return layers[-1] if is_output and layers else None


def layer_tensors(blob: bytes, layers: Sequence[str]) -> dict[str, str]:
    """Keras layer -> output tensor name of its (first) weighted op in the file."""
    found: dict[str, str] = {}
    for _, tensor, _, is_output in operators(blob):
        layer = layer_of(tensor, layers, is_output)
        if layer is not None and layer not in found:
            found[layer] = tensor
    return found


def weighted_layers(model: Any) -> list[str]:
    """Names of the model's layers that hold a kernel (what a recipe quantizes), in order."""
    return [layer.name for layer in model.layers if any(w.shape.rank >= 2 for w in layer.weights)]


def float_layer_tensors(blob: bytes, layers: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """Output tensor names of the weighted ops whose Keras layer matches a shell pattern.

    Raises:
        ConfigError: for a pattern that matches no layer of the model (a typo would
            otherwise quantize everything silently).
    """
    names = [layer for layer in layers if any(fnmatch.fnmatchcase(layer, p) for p in patterns)]
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(layer, p) for layer in layers)]
    if unmatched:
        raise ConfigError(f"export.float_layers: {unmatched} match no layer of the model (its layers: "
                          f"{list(layers)}). Received: float_layers={list(patterns)!r}")
    return [tensor for _, tensor, _, is_output in operators(blob) if layer_of(tensor, layers, is_output) in names]
