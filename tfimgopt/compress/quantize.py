"""Quantization-aware training through TFMOT, sparsity-preserving for pruned models."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from tfimgopt.compat import keras, tf
from tfimgopt.compress._tfmot import tfmot
from tfimgopt.compress.prune import check_graph_model, copy_weights, matches_layer
from tfimgopt.errors import QuantizationError

logger = logging.getLogger(__name__)

_QUANT = tfmot.quantization.keras
_REGISTRY = _QUANT.default_8bit.Default8BitQuantizeRegistry()


# TFMOT folds these into the preceding convolution during quantize_apply (Conv-BN-ReLU).
_FOLDED = (keras.layers.BatchNormalization,)


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
    skip: Sequence[str | type] = (),
    input_range: tuple[float, float] = (0.0, 255.0),
) -> keras.Model:
    """Makes a model quantization-aware (fake-quantized) for fine-tuning, via TFMOT.

    Layers TFMOT's default 8-bit scheme does not know and that hold no weights (e.g.
    the input `Rescaling`) are left in float and logged; the TFLite converter still
    quantizes their activations. A layer with weights that TFMOT cannot quantize is an
    error naming it; skip it (it stays float) or annotate it yourself with a
    `tfmot.quantization.keras.QuantizeConfig`.

    Args:
        model: A Sequential or functional tf_keras model (plain, or stripped after pruning).
        preserve_sparsity: Use the prune-preserving scheme (PQAT) so zeros stay zero.
            None decides by measurement: on when more than 30% of the kernels are zero.
        skip: Layer names or types to leave unquantized.
        input_range: Value range of the model's input, used to initialise the input
            quantizer. TFMOT starts every range at [-6, 6] and adapts it slowly, which
            would clip images in [0, 255] for the whole fine-tuning.

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

    model = as_tf_keras(model, "quantize_aware")
    check_graph_model(model, "quantize_aware")
    if preserve_sparsity is None:
        from tfimgopt.compress.prune import sparsity_report

        preserve_sparsity = sparsity_report(model)["overall"] > 0.3
    skip_names: set[str] = set()
    asked_names: set[str] = set()
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if matches_layer(layer, skip):
            skip_names.add(layer.name)
            asked_names.add(layer.name)
        elif not _REGISTRY.supports(layer) and not isinstance(layer, _FOLDED):
            if layer.weights:
                raise QuantizationError(
                    f"TFMOT's 8-bit scheme cannot quantize layer {layer.name!r} ({type(layer).__name__}). "
                    f"Leave it in float with quantize_aware(model, skip=[{layer.name!r}]), or annotate it "
                    "with tfmot.quantization.keras.quantize_annotate_layer(layer, quantize_config=...). "
                    f"Received: layer={layer.name!r}"
                )
            skip_names.add(layer.name)
            logger.info("QAT: %s (%s) has no weights and stays float", layer.name, type(layer).__name__)

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
    copy_weights(model, annotated)
    scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme() if preserve_sparsity else None
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
    epochs: int = 1,
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
        The fine-tuned quantization-aware model.
    """
    from tfimgopt.training import train

    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        qat = quantize_aware(model, **qat_kwargs)
    history = train(qat, train_ds, val_ds, epochs, learning_rate=learning_rate, strategy=strategy,
                    work_dir=work_dir, jit_compile=jit_compile, verbose=verbose)
    return history.model
