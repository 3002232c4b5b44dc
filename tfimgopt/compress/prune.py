"""Magnitude pruning through TFMOT: wrap, fine-tune on a schedule, strip, measure."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from tfimgopt.compat import keras, tf
from tfimgopt.compress._tfmot import tfmot
from tfimgopt.compress.techniques import CompressResult, Technique, register_technique
from tfimgopt.errors import ConfigError, received

logger = logging.getLogger(__name__)

SCHEDULES = ("polynomial", "constant")
_SPARSITY = tfmot.sparsity.keras


class Pruned(NamedTuple):
    """What `prune` returns: the wrapped model, the callbacks `fit` needs, and a plan."""

    model: keras.Model
    callbacks: list[keras.callbacks.Callback]
    pruned_layers: list[str]
    skipped_layers: dict[str, str]


def check_graph_model(model: Any, what: str) -> None:
    """Rejects what TFMOT cannot rewrite: anything but tf_keras Sequential/functional."""
    if isinstance(model, keras.Model) and getattr(model, "_is_graph_network", False):
        return
    if type(model).__module__.startswith("keras") and hasattr(model, "layers"):
        raise ConfigError(
            f"{what} needs a tf_keras model, and this is a Keras 3 model; convert it first with "
            f"tfimgopt.keras3.from_keras3(model). Received: model of type {type(model).__name__}"
        )
    raise ConfigError(
        f"{what} needs a Sequential or functional tf_keras model: TFMOT rewrites the layer graph, "
        "which a subclassed model does not expose. Rebuild the model with keras.Sequential or the "
        f"functional API. Received: model of type {type(model).__name__}"
    )


def prunable_weight_names(layer: keras.layers.Layer) -> list[str]:
    """The weights of `layer` that TFMOT's pruning really makes sparse (asked of TFMOT, not restated).

    TFMOT wraps more layers than it prunes: its registry maps DepthwiseConv2D and
    BatchNormalization to no weights, so those stay dense.
    """
    if isinstance(layer, _SPARSITY.PrunableLayer):
        return [w.name for w in layer.get_prunable_weights()]
    from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import PruneRegistry

    if not PruneRegistry.supports(layer):
        return []
    return list(PruneRegistry._weight_names(layer))  # noqa: SLF001 - TFMOT's own table, no public accessor


def _prunable_size(layer: keras.layers.Layer) -> int:
    """How many weights of `layer` pruning makes sparse."""
    if isinstance(layer, _SPARSITY.PrunableLayer):
        return int(sum(np.prod(w.shape) for w in layer.get_prunable_weights()))
    return int(sum(np.prod(getattr(layer, name).shape) for name in prunable_weight_names(layer)))


#: The default skip policy is dropped when the layers it skips hold this share of the prunable weights.
DEFAULT_SKIP_SHARE = 0.5


def _prunable_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if prunable_weight_names(layer)]


def matches_layer(layer: keras.layers.Layer, rules: Iterable[str | type]) -> bool:
    """True if a rule names the layer, names its class, or is a class it is an instance of."""
    for rule in rules:
        if isinstance(rule, str) and rule in (layer.name, type(layer).__name__):
            return True
        if isinstance(rule, type) and isinstance(layer, rule):
            return True
    return False


def _default_skips(candidates: list[keras.layers.Layer]) -> dict[str, str]:
    """The layers the default policy would like dense: the first convolution and the classifier."""
    skipped = {}
    convs = [layer for layer in candidates if isinstance(layer, keras.layers.Conv2D)]
    denses = [layer for layer in candidates if isinstance(layer, keras.layers.Dense)]
    if convs:
        skipped[convs[0].name] = "first convolution (default policy)"
    if denses and denses[-1] is candidates[-1]:
        skipped[denses[-1].name] = "classifier (default policy)"
    return skipped


def _default_plan(candidates: list[keras.layers.Layer]) -> dict[str, str]:
    """The default policy's dense layers, less the largest of them while they hold at least
    `DEFAULT_SKIP_SHARE` of the prunable weights: in a small model (TFMOT's tutorial CNN, a
    distilled student) the classifier holds most weights, so it is pruned, while a first
    convolution of a hundred weights stays dense (pruning it saves nothing and kills filters)."""
    skipped = _default_skips(candidates)
    sizes = {layer.name: _prunable_size(layer) for layer in candidates}
    total = max(sum(sizes.values()), 1)
    while skipped and sum(sizes[name] for name in skipped) / total >= DEFAULT_SKIP_SHARE:
        del skipped[max(skipped, key=sizes.__getitem__)]
    return skipped


def plan_pruning(
    model: keras.Model,
    skip: Sequence[str | type] | None = None,
    m_by_n: tuple[int, int] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Decides which layers get pruned and why the others do not.

    By default the first convolution (few weights, and every later feature depends on
    it) and the final classifier (small, and errors there hit accuracy directly) are
    left dense, unless they hold at least `DEFAULT_SKIP_SHARE` of the prunable weights (a
    small model such as TFMOT's tutorial CNN, where skipping them would leave little or
    nothing to prune): then the largest of them are pruned too, until the dense ones hold
    less, and a log line says which and why.
    Pass `skip` (layer names or types, `()` for none) to choose yourself.

    Returns:
        `(pruned layer names, {skipped layer name: reason})`.
    """
    candidates = _prunable_layers(model)
    skipped: dict[str, str] = {}
    if skip is None:
        skipped = _default_plan(candidates)
    else:
        for layer in candidates:
            if matches_layer(layer, skip):
                skipped[layer.name] = "skipped by request"
    if m_by_n is not None:
        n = m_by_n[1]
        for layer in candidates:
            channels_in = layer.kernel.shape[-2]
            if layer.name not in skipped and (channels_in % n or isinstance(layer, keras.layers.DepthwiseConv2D)):
                skipped[layer.name] = f"{channels_in} input channels: not divisible into blocks of {n}"
    pruned = [layer.name for layer in candidates if layer.name not in skipped]
    return pruned, skipped


def prune(
    model: keras.Model,
    target_sparsity: float = 0.8,
    *,
    schedule: str = "polynomial",
    begin_step: int = 0,
    end_step: int = 1000,
    frequency: int = 100,
    initial_sparsity: float = 0.0,
    m_by_n: tuple[int, int] | None = None,
    skip: Sequence[str | type] | None = None,
    log_dir: str | None = None,
) -> Pruned:
    """Wraps a model for magnitude pruning (TFMOT `prune_low_magnitude`), layer by layer.

    Train the returned model with the returned callbacks (they advance the pruning
    step), then call `strip` to get a plain model with the zeros baked in.

    Args:
        model: A Sequential or functional tf_keras model.
        target_sparsity: Fraction of zeros to reach in each pruned layer, in [0, 1).
        schedule: `"polynomial"` (ramps from `initial_sparsity` to the target between
            `begin_step` and `end_step`) or `"constant"` (target from `begin_step`).
        begin_step: Training step at which pruning starts.
        end_step: Step at which the polynomial ramp reaches the target.
        frequency: Steps between mask updates.
        initial_sparsity: Starting sparsity of the polynomial ramp.
        m_by_n: Structured sparsity such as `(2, 4)`: 2 zeros in every 4 consecutive
            input-channel weights (what sparse tensor cores accelerate); then
            `target_sparsity` is implied (m / n). Layers whose input channels do not
            split into blocks of n are left dense and reported.
        skip: Layer names or types to leave dense; None applies the default policy
            (first convolution and classifier); `()` prunes every prunable layer.
        log_dir: Write TensorBoard pruning summaries here.

    Returns:
        `Pruned(model, callbacks, pruned_layers, skipped_layers)`.

    Raises:
        ConfigError: subclassed/Keras 3 model, sparsity outside [0, 1), end_step <=
            begin_step, unknown schedule, bad m_by_n, or no layer left to prune.

    Example:
        >>> from tfimgopt.compress import prune, strip
        >>> from tfimgopt.models import create_model
        >>> model = create_model("small_cnn", (32, 32, 1), 10)
        >>> pruned = prune(model, 0.8, end_step=500)
        >>> # pruned.model.compile(...); pruned.model.fit(..., callbacks=pruned.callbacks)
    """
    from tfimgopt.keras3 import as_tf_keras

    model = as_tf_keras(model, "prune")
    check_graph_model(model, "prune")
    if isinstance(target_sparsity, bool) or not isinstance(target_sparsity, int | float) or not (
        0.0 <= target_sparsity < 1.0
    ):
        raise ConfigError(f"target_sparsity must be in [0, 1). {received('target_sparsity', target_sparsity)}")
    if not 0.0 <= initial_sparsity <= target_sparsity:
        raise ConfigError(
            f"initial_sparsity must be in [0, target_sparsity={target_sparsity}]. "
            f"{received('initial_sparsity', initial_sparsity)}"
        )
    if schedule not in SCHEDULES:
        raise ConfigError(f"Unknown pruning schedule. Valid: {list(SCHEDULES)}. {received('schedule', schedule)}")
    if not isinstance(begin_step, int) or begin_step < 0:
        raise ConfigError(f"begin_step must be an int >= 0. {received('begin_step', begin_step)}")
    if schedule == "polynomial" and end_step <= begin_step:
        raise ConfigError(
            f"end_step must be greater than begin_step={begin_step}. {received('end_step', end_step)}"
        )
    if not isinstance(frequency, int) or frequency < 1:
        raise ConfigError(f"frequency must be an int >= 1. {received('frequency', frequency)}")
    if m_by_n is not None and (
        len(m_by_n) != 2 or not all(isinstance(v, int) for v in m_by_n) or not 0 < m_by_n[0] < m_by_n[1]
    ):
        raise ConfigError(f"m_by_n must be (m, n) with 0 < m < n, e.g. (2, 4). {received('m_by_n', m_by_n)}")

    pruned_names, skipped = plan_pruning(model, skip, m_by_n)
    if not pruned_names:
        raise ConfigError(
            "No layer left to prune: the model has no layer with weights TFMOT prunes (Conv2D, Dense, ...) outside the "
            f"skip list. Skipped: {skipped or 'none'}. Received: model={model.name!r}"
        )
    for name, reason in skipped.items():
        logger.info("pruning: leaving %s dense (%s)", name, reason)
    if skip is None:
        candidates = _prunable_layers(model)
        pruned_too = [name for name in _default_skips(candidates) if name not in skipped]
        if pruned_too:
            sizes = {layer.name: _prunable_size(layer) for layer in candidates}
            share = sum(sizes[name] for name in pruned_too) / max(sum(sizes.values()), 1)
            logger.warning("pruning: %s %s pruned too: the default policy leaves %s dense, but %s %.0f%% of the "
                           "prunable weights (pass skip=[...] to choose yourself)", ", ".join(pruned_too),
                           "is" if len(pruned_too) == 1 else "are", "it" if len(pruned_too) == 1 else "them",
                           "it holds" if len(pruned_too) == 1 else "they hold", 100 * share)

    if schedule == "polynomial":
        pruning_schedule = _SPARSITY.PolynomialDecay(
            initial_sparsity=float(initial_sparsity), final_sparsity=float(target_sparsity),
            begin_step=begin_step, end_step=end_step, frequency=frequency,
        )
    else:
        pruning_schedule = _SPARSITY.ConstantSparsity(
            float(target_sparsity), begin_step=begin_step, end_step=-1, frequency=frequency
        )
    params: dict[str, Any] = {"pruning_schedule": pruning_schedule}
    if m_by_n is not None:
        params["sparsity_m_by_n"] = tuple(m_by_n)

    def wrap(layer: keras.layers.Layer) -> keras.layers.Layer:
        # A fresh copy, so training the pruned model never touches the original's weights.
        fresh = layer.__class__.from_config(layer.get_config())
        if layer.name in pruned_names:
            return _SPARSITY.prune_low_magnitude(fresh, **params)
        return fresh

    wrapped = keras.models.clone_model(model, clone_function=wrap)
    copy_weights(model, wrapped)
    callbacks: list[keras.callbacks.Callback] = [_SPARSITY.UpdatePruningStep()]
    if log_dir:
        callbacks.append(_SPARSITY.PruningSummaries(log_dir=log_dir))
    return Pruned(wrapped, callbacks, pruned_names, skipped)


def copy_weights(source: keras.Model, target: keras.Model, skip: Sequence[str] = ()) -> None:
    """Copies each layer's weights from `source` into the same-named (maybe wrapped) layer,
    except the layers named in `skip`."""
    by_name = {layer.name: layer for layer in source.layers}
    for layer in target.layers:
        inner = getattr(layer, "layer", layer)
        if inner.name in by_name and inner.weights and inner.name not in skip:
            inner.set_weights(by_name[inner.name].get_weights())


def strip(model: keras.Model) -> keras.Model:
    """Removes pruning wrappers; the result is a plain model with the same outputs."""
    return _SPARSITY.strip_pruning(model)


_KERNELS = ("kernel", "depthwise_kernel", "pointwise_kernel")


def effective_kernels(layer: keras.layers.Layer) -> list[np.ndarray]:
    """The kernel values `layer` computes with, wrapped or not: a pruning wrapper's mask
    applied; under a QAT wrapper, the fake-quantized kernel its weight quantizer yields at
    inference (for cluster-preserving QAT that is the centroids, gathered and masked: its
    `kernel` variable is not what it computes with)."""
    # Found by variable name: QAT wrappers replace `layer.kernel` with a symbolic tensor.
    quantized = [quantizer(w, training=False, weights=variables).numpy()
                 for w, quantizer, variables in getattr(layer, "_weight_vars", [])
                 if w.name.split("/")[-1].split(":")[0] in _KERNELS]
    if quantized:
        return quantized
    kernels = [w for w in layer.weights if w.name.split("/")[-1].split(":")[0] in _KERNELS]
    masks = {id(var): mask for var, mask, _ in getattr(layer, "pruning_vars", [])}
    return [k.numpy() * (masks[id(k)].numpy() if id(k) in masks else 1) for k in kernels]


def sparsity_report(model: keras.Model) -> dict[str, Any]:
    """Measures the fraction of exact zeros in each layer's kernel and overall.

    Works on wrapped (during pruning) and stripped models.

    Returns:
        `{"layers": {name: {"params": n, "zeros": z, "sparsity": z / n}},
        "overall": sparsity over those kernels, "model_params": all parameters,
        "model_zeros": zero parameters in the whole model}`.
    """
    layers: dict[str, dict[str, Any]] = {}
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        kernels = effective_kernels(layer)
        if not kernels:
            continue
        params = zeros = 0
        for values in kernels:  # a SeparableConv2D has two; TFMOT prunes its pointwise one
            params, zeros = params + values.size, zeros + int((values == 0).sum())
        layers[inner.name] = {"params": int(params), "zeros": zeros, "sparsity": zeros / params}
    total = sum(entry["params"] for entry in layers.values())
    all_weights = strip(model).get_weights() if _has_wrappers(model) else model.get_weights()
    return {
        "layers": layers,
        "overall": sum(entry["zeros"] for entry in layers.values()) / max(total, 1),
        "model_params": int(sum(w.size for w in all_weights)),
        "model_zeros": int(sum((w == 0).sum() for w in all_weights)),
    }


def _has_wrappers(model: keras.Model) -> bool:
    return any(hasattr(layer, "pruning_vars") for layer in model.layers)


def prune_and_finetune(
    model: keras.Model,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset | None = None,
    epochs: int = 2,
    target_sparsity: float = 0.8,
    *,
    learning_rate: float = 1e-4,
    work_dir: str | None = None,
    strategy: tf.distribute.Strategy | None = None,
    **prune_kwargs: Any,
) -> tuple[keras.Model, dict[str, Any]]:
    """Prunes on a polynomial schedule that ends one epoch before training does, then strips.

    The schedule's `end_step` is derived from the dataset's length so the last epoch
    fine-tunes at the target sparsity. Uses the shared training loop, so it resumes
    from `work_dir` backups and runs under `strategy`.

    Returns:
        A `CompressResult`: the stripped model and its `sparsity_report` (unpacks as
        `model, report`).
    """
    from tfimgopt.training import train

    steps = int(train_ds.cardinality())
    if steps <= 0:
        raise ConfigError(f"train_ds must have a known, positive number of batches. Received: cardinality={steps}")
    prune_kwargs.setdefault("end_step", max(1, steps * max(epochs - 1, 1)))
    prune_kwargs.setdefault("frequency", max(1, min(100, steps // 2)))
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        pruned = prune(model, target_sparsity, **prune_kwargs)
    history = train(
        pruned.model, train_ds, val_ds, epochs, learning_rate=learning_rate, strategy=strategy,
        work_dir=work_dir, callbacks=pruned.callbacks,
    )
    stripped = strip(history.model)
    return CompressResult(stripped, sparsity_report(stripped))


# --- the run's technique ----------------------------------------------------------------------


def _prune_technique(model: keras.Model, train_ds: tf.data.Dataset, val_ds: tf.data.Dataset | None,
                     settings: dict[str, Any], *, work_dir: str | None = None, strategy=None) -> CompressResult:
    skip = settings.get("skip")
    layers, dense = plan_pruning(model, skip)  # the default policy prunes every layer of a small model
    pruned, sparsity = prune_and_finetune(model, train_ds, val_ds, settings["epochs"], settings["target_sparsity"],
                                          learning_rate=settings["learning_rate"], work_dir=work_dir,
                                          strategy=strategy, skip=skip)
    return CompressResult(pruned, {"sparsity": sparsity["overall"], "skip": skip, "pruned_layers": layers,
                                    "dense_layers": dense})


register_technique(Technique(
    name="prune", summary="magnitude pruning to compress.target_sparsity, fine-tuned, stripped", order=30,
    settings=("compress.target_sparsity", "compress.epochs", "compress.learning_rate", "compress.skip"),
    apply=_prune_technique, enabled=lambda c: c.compress.enabled, report_key="pruned",
    describe=lambda r: f"sparsity {r['sparsity']:.1%} (target {r['target_sparsity']:.0%})",
))
