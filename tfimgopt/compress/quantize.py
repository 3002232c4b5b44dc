"""Quantization-aware training through TFMOT, sparsity-preserving for pruned models."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from tfimgopt.compat import keras, tf
from tfimgopt.compress._tfmot import tfmot
from tfimgopt.compress.prune import check_graph_model, copy_weights, matches_layer
from tfimgopt.compress.techniques import EXPORT_MODEL, CompressResult, Technique, register_technique
from tfimgopt.errors import ConfigError, QuantizationError, received

logger = logging.getLogger(__name__)

_QUANT = tfmot.quantization.keras
_REGISTRY = _QUANT.default_8bit.Default8BitQuantizeRegistry()


# Not in TFMOT's registry, yet quantize_apply's layout transforms handle them: BatchNormalization
# folds into the preceding convolution (Conv-BN-ReLU); SeparableConv2D is split into a
# DepthwiseConv2D and a Conv2D with a fake-quant between them (SeparableConvQuantize).
_REWRITTEN = (keras.layers.BatchNormalization, keras.layers.SeparableConv2D)


class FloatPassThrough(_QUANT.QuantizeConfig):
    """Leaves a layer in float: no weight, activation or output quantizers.

    Used for weightless layers TFMOT does not know (e.g. `Rescaling`): annotating them
    explicitly stops TFMOT from trying to add an output quantizer it has no config for.
    """

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {}


class RescaleOutputQuantized(FloatPassThrough):
    """Quantizes only the output of a `Rescaling` layer (8-bit, asymmetric).

    Without a fake-quant after the input rescaling, the TFLite converter gives the
    rescaled tensor the raw input's [0, 255] range, and a full-int8 model collapses.
    """

    def get_output_quantizers(self, layer):
        return [_QUANT.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                         narrow_range=False)]


def quantize_aware(
    model: keras.Model,
    *,
    preserve_sparsity: bool | None = None,
    preserve: Sequence[str] | None = None,
    skip: Sequence[str | type] = (),
    input_range: tuple[float, float] = (0.0, 255.0),
    calibration_data: Any = None,
) -> keras.Model:
    """Makes a model quantization-aware (fake-quantized) for fine-tuning, via TFMOT.

    Layers TFMOT's default 8-bit scheme does not know and that hold no trainable weights
    (e.g. the input `Rescaling`, or EfficientNet's `Normalization` with its constant mean and
    variance) are left in float and logged; the TFLite converter still quantizes their
    activations. A layer with trainable weights that TFMOT cannot quantize is an error
    naming it; skip it (it stays float) or annotate it yourself with a
    `tfmot.quantization.keras.QuantizeConfig`.

    Args:
        model: A Sequential or functional tf_keras model (plain, or stripped after pruning).
        preserve_sparsity: Deprecated: `preserve=("sparsity",)` (True) or `preserve=()`
            (False) says the same; a DeprecationWarning names the replacement.
        preserve: What fine-tuning must keep, any of `PRESERVE`: `"sparsity"` (zeros stay
            zero: PQAT), `"clusters"` (each kernel keeps its clustered values: CQAT), both
            (PCQAT, TFMOT's collaborative-optimization chain). None decides by
            measurement: sparsity as above, clusters when a kernel of 512+ weights holds at
            most 64 distinct values (a model from `cluster`; trained kernels never do).
        skip: Layer names or types to leave unquantized.
        input_range: Value range of the model's input, used to initialise the input
            quantizer. TFMOT starts every range at [-6, 6] and adapts it slowly, which
            would clip images in [0, 255] for the whole fine-tuning.
        calibration_data: Images (array, or dataset of images or `(images, labels)`
            batches; the first 256 are used). Every activation range starts at what the
            float model produces on them instead of TFMOT's [-6, 6], which its moving
            average (decay 0.999 per step) leaves nearly unchanged over a short fine-tuning;
            weight ranges are set from the weights, as a training step would.
            `quantize_and_finetune` passes its training data.

    Returns:
        A new quantization-aware model with the same weights; compile and fit it.

    Raises:
        ConfigError: for a subclassed or Keras 3 model.
        QuantizationError: for a layer with weights that TFMOT cannot quantize.

    Example:
        >>> from tfimgopt.compress import quantize_aware
        >>> from tfimgopt.models import create_model
        >>> qat = quantize_aware(create_model("small_cnn", (32, 32, 1), 10))
    """
    from tfimgopt.keras3 import as_tf_keras

    if preserve_sparsity is not None:
        import warnings

        warnings.warn(f"quantize_aware(preserve_sparsity={preserve_sparsity}) is deprecated: pass "
                      f"preserve={('sparsity',) if preserve_sparsity else ()}.", DeprecationWarning, stacklevel=2)
    model = as_tf_keras(model, "quantize_aware")
    check_graph_model(model, "quantize_aware")
    preserve = _preserved(model, preserve, preserve_sparsity)
    skip_names: set[str] = set()
    asked_names: set[str] = set()
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if matches_layer(layer, skip):
            skip_names.add(layer.name)
            asked_names.add(layer.name)
        elif not _REGISTRY.supports(layer) and not isinstance(layer, _REWRITTEN):
            if any(w.trainable for w in layer.weights):  # not frozen constants like a Normalization's mean
                raise QuantizationError(
                    f"TFMOT's 8-bit scheme cannot quantize layer {layer.name!r} ({type(layer).__name__}). "
                    f"Leave it in float with quantize_aware(model, skip=[{layer.name!r}]), or annotate it "
                    "with tfmot.quantization.keras.quantize_annotate_layer(layer, quantize_config=...). "
                    f"Received: layer={layer.name!r}"
                )
            skip_names.add(layer.name)
            logger.info("QAT: %s (%s) has no trainable weights and stays float", layer.name, type(layer).__name__)

    def annotate(layer: keras.layers.Layer) -> keras.layers.Layer:
        fresh = layer.__class__.from_config(layer.get_config())
        if isinstance(layer, keras.layers.InputLayer):
            return fresh
        if isinstance(layer, keras.layers.Rescaling) and layer.name not in asked_names:
            return _QUANT.quantize_annotate_layer(fresh, quantize_config=RescaleOutputQuantized())
        if layer.name in skip_names:
            return _QUANT.quantize_annotate_layer(fresh, quantize_config=FloatPassThrough())
        return _QUANT.quantize_annotate_layer(fresh)

    annotated = keras.models.clone_model(model, clone_function=annotate)
    _reserve_auto_names(model)
    copy_weights(model, annotated)
    combine = tfmot.experimental.combine
    if "clusters" in preserve:
        scheme = combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity="sparsity" in preserve)
    else:
        scheme = combine.Default8BitPrunePreserveQuantizeScheme() if "sparsity" in preserve else None
    custom = {"FloatPassThrough": FloatPassThrough, "RescaleOutputQuantized": RescaleOutputQuantized}
    with _QUANT.quantize_scope(custom):
        try:
            qat = _QUANT.quantize_apply(annotated) if scheme is None else _QUANT.quantize_apply(annotated, scheme)
        except (RuntimeError, ValueError) as err:
            # e.g. a BatchNormalization that does not follow a convolution, so cannot be folded.
            raise QuantizationError(
                f"TFMOT could not quantize the model: {err} Leave the layer in float with "
                "quantize_aware(model, skip=[name]) or annotate it with a QuantizeConfig."
            ) from None
    if calibration_data is not None:
        _calibrate_ranges(qat, model, calibration_data)
    low, high = input_range
    at_input = True  # only the Rescaling layers right after the input see the known image range
    for layer in qat.layers:
        inner = getattr(layer, "layer", None)
        if type(layer).__name__ == "QuantizeLayer":
            _set_range(layer, low, high)
        elif isinstance(inner, keras.layers.Rescaling) and at_input:
            # The rescaled range is known exactly: no need to wait for the moving average.
            low, high = sorted((low * inner.scale + inner.offset, high * inner.scale + inner.offset))
            _set_range(layer, low, high)
        elif not isinstance(layer, keras.layers.InputLayer):
            at_input = False  # a Rescaling deeper in the network (e.g. inside hard_silu) learns its range
    return qat


_ACTIVATION_RANGES = ("output_min", "output_max", "post_activation_min", "post_activation_max")


PRESERVE = ("sparsity", "clusters")


def _preserved(model: keras.Model, preserve: Sequence[str] | None, preserve_sparsity: bool | None) -> tuple[str, ...]:
    """What QAT must keep: `preserve` as given (checked), else measured on the model."""
    if preserve is not None:
        if isinstance(preserve, str) or not all(p in PRESERVE for p in preserve):
            raise ConfigError(f"preserve takes a sequence of {list(PRESERVE)} (or None to measure). "
                              f"{received('preserve', preserve)}")
        return tuple(p for p in PRESERVE if p in preserve)
    from tfimgopt.compress.cluster import unique_values
    from tfimgopt.compress.prune import sparsity_report

    sparse = sparsity_report(model)["overall"] > 0.3 if preserve_sparsity is None else bool(preserve_sparsity)
    big = {layer.name for layer in model.layers if any(
        w.shape.num_elements() >= 512 for w in layer.weights if _var_name(w) in ("kernel", "depthwise_kernel"))}
    counts = unique_values(model)
    clustered = any(counts.get(name, 65) <= 64 for name in big)  # never so few values unless clustered
    chosen = tuple(p for p, on in (("sparsity", sparse), ("clusters", clustered)) if on)
    if chosen:
        logger.info("QAT: preserving %s (measured on the model)", " and ".join(chosen))
    return chosen


def _var_name(var: Any) -> str:
    return var.name.split("/")[-1].split(":")[0]


def _split_halves(wrapper: keras.layers.Layer, separables: list) -> tuple[str, Any] | None:
    """For a layer TFMOT made by splitting a SeparableConv2D: `("depthwise" | "pointwise", that layer)`,
    found by its kernel, which TFMOT copied unchanged."""
    kernels = [v.numpy() for v in wrapper.weights if _var_name(v) in ("kernel", "depthwise_kernel")]
    for sep in separables:
        for half, weight in (("depthwise", sep.depthwise_kernel), ("pointwise", sep.pointwise_kernel)):
            if kernels and kernels[0].shape == weight.shape and np.array_equal(kernels[0], weight.numpy()):
                return half, sep
    return None


def _calibrate_ranges(qat: keras.Model, model: keras.Model, data: Any, limit: int = 256) -> None:
    """Sets each activation quantizer's range to what the float model computes there on `data`
    (widened to hold 0, as TFMOT's ranges do), the halves of a split SeparableConv2D included."""
    from tfimgopt._arrays import images_labels

    images, _ = images_labels(data, limit)
    # A fresh copy: layers shared with other models (strip reuses them) have their first output elsewhere.
    fresh = keras.models.clone_model(model)
    fresh.set_weights(model.get_weights())
    names = {layer.name for layer in fresh.layers}
    separables = [layer for layer in fresh.layers if isinstance(layer, keras.layers.SeparableConv2D)]
    targets = []  # (wrapper, float tensor, the SeparableConv2D whose depthwise half it feeds or None)
    for wrapper in qat.layers:
        if not any(_var_name(v) in _ACTIVATION_RANGES for v in wrapper.weights):
            continue
        inner = getattr(getattr(wrapper, "layer", None), "name", None)
        if inner in names:
            targets.append((wrapper, fresh.get_layer(inner).output, None))
        elif (found := _split_halves(wrapper, separables)) is not None:
            half, sep = found
            tensor = sep.output if half == "pointwise" else sep.input
            targets.append((wrapper, tensor, sep if half == "depthwise" else None))
    if targets:
        probe = keras.Model(fresh.inputs, [tensor for _, tensor, _ in targets])
        # Called eagerly in chunks: tracing a 200-layer model for `predict` costs more than this.
        chunks = [probe(images[i:i + 64].astype(np.float32), training=False) for i in range(0, len(images), 64)]
        chunks = [c if isinstance(c, list) else [c] for c in chunks]
        outputs = [np.concatenate([np.asarray(c[j]) for c in chunks]) for j in range(len(targets))]
        for (wrapper, _, sep), values in zip(targets, outputs, strict=True):
            if sep is not None:  # the depthwise half's output, from the separable layer's input
                values = tf.nn.depthwise_conv2d(
                    values, sep.depthwise_kernel, (1, *sep.strides, 1), sep.padding.upper(),
                    dilations=sep.dilation_rate).numpy()
            low, high = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
            for var in wrapper.weights:
                name = _var_name(var)
                if name in _ACTIVATION_RANGES and var.shape.rank == 0:
                    var.assign(low if name.endswith("_min") else high)
    # Weight ranges too: TFMOT sets them from the weights only in a training step, and until then
    # they hold their initial [-6, 6]. Its own quantizers, called as a training step calls them.
    for layer in qat.layers:
        for weight, quantizer, quantizer_vars in getattr(layer, "_weight_vars", []):
            quantizer(weight, training=True, weights=quantizer_vars)
    logger.info("QAT: %d activation ranges set from %d calibration images", len(targets), len(images))


def _reserve_auto_names(model: keras.Model) -> None:
    """TFMOT's SeparableConvQuantize gives its new DepthwiseConv2D/Conv2D automatic names
    ("conv2d", "conv2d_1"...). In a model that already has such names (one converted from
    Keras 3, or built in another session) two layers would share a name and TFMOT would wire
    the wrong ones together. Move tf_keras's name counters past the names in use."""
    from tfimgopt._upstream import name_counters

    uids = name_counters()
    names = [layer.name for layer in model.layers]
    for prefix in ("conv2d", "depthwise_conv2d"):
        used = [0 if name == prefix else int(name[len(prefix) + 1:]) for name in names
                if name == prefix or re.fullmatch(rf"{prefix}_\d+", name)]
        if used:
            uids[("", prefix)] = max(uids[("", prefix)], max(used) + 1)


def _set_range(layer: keras.layers.Layer, low: float, high: float) -> None:
    for var in layer.weights:
        name = var.name.split("/")[-1].split(":")[0]
        if name.endswith("_min") and var.shape.rank == 0:
            var.assign(float(low))
        elif name.endswith("_max") and var.shape.rank == 0:
            var.assign(float(high))


def quantize_and_finetune(
    model: keras.Model,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset | None = None,
    epochs: int = 2,
    *,
    learning_rate: float = 1e-4,
    work_dir: str | None = None,
    strategy: tf.distribute.Strategy | None = None,
    jit_compile: bool | None = None,
    verbose: int | str = "auto",
    **qat_kwargs: Any,
) -> keras.Model:
    """`quantize_aware` built in `strategy`'s scope, then fine-tuned with the shared loop.

    Resumes from `work_dir` backups like every tfimgopt training path. Export the result
    with `export_tflite(qat_model, "int8", representative_data=...)`.

    Returns:
        A `CompressResult`: the fine-tuned quantization-aware model and `{"epochs",
        "preserve", "sparsity"}` (the kernel sparsity it started from and keeps).
    """
    from tfimgopt.training import train

    strategy = strategy or tf.distribute.get_strategy()
    qat_kwargs.setdefault("calibration_data", train_ds)
    with strategy.scope():
        qat = quantize_aware(model, **qat_kwargs)
    history = train(qat, train_ds, val_ds, epochs, learning_rate=learning_rate, strategy=strategy,
                    work_dir=work_dir, jit_compile=jit_compile, verbose=verbose)
    from tfimgopt.compress.prune import sparsity_report

    return CompressResult(history.model, {"epochs": epochs, "preserve": list(qat_kwargs.get("preserve") or []),
                                          "sparsity": sparsity_report(model)["overall"]})


# --- the run's technique ----------------------------------------------------------------------

#: The exporters a quantization-aware model is written with (full integer: what QAT trains for).
QAT_MODES = ("int8",)


def _qat_technique(model: keras.Model, train_ds: tf.data.Dataset, val_ds: tf.data.Dataset | None,
                   settings: dict[str, Any], *, work_dir: str | None = None, strategy=None) -> CompressResult:
    qat, report = quantize_and_finetune(model, train_ds, val_ds, max(1, settings["qat_epochs"]),
                                        learning_rate=settings["qat_learning_rate"], work_dir=work_dir,
                                        strategy=strategy)
    return CompressResult(qat, {"preserved_sparsity": report["sparsity"]})


register_technique(Technique(
    name="qat", summary="sparsity-preserving quantization-aware fine-tuning, exported as full int8", order=40,
    settings=("compress.qat_epochs", "compress.qat_learning_rate"), apply=_qat_technique,
    enabled=lambda c: c.compress.enabled and c.compress.qat_epochs > 0 and bool(set(QAT_MODES) & set(c.export.modes)),
    result=EXPORT_MODEL, export_modes=QAT_MODES, variant_tag="qat",
    describe=lambda r: f"sparsity-preserving, sparsity kept {r['preserved_sparsity']:.1%}",
))
