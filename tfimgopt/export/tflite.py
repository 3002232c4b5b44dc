"""TFLite export (float32, dynamic, float16, int8, int16x8; sparse weight storage) and measurement in LiteRT."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from tfimgopt import _io
from tfimgopt._arrays import images_labels
from tfimgopt._litert import TFLiteRunner, run_isolated  # noqa: F401  (public here)
from tfimgopt._quiet import native_output
from tfimgopt.compat import keras, tf
from tfimgopt.errors import ConfigError, DataError, received
from tfimgopt.export.artifact import (  # noqa: F401  (TIE_MARGIN, top1_agreement: public here)
    TIE_MARGIN,
    Artifact,
    artifact_sizes,
    check_outputs,
    top1_agreement,
)
from tfimgopt.export.exporters import Exporter, register_exporter

MODES = ("float32", "dynamic", "float16", "int8", "int16x8")
# Modes calibrated on representative images (full-integer activations).
CALIBRATED = ("int8", "int16x8")
IO_TYPES = ("float32", "int8", "uint8")
# Stated criteria of verify_tflite, per mode. Float modes compare logits: max abs difference
# divided by max(1, largest |Keras logit|), and (float16, dynamic) the top-1 decisions too.
# float32 allows 1e-4: LiteRT (XNNPACK) folds BatchNorm and sums in a different order, and
# over MobileNetV2's ~50 layers that reached 1.1e-5 relative (measured), above 1e-5.
# float16 and dynamic range round weights (and, for dynamic, activations per batch), so their
# logits drift with depth and width: the bounds below sit above the largest drift measured
# on the zoo's models at 32-224 px (benchmarks/verify_tolerance.py, RESULTS.md), while a
# broken export (wrong weights, wrong input scaling) moves logits by O(1) and flips decisions.
# int16x8 (int16 activations, int8 weights) is compared like a float mode: its activations
# have 256x int8's resolution, so its logits stay close: 3e-3 relative on small_cnn calibrated
# on 120 images; 0.12 on tiny_cnn at 8 px calibrated on 32, where test activations beyond the
# calibrated range clip. The bound allows that; a broken export moves logits by O(1).
FLOAT_TOLERANCE = {"float32": 1e-4, "float16": 3e-2, "dynamic": 1e-1, "int16x8": 2e-1}
# Minimum top-1 agreement with Keras: float16/dynamic as a second check, int8 as the only one
# (its logits are quantized, so an exact comparison says nothing).
MIN_AGREEMENT = {"float32": 0.0, "float16": 0.95, "dynamic": 0.9, "int8": 0.95, "int16x8": 0.95}
# Pruned models store their weights sparsely (TFLite's EXPERIMENTAL_SPARSITY) when more than
# this fraction of the kernel weights is zero and the sparse file is the smaller one.
SPARSE_MIN_ZEROS = 0.3
INT8_MIN_AGREEMENT = MIN_AGREEMENT["int8"]
# Modes whose files can keep chosen layers in float (`export.float_layers`): float32 trivially,
# int8 through TensorFlow's selective quantization (calibrate, then quantize all but them).
SELECTIVE = ("float32", "int8")



def _representative(data: Any, input_shape: Sequence[int], samples: int,
                    mode: str = "int8") -> Callable[[], Iterable[list[np.ndarray]]]:
    """Turns a dataset of images or (images, labels) batches, or an array, into a generator."""
    if data is None:
        raise ConfigError(
            f"mode={mode!r} needs representative_data: 100-500 typical input images (an array or a "
            "tf.data.Dataset of images or (images, labels)) to calibrate activation ranges. "
            "Received: representative_data=None"
        )
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if isinstance(spec, tuple):
            data = data.map(lambda x, *_: x)
            spec = spec[0]
        if spec.shape.rank == len(input_shape) - 1:
            data = data.batch(1)
        images = np.concatenate([np.asarray(b) for b in data.unbatch().batch(64).take(-(-samples // 64))])
    else:
        images = np.asarray(data)
    images = images[:samples]
    expected = tuple(input_shape[1:])
    if images.ndim != len(input_shape) or tuple(images.shape[1:]) != expected:
        raise DataError(
            f"representative_data images must have shape (N, {', '.join(map(str, expected))}) to match the "
            f"model input. Received: shape={images.shape}"
        )
    if len(images) == 0:
        raise DataError("representative_data is empty. Received: 0 images")

    def generate():
        for image in images:
            yield [image[None].astype(np.float32)]

    return generate


def _converter(model: keras.Model) -> tf.lite.TFLiteConverter:
    """A converter for the model's inference function, with the same signature `from_keras_model` writes.

    `from_keras_model` serializes the whole Keras object graph to a temporary SavedModel,
    tracing every layer: 34 s for MobileNetV2 a0.35 at 96 px on 2 cores. A `tf.Module`
    holding only the weights and one serving function converts to the same flatbuffer
    (same size, identical outputs, `serving_default` signature with the model's input and
    output names) in 6-8 s (benchmarks/RESULTS.md, "export time").
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        return tf.lite.TFLiteConverter.from_keras_model(model)
    from tfimgopt.export.savedmodel import serving_module

    module = serving_module(model)
    return tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)


def to_tflite_bytes(
    model: keras.Model,
    mode: str = "float32",
    representative_data: Any = None,
    *,
    io_type: str = "float32",
    num_calibration: int = 200,
    sparse: bool | str = "auto",
    float_nodes: Sequence[str] = (),
) -> bytes:
    """Converts a tf_keras model to a TFLite flatbuffer (see `export_tflite`). `float_nodes`
    (int8 only): output tensor names of ops to leave in float (selective quantization)."""
    if float_nodes and mode != "int8":
        raise ConfigError(f"The converter leaves chosen layers in float in 'int8' mode only (its selective "
                          f"quantization); {mode!r} has none. {received('mode', mode)}")
    if sparse not in (True, False, "auto"):
        raise ConfigError(f"sparse must be True, False or 'auto'. {received('sparse', sparse)}")
    if sparse == "auto":
        if kernel_zeros(model) <= SPARSE_MIN_ZEROS:
            return to_tflite_bytes(model, mode, representative_data, io_type=io_type,
                                   num_calibration=num_calibration, sparse=False, float_nodes=float_nodes)
        dense, packed = (to_tflite_bytes(model, mode, representative_data, io_type=io_type,
                                         num_calibration=num_calibration, sparse=flag, float_nodes=float_nodes)
                         for flag in (False, True))
        return packed if len(packed) < len(dense) and _loads(packed) else dense
    if mode not in MODES:
        raise ConfigError(f"Unknown TFLite mode. Valid: {list(MODES)}. {received('mode', mode)}")
    if io_type not in IO_TYPES:
        raise ConfigError(f"Unknown io_type. Valid: {list(IO_TYPES)}. {received('io_type', io_type)}")
    if io_type != "float32" and mode != "int8":
        raise ConfigError(f"io_type={io_type!r} needs mode='int8'. {received('mode', mode)}")
    if not isinstance(num_calibration, int) or num_calibration < 1:
        raise ConfigError(f"num_calibration must be an int >= 1. {received('num_calibration', num_calibration)}")
    converter = _converter(model)
    optimizations = [] if mode == "float32" else [tf.lite.Optimize.DEFAULT]
    converter.optimizations = optimizations + ([tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparse else [])
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode in CALIBRATED:
        converter.representative_dataset = _representative(representative_data, model.input_shape, num_calibration,
                                                           mode)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8 if mode == "int8"
            else tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        if io_type != "float32":
            converter.inference_input_type = getattr(tf, io_type)
            converter.inference_output_type = getattr(tf, io_type)
    with warnings.catch_warnings():
        # The converter warns for QAT models whose input statistics it gets from the
        # representative data instead of a fake-quant node: expected, not a problem.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        with native_output():  # the converter's own stderr lines ("fully_quantize: 0, ...")
            if float_nodes:  # TensorFlow's selective quantization: calibrate, then quantize all but these
                # (its debugger builds a tf.lite.Interpreter, which warns that LiteRT replaces it)
                warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
                options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(float_nodes),
                                                                        fully_quantize=io_type != "float32")
                debugger = tf.lite.experimental.QuantizationDebugger(
                    converter=converter, debug_dataset=converter.representative_dataset, debug_options=options)
                return debugger.get_nondebug_quantized_model()
            return converter.convert()


def _loads(blob: bytes) -> bool:
    """Whether LiteRT (with its default XNNPACK delegate) prepares the model: it refuses some
    sparse int8 layouts ("failed to delegate FULLY_CONNECTED"), and such a file must not ship."""
    try:
        TFLiteRunner(blob)
    except DataError:
        return False
    return True


def kernel_zeros(model: keras.Model) -> float:
    """Fraction of exact zeros among the weights of rank >= 2 (kernels) of `model`."""
    kernels = [np.asarray(w) for w in model.get_weights() if np.ndim(w) >= 2]
    total = sum(k.size for k in kernels)
    return sum(int((k == 0).sum()) for k in kernels) / total if total else 0.0


def is_sparse(tflite_model: bytes | str | TFLiteRunner) -> bool:
    """True when the file stores some weights in TFLite's sparse format."""
    runner = tflite_model if isinstance(tflite_model, TFLiteRunner) else TFLiteRunner(tflite_model)
    return any(d.get("sparsity_parameters") for d in runner.interpreter.get_tensor_details())


def export_tflite(
    model: keras.Model,
    mode: str = "float32",
    representative_data: Any = None,
    path: str | None = None,
    *,
    io_type: str = "float32",
    num_calibration: int = 200,
    sparse: bool | str = "auto",
    metadata: Any = None,
) -> bytes:
    """Converts a model to TFLite and writes it atomically.

    Args:
        model: A tf_keras model (plain, stripped after pruning, or quantization-aware).
        mode: `"float32"`; `"dynamic"` (int8 weights, float activations); `"float16"`
            (float16 weights); `"int8"` (full integer: weights and activations);
            `"int16x8"` (int16 activations, int8 weights: TFLite's accuracy-safe integer
            mode; LiteRT's reference kernels run it, slower than int8 on CPUs).
        representative_data: For `"int8"` and `"int16x8"`: images (array or `tf.data.Dataset` of images
            or `(images, labels)`), of which `num_calibration` are used to calibrate.
        path: Where to write the `.tflite` file; nothing is written if None.
        io_type: For `"int8"`: `"float32"` (quantize inside the model), `"int8"` or
            `"uint8"` input and output tensors, for integer-only devices.
        num_calibration: Calibration images used (100-500 is typical).
        sparse: Store weights in TFLite's sparse format (`EXPERIMENTAL_SPARSITY`).
            `"auto"`: for a model with more than 30% zeros in its kernels (a pruned one),
            convert both ways and keep the smaller file, if LiteRT runs it (it refuses
            some sparse int8 layers); outputs are the same.
        metadata: A `tfimgopt.export.ModelMetadata` (label names, input normalization,
            name, version) to pack into the file, so MediaPipe Tasks' `ImageClassifier`
            and the TFLite Task Library load it as-is.

    Returns:
        The flatbuffer bytes.

    Raises:
        ConfigError: unknown mode or io_type, or int8 without representative data.
        DataError: representative data of the wrong shape, or empty.

    Example:
        >>> from tfimgopt.export import export_tflite
        >>> blob = export_tflite(model, "int8", representative_data=images, path="model_int8.tflite")
    """
    blob = to_tflite_bytes(model, mode, representative_data, io_type=io_type, num_calibration=num_calibration,
                           sparse=sparse)
    if metadata is not None:
        from tfimgopt.export.metadata import add_metadata

        blob = add_metadata(blob, metadata)
    if path is not None:
        _io.write_bytes(path, blob)
    return blob


def detect_mode(model: bytes | str) -> str:
    """Tells which of `MODES` a TFLite model was exported with, from its ops and tensors."""
    runner = model if isinstance(model, TFLiteRunner) else TFLiteRunner(model)
    ops = op_names(runner)
    dtypes = {np.dtype(d["dtype"]) for d in runner.interpreter.get_tensor_details()}
    if np.dtype(np.int16) in dtypes and "QUANTIZE" in ops:
        return "int16x8"  # int16 activations (the float input is quantized to int16 once)
    if "QUANTIZE" in ops or runner.input_dtype != np.float32:
        return "int8"  # full integer: the float input is quantized once, at the start
    if np.dtype(np.float16) in dtypes:
        return "float16"
    if np.dtype(np.int8) in dtypes:
        return "dynamic"  # int8 weights, float activations
    return "float32"


def verify_tflite(
    tflite_model: bytes | str,
    keras_model: keras.Model,
    inputs: Any,
    *,
    num_samples: int = 32,
    tolerance: float | None = None,
    min_agreement: float = INT8_MIN_AGREEMENT,
) -> dict[str, Any]:
    """Checks a TFLite model against the Keras model it came from, in LiteRT.

    Float models (float32, float16, dynamic range) must match the Keras logits: the max
    abs difference divided by max(1, largest |logit|) must stay within `tolerance`
    (default per mode: `FLOAT_TOLERANCE`), and float16/dynamic models must also agree on
    the top-1 class for `MIN_AGREEMENT[mode]` of the inputs. Full-integer models must agree on the top-1
    class for at least `min_agreement` of the inputs: their logits are quantized, so an
    exact comparison says nothing. Top-1 agreement leaves out near-ties (inputs whose two
    largest Keras logits differ by less than `TIE_MARGIN` of the logit scale), where either
    class is a correct answer; with nothing but near-ties it is 1.

    Args:
        tflite_model: Flatbuffer bytes or a `.tflite` path.
        keras_model: The reference model.
        inputs: Images (array or dataset of images or `(images, labels)`).
        num_samples: How many inputs to compare.
        tolerance: Relative logit tolerance for float models.
        min_agreement: Minimum top-1 agreement for integer models.

    Returns:
        `{"mode", "max_abs_diff", "relative_diff", "top1_agreement", "near_ties",
        "num_samples", "passed", "criterion"}`.
    """
    images, _ = images_labels(inputs, num_samples)
    runner = TFLiteRunner(tflite_model)
    mode = detect_mode(runner)
    got = runner.predict(images)
    want = keras_model.predict(images.astype(np.float32), verbose=0)
    if mode == "int8":
        return check_outputs(got, want, tolerance=None, min_agreement=min_agreement, mode=mode)
    return check_outputs(got, want, tolerance=tolerance if tolerance is not None else FLOAT_TOLERANCE[mode],
                         min_agreement=MIN_AGREEMENT[mode], mode=mode)


def op_names(model: bytes | str | TFLiteRunner) -> set[str]:
    """The set of TFLite builtin op names a model uses."""
    runner = model if isinstance(model, TFLiteRunner) else TFLiteRunner(model)
    return {op["op_name"] for op in runner.interpreter._get_ops_details()}


def tensor_dtypes(tflite_model: bytes | str) -> dict[str, int]:
    """Counts the model's tensors by dtype name (e.g. to prove an int8 model is int8)."""
    runner = TFLiteRunner(tflite_model)
    counts: dict[str, int] = {}
    for detail in runner.interpreter.get_tensor_details():
        name = np.dtype(detail["dtype"]).name
        counts[name] = counts.get(name, 0) + 1
    return counts


def file_sizes(blob_or_path: bytes | str) -> dict[str, int]:
    """Size in bytes of a model file, raw and gzip-compressed (what a download costs)."""
    return artifact_sizes(blob_or_path)


@contextlib.contextmanager
def _temporary_file(blob: bytes):
    """A `.tflite` file holding `blob`, removed on exit (for APIs that take bytes or a path)."""
    fd, path = tempfile.mkstemp(suffix=".tflite", prefix="tfimgopt-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        yield path
    finally:
        os.unlink(path)


def evaluate_tflite(
    tflite_model: bytes | str,
    dataset: Any,
    *,
    num_threads: int = 1,
    latency_runs: int = 100,
    warmup: int = 10,
) -> dict[str, Any]:
    """Accuracy, latency and size of a TFLite model in the LiteRT interpreter.

    Args:
        tflite_model: Flatbuffer bytes or a `.tflite` path.
        dataset: Labelled `(images, labels)` batches (sparse or one-hot labels).
        num_threads: Interpreter threads (stated in the result; 1 mimics a phone core).
        latency_runs: Timed single-image invokes (after `warmup` untimed ones).
        warmup: Untimed invokes first.

    Returns:
        `{"accuracy", "num_examples", "latency_ms_median", "latency_ms_p90",
        "num_threads", "size_bytes", "gzip_bytes"}`.
    """
    if isinstance(tflite_model, bytes | bytearray):
        with _temporary_file(tflite_model) as path:
            return evaluate_tflite(path, dataset, num_threads=num_threads, latency_runs=latency_runs, warmup=warmup)
    return TFLiteArtifact(tflite_model).measure(dataset, num_threads=num_threads, latency_runs=latency_runs,
                                                warmup=warmup)


def compare(results: dict[str, dict[str, Any]], baseline: str = "float32") -> dict[str, Any]:
    """One table of every variant against the baseline: accuracy, size, latency, sparsity.

    Args:
        results: `{variant name: evaluate_tflite result (+ optional "sparsity")}`.
        baseline: The variant the ratios are relative to.

    Returns:
        `{"baseline": name, "rows": [...], "markdown": table}`; rows carry accuracy,
        accuracy delta (points), sizes, size ratios (baseline / variant: >1 is smaller),
        latency and latency ratio (variant / baseline: >1 is slower), sparsity.
    """
    if baseline not in results:
        raise ConfigError(f"baseline must be one of the variants {sorted(results)}. {received('baseline', baseline)}")
    base = results[baseline]
    rows = []
    for name, r in results.items():
        rows.append({
            "variant": name,
            "accuracy": r["accuracy"],
            "accuracy_delta_points": 100.0 * (r["accuracy"] - base["accuracy"]),
            "size_bytes": r["size_bytes"],
            "gzip_bytes": r["gzip_bytes"],
            "size_ratio": base["size_bytes"] / r["size_bytes"],
            "gzip_ratio": base["gzip_bytes"] / r["gzip_bytes"],
            "latency_ms_median": r["latency_ms_median"],
            "latency_ratio": r["latency_ms_median"] / base["latency_ms_median"],
            "sparsity": r.get("sparsity"),
        })
    header = (
        "| variant | accuracy | delta (pts) | size KiB | gzip KiB | smaller (x) | gzip smaller (x) "
        "| latency ms | latency ratio | sparsity |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [header]
    for row in rows:
        sparsity = "" if row["sparsity"] is None else f"{row['sparsity']:.0%}"
        lines.append(
            f"| {row['variant']} | {row['accuracy']:.4f} | {row['accuracy_delta_points']:+.2f} | "
            f"{row['size_bytes'] / 1024:,.1f} | {row['gzip_bytes'] / 1024:,.1f} | {row['size_ratio']:.2f} | "
            f"{row['gzip_ratio']:.2f} | {row['latency_ms_median']:.3f} | {row['latency_ratio']:.2f} | {sparsity} |"
        )
    return {"baseline": baseline, "rows": rows, "markdown": "\n".join(lines)}


class TFLiteArtifact(Artifact):
    """A `.tflite` file, run in the LiteRT interpreter (in a child process when untrusted).

    Its verification criterion follows the mode read from the file (`detect_mode`):
    `FLOAT_TOLERANCE` and `MIN_AGREEMENT` above.
    """

    untrusted_parser = True

    def __init__(self, path: str | os.PathLike, mode: str = "tflite"):
        super().__init__(path, mode)

    def runner(self, num_threads: int = 1) -> TFLiteRunner:
        return TFLiteRunner(self.path, num_threads)

    def predict_isolated(self, images: np.ndarray, plugins: tuple[str, ...] = ()) -> np.ndarray:
        return run_isolated(self.path, images)  # LiteRT alone in the child: no TensorFlow import

    def verify(self, model: keras.Model, images: Any, *, num_samples: int = 64) -> dict[str, Any]:
        return verify_tflite(self.path, model, images, num_samples=num_samples)

    def read_bytes(self) -> bytes:
        with open(self.path, "rb") as f:
            return f.read()

    def layer_errors(self, model: keras.Model, images: np.ndarray, reference: bytes | None = None
                     ) -> list[dict[str, Any]] | None:
        """Where this file loses accuracy, layer by layer, against the float32 export of
        `model` (`reference`, or converted here) (`tfimgopt.export.debugger`); None for a
        float32 file."""
        blob = self.read_bytes()
        if detect_mode(blob) == "float32":
            return None
        from tfimgopt.export.debugger import layer_errors
        from tfimgopt.export.layers import weighted_layers

        reference = reference if reference is not None else to_tflite_bytes(model, "float32", sparse=False)
        return layer_errors(reference, blob, np.asarray(images, np.float32), weighted_layers(model))


@dataclasses.dataclass(frozen=True, repr=False)
class TFLiteExporter(Exporter):
    """One TFLite conversion mode (see `export_tflite`), checked in LiteRT."""

    name: str
    mode: str
    summary: str
    needs_calibration: bool = False
    every_model: bool = False
    suffix: str = ".tflite"
    folder: str = "tflite"
    backend: str = "converter"

    @property
    def keeps_float_layers(self) -> bool:
        return self.mode in SELECTIVE

    def export(self, model: keras.Model, path: str, *, calibration: Any = None, num_calibration: int = 200,
               metadata: Any = None, float_layers: Sequence[str] = (), **options: Any) -> TFLiteArtifact:
        float_nodes: list[str] = []
        if float_layers and self.mode not in SELECTIVE:
            raise ConfigError(
                f"The converter cannot keep chosen layers in float in {self.mode!r} mode (it can in "
                f"{list(SELECTIVE)}): export.float_layers needs export.backend: litert there, or LiteRT Quantizer's "
                f"modes (int4, weight_only_int4). Received: float_layers={list(float_layers)!r}")
        if float_layers and self.mode != "float32":
            from tfimgopt.export.layers import float_layer_tensors, weighted_layers

            float_nodes = float_layer_tensors(to_tflite_bytes(model, "float32", sparse=False),
                                              weighted_layers(model), float_layers)
        blob = to_tflite_bytes(model, self.mode, calibration if self.needs_calibration else None,
                               num_calibration=num_calibration, float_nodes=float_nodes)
        if metadata is not None:
            from tfimgopt.export.metadata import add_metadata

            blob = add_metadata(blob, metadata)
        _io.write_bytes(path, blob)
        return TFLiteArtifact(path, self.name)

    def open(self, path: str) -> TFLiteArtifact:
        return TFLiteArtifact(path, self.name)


for _exporter in (
    TFLiteExporter("float32", "float32", "float weights and activations: the reference", every_model=True),
    TFLiteExporter("dynamic", "dynamic", "int8 weights, float activations (dynamic range)"),
    TFLiteExporter("float16", "float16", "float16 weights (GPU delegates)"),
    TFLiteExporter("int8", "int8", "full integer, calibrated on training images", needs_calibration=True,
                   every_model=True),
    TFLiteExporter("int16x8", "int16x8", "int16 activations, int8 weights: the accuracy-safe integer mode",
                   needs_calibration=True),
):
    register_exporter(_exporter)
