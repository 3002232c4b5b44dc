"""LiteRT Quantizer as a second quantization backend: int4 weights (`int4`,
`weight_only_int4`), and the converter's dynamic / int8 / int16x8 modes through LiteRT
Quantizer's recipes (`litert_dynamic`, `litert_int8`, `litert_int16x8`; `export.backend:
litert` makes the run use them wherever `export.modes` names the converter's).

Google marks quantization inside `TFLiteConverter` as deprecated in favour of LiteRT
Quantizer (`pip install litert-quantizer`), which rewrites a float32 `.tflite` file by
recipe. Every file here keeps float32 inputs and outputs (the graph's INPUT and OUTPUT are
left unquantized, so the file quantizes its input itself, as the converter's files do),
keeps the layers of `float_layers` in float, and says per layer what each weight became
(`layer_precisions`), so a recipe's fallbacks (layers it leaves float) are reported.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from tfimgopt import _io
from tfimgopt.errors import ConfigError
from tfimgopt.export.artifact import check_outputs
from tfimgopt.export.exporters import Exporter, register_exporter
from tfimgopt.export.layers import float_layer_tensors, layer_precisions, operators, weighted_layers
from tfimgopt.export.tflite import TFLiteArtifact, _representative, to_tflite_bytes

INSTALL = "pip install 'litert-quantizer>=0.11,<0.12'"
SIGNATURE = "serving_default"
_NO_QUANTIZE = {"algorithm_key": "no_quantize", "op_config": {"compute_precision": "FLOAT",
                                                              "explicit_dequantize": False}}

# Verification criteria per recipe family, like the converter's (`tflite.FLOAT_TOLERANCE`): the
# relative logit bound (None: top-1 agreement only) and the minimum top-1 agreement. int4
# weights move logits more than int8 ones: on small_cnn (digits, 32 px) channelwise int4 moved
# them 0.06-0.2 relative (benchmarks/litert_quantizer.py); a broken file moves them by O(1).
# LiteRT Quantizer's static recipes (0.11) are checked like the converter's int8: top-1
# agreement only. Its int16-activation file is not the accuracy-safe mode the converter's is
# on our models: on small_cnn (digits, 16 px) its logits moved 0.51 relative (int8: 0.59;
# the converter's int16x8: 0.003), with 0.91 top-1 agreement for both.
CRITERIA = {
    "int4": (0.35, 0.9),
    "weight_only_int4": (0.35, 0.9),
    "dynamic": (0.1, 0.9),
    "int8": (None, 0.95),
    "int16x8": (None, 0.95),
}


def available() -> bool:
    """Whether LiteRT Quantizer is installed."""
    import importlib.util

    return importlib.util.find_spec("litert_quantizer") is not None


def require() -> None:
    """Raises a `ConfigError` saying how to install LiteRT Quantizer when it is missing."""
    if not available():
        raise ConfigError(f"The LiteRT Quantizer backend needs the litert-quantizer package: {INSTALL} "
                          "(it is in tfimgopt[dev]). Received: export.backend='litert'")


def _scope_regex(tensors: Sequence[str]) -> str:
    # LiteRT Quantizer matches a recipe's regex against an op's scope: its output tensor names,
    # each followed by ";".
    return "^(" + "|".join(re.escape(t) for t in tensors) + ");"


def _blockwise_where_allowed(float_blob: bytes, recipe_name: str, block: int) -> list[dict[str, Any]]:
    """A blockwise recipe applied to the ops whose weights' input dimension is a multiple of
    the block, channelwise int4 to the others (LiteRT Quantizer refuses the blockwise layout
    there): a per-layer fallback `layer_precisions` and the report show."""
    from litert_quantizer import recipe

    entries = list(recipe.dynamic_wi4_afp32())
    blocked = [tensor for _, tensor, _, _, shape in operators(float_blob, shapes=True)
               if shape and shape[-1] % block == 0]
    if blocked:
        entries += [{**entry, "regex": _scope_regex(blocked)} for entry in getattr(recipe, recipe_name)()]
    return entries


def quantize_tflite(float_blob: bytes, recipe_name: str, calibration: np.ndarray | None = None,
                    float_tensors: Sequence[str] = ()) -> bytes:
    """A float32 `.tflite` file quantized by a LiteRT Quantizer recipe, with float32 inputs
    and outputs and the ops writing `float_tensors` left in float. A blockwise int4 recipe
    (`dynamic_wi4b32_afp32`) applies where the layer's shape allows, channelwise elsewhere;
    int4 recipes store depthwise convolutions in int8 (LiteRT Quantizer leaves them float in
    int4: 94 of MobileNetV2 a0.35's 386 KiB).

    Raises:
        ConfigError: when LiteRT Quantizer is missing, or a static recipe gets no
            calibration images.
    """
    require()
    from litert_quantizer import Quantizer, recipe

    block = re.search(r"_wi4b(\d+)_", recipe_name)
    entries = (_blockwise_where_allowed(float_blob, recipe_name, int(block.group(1))) if block
               else list(getattr(recipe, recipe_name)()))
    if "_wi4" in recipe_name:  # LiteRT Quantizer has no int4 depthwise kernel: those layers fall back to int8
        eight = recipe.weight_only_wi8_afp32() if recipe_name.startswith("weight_only") else recipe.dynamic_wi8_afp32()
        entries += [{**entry, "operation": "DEPTHWISE_CONV_2D"} for entry in eight]
    entries += [{"regex": ".*", "operation": "INPUT", **_NO_QUANTIZE},
                {"regex": ".*", "operation": "OUTPUT", **_NO_QUANTIZE}]
    if float_tensors:
        entries.append({"regex": _scope_regex(float_tensors), "operation": "*", **_NO_QUANTIZE})
    quantizer = Quantizer(bytes(float_blob), entries)
    import warnings

    from tfimgopt._quiet import native_output

    with native_output(), warnings.catch_warnings():
        # Its calibrator keeps every tensor on purpose and LiteRT warns that this is for debugging.
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
        if quantizer.need_calibration:
            if calibration is None or len(calibration) == 0:
                raise ConfigError(f"The recipe {recipe_name} calibrates activation ranges: it needs representative "
                                  "images. Received: calibration=None")
            from ai_edge_litert.interpreter import Interpreter

            runner = Interpreter(model_content=bytes(float_blob)).get_signature_runner(SIGNATURE)
            name = next(iter(runner.get_input_details()))
            samples = [{name: np.asarray(image[None], np.float32)} for image in calibration]
            calibrated = quantizer.calibrate({SIGNATURE: samples}, num_threads=os.cpu_count() or 1)
            result = quantizer.quantize(calibrated, enable_progress_bar=False, enable_progress_report=False)
        else:
            result = quantizer.quantize(enable_progress_bar=False, enable_progress_report=False)
    return bytes(result.quantized_model)


#: float16 weights, float compute (LiteRT Quantizer's float casting): a recipe it has no name for.
FLOAT16_WEIGHTS = [{"regex": ".*", "operation": "*", "algorithm_key": "float_casting", "op_config": {
    "weight_tensor_config": {"num_bits": 16, "symmetric": True, "granularity": "TENSORWISE", "dtype": "FLOAT"},
    "compute_precision": "FLOAT", "explicit_dequantize": True}}]


def recipe_entries(recipe_name: str) -> list[dict[str, Any]]:
    """A LiteRT Quantizer recipe's entries by name (or `float16_weights`)."""
    if recipe_name == "float16_weights":
        return [dict(entry) for entry in FLOAT16_WEIGHTS]
    from litert_quantizer import recipe

    return list(getattr(recipe, recipe_name)())


def quantize_plan(float_blob: bytes, plan: dict[str, str]) -> bytes:
    """A float32 `.tflite` file with the ops writing each tensor of `plan` quantized by that
    tensor's recipe (weight recipes, which need no calibration), every other op in float."""
    require()
    from litert_quantizer import Quantizer

    entries = []
    for recipe_name in sorted(set(plan.values())):
        tensors = [t for t, r in plan.items() if r == recipe_name]
        entries += [{**entry, "regex": _scope_regex(tensors)} for entry in recipe_entries(recipe_name)]
    entries += [{"regex": ".*", "operation": "INPUT", **_NO_QUANTIZE},
                {"regex": ".*", "operation": "OUTPUT", **_NO_QUANTIZE}]
    from tfimgopt._quiet import native_output

    with native_output():
        result = Quantizer(bytes(float_blob), entries).quantize(enable_progress_bar=False,
                                                                enable_progress_report=False)
    return bytes(result.quantized_model)


class LiteRTArtifact(TFLiteArtifact):
    """A `.tflite` file quantized by LiteRT Quantizer; verified by its recipe family's
    `CRITERIA`, not by the mode read from the file (int4 files look like dynamic-range ones)."""

    def __init__(self, path: str | os.PathLike, mode: str = "int4", family: str = "int4"):
        super().__init__(path, mode)
        self.family = family
        self.tolerance, self.min_agreement = CRITERIA[family]
        self.recipe: str | None = None

    def verify(self, model: Any, images: Any, *, num_samples: int = 64) -> dict[str, Any]:
        from tfimgopt._arrays import images_labels

        x, _ = images_labels(images, num_samples)
        x = x.astype(np.float32)
        check = check_outputs(self.predict(x), model.predict(x, verbose=0), tolerance=self.tolerance,
                              min_agreement=self.min_agreement, mode=self.mode)
        precisions = layer_precisions(self.path, weighted_layers(model))
        check["backend"] = "litert"
        if self.recipe:
            check["recipe"] = self.recipe
        check["weights"] = precisions
        check["float_layers"] = sorted(n for n, t in precisions.items() if t in ("FLOAT32", "FLOAT16"))
        if self.family in ("int4", "weight_only_int4"):  # layers the int4 recipe could not make int4
            check["fallback_layers"] = {n: t for n, t in precisions.items() if t != "INT4"}
        return check


class LiteRTExporter(Exporter):
    """A LiteRT Quantizer recipe (or the first of `recipes` that verifies on the calibration
    images: channelwise int4, then blockwise where channelwise loses too much)."""

    suffix = ".tflite"
    folder = "tflite"

    backend = "litert"

    def __init__(self, name: str, family: str, recipes: tuple[str, ...], summary: str, *,
                 needs_calibration: bool = True, every_model: bool = False, replaces: str | None = None):
        self.name, self.family, self.recipes, self.summary = name, family, recipes, summary
        self.needs_calibration, self.every_model, self.replaces = needs_calibration, every_model, replaces

    def check(self) -> None:
        require()

    def export(self, model: Any, path: str, *, calibration: Any = None, num_calibration: int = 200,
               metadata: Any = None, float_layers: Sequence[str] = (), **options: Any) -> LiteRTArtifact:
        images = None
        if calibration is not None:  # arrays or datasets of images or (images, labels), batched or not
            generate = _representative(calibration, model.input_shape, num_calibration, self.name)
            images = np.concatenate([sample[0] for sample in generate()])
        float_blob = to_tflite_bytes(model, "float32", sparse=False)
        tensors = float_layer_tensors(float_blob, weighted_layers(model), float_layers) if float_layers else []
        chosen = None
        for recipe_name in self.recipes:
            blob = quantize_tflite(float_blob, recipe_name, images, tensors)
            chosen = (recipe_name, blob)
            if images is None or len(self.recipes) == 1 or self._verifies(blob, model, images[:64]):
                break
        recipe_name, blob = chosen
        if metadata is not None:
            from tfimgopt.export.metadata import add_metadata

            blob = add_metadata(blob, metadata)
        _io.write_bytes(path, blob)
        artifact = LiteRTArtifact(path, self.name, self.family)
        artifact.recipe = recipe_name
        return artifact

    def _verifies(self, blob: bytes, model: Any, images: np.ndarray) -> bool:
        from tfimgopt._litert import TFLiteRunner

        tolerance, agreement = CRITERIA[self.family]
        return check_outputs(TFLiteRunner(blob).predict(images), model.predict(images, verbose=0),
                             tolerance=tolerance, min_agreement=agreement, mode=self.name)["passed"]

    def open(self, path: str) -> LiteRTArtifact:
        return LiteRTArtifact(path, self.name, self.family)


for _exporter in (
    LiteRTExporter("int4", "int4", ("dynamic_wi4_afp32", "dynamic_wi4b32_afp32"),
                   "int4 weights (per channel; blockwise 32 where that verifies better), float activations: "
                   "LiteRT Quantizer"),
    LiteRTExporter("weight_only_int4", "weight_only_int4", ("weight_only_wi4_afp32",),
                   "int4 weights dequantized to float at load, float compute: LiteRT Quantizer"),
    # The converter's modes, made by LiteRT Quantizer instead: what `export.backend: litert` picks.
    LiteRTExporter("litert_dynamic", "dynamic", ("dynamic_wi8_afp32",), "dynamic (int8 weights) by LiteRT Quantizer",
                   needs_calibration=False, replaces="dynamic"),
    LiteRTExporter("litert_int8", "int8", ("static_wi8_ai8",), "full integer (float I/O) by LiteRT Quantizer",
                   every_model=True, replaces="int8"),
    LiteRTExporter("litert_int16x8", "int16x8", ("static_wi8_ai16",),
                   "int16 activations, int8 weights (float I/O) by LiteRT Quantizer", replaces="int16x8"),
):
    register_exporter(_exporter)
