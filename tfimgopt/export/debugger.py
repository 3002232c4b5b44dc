"""The quantization debugger: where a quantized `.tflite` file loses accuracy, layer by layer.

Both files (the float32 export of the same Keras model, and a quantized one, from either
backend) run in LiteRT keeping every intermediate tensor; each weighted layer's output is
compared on the same images (int tensors dequantized with their scale and zero point):
cosine similarity and SNR in dB, which accumulate along the network, and the noise each
layer adds (its noise-to-signal ratio minus the previous layer's), which says which layers
lose most: a layer that destroys its output adds about 1, one that rounds finely ~1e-4.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tfimgopt.export.layers import layer_tensors


def _tensors_by_layer(blob: bytes, layers: Sequence[str]) -> dict[str, int]:
    """Keras layer -> index of its op's output tensor in subgraph 0 (the first op per layer)."""
    from ai_edge_litert import schema_py_generated as schema

    graph = schema.Model.GetRootAs(blob, 0).Subgraphs(0)
    names = {graph.Tensors(i).Name().decode(): i for i in range(graph.TensorsLength())}
    return {layer: names[tensor] for layer, tensor in layer_tensors(blob, layers).items()}


def _activations(blob: bytes, images: np.ndarray, wanted: dict[str, int]) -> dict[str, np.ndarray]:
    import warnings

    from ai_edge_litert.interpreter import Interpreter

    from tfimgopt._quiet import native_output

    with native_output(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
        interpreter = Interpreter(model_content=blob, experimental_preserve_all_tensors=True)
        interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    by_index = {d["index"]: d for d in interpreter.get_tensor_details()}
    out: dict[str, list[np.ndarray]] = {layer: [] for layer in wanted}
    for image in images:
        x = image[None].astype(np.float32)
        if np.dtype(detail["dtype"]) != np.float32:
            scale, zero = detail["quantization"]
            info = np.iinfo(detail["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(detail["dtype"])
        interpreter.set_tensor(detail["index"], x)
        interpreter.invoke()
        for layer, i in wanted.items():
            value = interpreter.get_tensor(i)
            if value.dtype != np.float32:
                scale, zero = by_index[i]["quantization"]
                value = (value.astype(np.float32) - zero) * (scale or 1.0)
            out[layer].append(value.reshape(-1).astype(np.float64))
    return {layer: np.stack(values) for layer, values in out.items()}


def layer_errors(float_blob: bytes, quantized_blob: bytes, images: np.ndarray, layers: Sequence[str]
                 ) -> list[dict[str, Any]]:
    """Per weighted layer, in network order: how far the quantized file's output is from the
    float file's on `images`.

    Args:
        float_blob: The float32 `.tflite` file of the model.
        quantized_blob: A quantized `.tflite` file of the same model.
        images: A few validation images (float, the model's input range).
        layers: The model's weighted layer names (`litert_recipes.weighted_layers`).

    Returns:
        `[{"layer", "cosine", "snr_db", "noise_added"}]`: cosine similarity and signal-to-noise
        ratio of the layer's output (accumulated error), and the noise-to-signal ratio this
        layer adds to the previous layer's (the first layer's input is exact).
    """
    float_blob, quantized_blob = bytes(float_blob), bytes(quantized_blob)
    reference = _tensors_by_layer(float_blob, layers)
    other = _tensors_by_layer(quantized_blob, layers)
    common = [layer for layer in layers if layer in reference and layer in other]
    want = _activations(float_blob, images, {layer: reference[layer] for layer in common})
    got = _activations(quantized_blob, images, {layer: other[layer] for layer in common})
    rows, previous = [], None
    for layer in common:
        a, b = want[layer], got[layer]
        if a.shape != b.shape:
            continue
        dot = (a * b).sum(1)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cosine = float(np.mean(np.where(norms > 0, dot / np.maximum(norms, 1e-30), 1.0)))
        noise = float(((a - b) ** 2).sum())
        signal = float((a ** 2).sum())
        nsr = noise / signal if signal > 0 else (0.0 if noise == 0 else 1.0)
        snr = float("inf") if noise == 0 else 10 * np.log10(max(signal, 1e-30) / noise)
        added = max(0.0, nsr - (previous or 0.0))
        rows.append({"layer": layer, "cosine": round(float(cosine), 6),
                     "snr_db": round(float(snr), 2) if np.isfinite(snr) else None,
                     "noise_added": float(f"{added:.4g}")})
        previous = nsr
    return rows


def worst_layers(rows: list[dict[str, Any]], n: int = 3) -> list[dict[str, Any]]:
    """The `n` layers that add the most noise (ties: the lower cosine first); layers that
    add none are not offenders."""
    return sorted((r for r in rows if r["noise_added"] > 0), key=lambda r: (-r["noise_added"], r["cosine"]))[:n]
