"""Weight clustering through TFMOT: each kernel keeps at most N distinct values.

Clustered kernels compress well (gzip stores N values and short indices), and with
cluster-preserving QAT (`quantize_aware(model, preserve=("clusters",))`) the int8 model
keeps them. With `preserve_sparsity` (the default) the zeros of a pruned model stay zeros:
prune -> cluster -> PCQAT is TFMOT's "collaborative optimization" chain.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from tfimgopt.compat import keras, tf
from tfimgopt.compress._tfmot import tfmot
from tfimgopt.compress.prune import (
    _KERNELS,
    check_graph_model,
    copy_weights,
    effective_kernels,
    matches_layer,
    plan_pruning,
    sparsity_report,
)
from tfimgopt.compress.techniques import CompressResult, Technique, register_technique
from tfimgopt.errors import ConfigError, received

logger = logging.getLogger(__name__)

_CLUSTER = tfmot.clustering.keras
INITS = ("kmeans++", "linear", "density")
_INIT = {
    "kmeans++": _CLUSTER.CentroidInitialization.KMEANS_PLUS_PLUS,
    "linear": _CLUSTER.CentroidInitialization.LINEAR,
    "density": _CLUSTER.CentroidInitialization.DENSITY_BASED,
}
def _clusterable(layer: keras.layers.Layer) -> bool:
    from tensorflow_model_optimization.python.core.clustering.keras.clustering_registry import (
        ClusteringRegistry,
    )

    return ClusteringRegistry.supports(layer) and any(getattr(layer, k, None) is not None for k in _KERNELS)


def _clustered_layers(model: keras.Model, skip: Sequence[str | type] | None, number_of_clusters: int) -> list[str]:
    """Names of the layers `cluster` wraps: clusterable, not skipped (None: the pruning default,
    first convolution and classifier), and with more weights than clusters (else nothing to share)."""
    skip = list(plan_pruning(model)[1]) if skip is None else skip
    return [layer.name for layer in model.layers if _clusterable(layer) and not matches_layer(layer, skip)
            and layer.count_params() > number_of_clusters]


def cluster(
    model: keras.Model,
    number_of_clusters: int = 16,
    *,
    init: str = "kmeans++",
    preserve_sparsity: bool | None = None,
    skip: Sequence[str | type] | None = None,
) -> tuple[keras.Model, list[str]]:
    """Wraps a model for weight clustering (TFMOT `cluster_weights`), layer by layer.

    Fine-tune the returned model (a few epochs at a low learning rate move the centroids),
    then `strip_clustering` it.

    Args:
        model: A Sequential or functional tf_keras model (plain, or stripped after pruning).
        number_of_clusters: Distinct values per kernel, at least 2.
        init: Centroid initialization: `"kmeans++"` (TFMOT's recommendation), `"linear"`
            or `"density"`.
        preserve_sparsity: Keep zeros at zero (for a pruned model). None decides by
            measurement: on when more than 30% of the kernels are zero.
        skip: Layer names or types to leave unclustered; None applies the pruning default
            (first convolution and classifier: few weights, most sensitive).

    Returns:
        `(model to fine-tune, names of the clustered layers)`.

    Raises:
        ConfigError: subclassed/Keras 3 model, fewer than 2 clusters, unknown init, or no
            layer left to cluster.

    Example:
        >>> from tfimgopt.compress.cluster import cluster, strip_clustering
        >>> wrapped, layers = cluster(model, 16, skip=[])  # skip=None would keep conv1 and classifier
        >>> # wrapped.compile(...); wrapped.fit(...); clustered = strip_clustering(wrapped)
    """
    from tfimgopt.keras3 import as_tf_keras

    model = as_tf_keras(model, "cluster")
    check_graph_model(model, "cluster")
    if isinstance(number_of_clusters, bool) or not isinstance(number_of_clusters, int) or number_of_clusters < 2:
        raise ConfigError(
            f"number_of_clusters must be an int >= 2. {received('number_of_clusters', number_of_clusters)}")
    if init not in INITS:
        raise ConfigError(f"Unknown centroid init. Valid: {list(INITS)}. {received('init', init)}")
    if preserve_sparsity is None:
        preserve_sparsity = sparsity_report(model)["overall"] > 0.3
    if skip is None:  # the pruning default: first convolution and classifier stay as they are
        skip = list(plan_pruning(model)[1])
    names = _clustered_layers(model, skip, number_of_clusters)
    if not names:
        raise ConfigError(
            "No layer left to cluster: the model has no Conv2D/Dense/... kernel outside the skip list with more "
            f"weights than clusters. Received: model={model.name!r}, skip={skip!r}")
    params = {"number_of_clusters": number_of_clusters, "cluster_centroids_init": _INIT[init],
              "preserve_sparsity": bool(preserve_sparsity)}

    def wrap(layer: keras.layers.Layer) -> keras.layers.Layer:
        # A fresh copy (training never touches the original), holding the trained weights
        # before it is wrapped: TFMOT derives the centroids from them when the wrapper builds.
        fresh = layer.__class__.from_config(layer.get_config())
        if layer.name not in names:
            return fresh
        fresh.build(layer.get_input_shape_at(0))
        fresh.set_weights(layer.get_weights())
        return _CLUSTER.cluster_weights(fresh, **params)

    wrapped = keras.models.clone_model(model, clone_function=wrap)
    copy_weights(model, wrapped, skip=names)
    logger.info("clustering %d layers to %d values each (%s, preserve_sparsity=%s)", len(names),
                number_of_clusters, init, bool(preserve_sparsity))
    return wrapped, names


def strip_clustering(model: keras.Model) -> keras.Model:
    """Removes the clustering wrappers: a plain model whose kernels hold the centroid values."""
    return _CLUSTER.strip_clustering(model)


def unique_values(model: keras.Model) -> dict[str, int]:
    """Distinct values in each layer's kernel(s) (the most of a layer's kernels), by layer name."""
    counts = {}
    for layer in model.layers:
        kernels = effective_kernels(layer)
        if kernels:
            counts[getattr(layer, "layer", layer).name] = max(len(np.unique(k)) for k in kernels)
    return counts


def cluster_and_finetune(
    model: keras.Model,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset | None = None,
    epochs: int = 2,
    number_of_clusters: int = 16,
    *,
    learning_rate: float = 1e-4,
    work_dir: str | None = None,
    strategy: tf.distribute.Strategy | None = None,
    **cluster_kwargs: Any,
) -> tuple[keras.Model, dict[str, Any]]:
    """`cluster`, fine-tune with the shared loop (resumable, under `strategy`), then strip.

    Returns:
        A `CompressResult`: the stripped model and `{"clusters", "layers", "unique_values"}`
        (unpacks as `model, report`).
    """
    from tfimgopt.training import train

    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        wrapped, names = cluster(model, number_of_clusters, **cluster_kwargs)
    history = train(wrapped, train_ds, val_ds, epochs, learning_rate=learning_rate, strategy=strategy,
                    work_dir=work_dir)
    stripped = strip_clustering(history.model)
    counts = unique_values(stripped)
    return CompressResult(stripped, {"clusters": number_of_clusters, "layers": names,
                                     "unique_values": {name: counts[name] for name in names}})


def _cluster_technique(model: keras.Model, train_ds: tf.data.Dataset, val_ds: tf.data.Dataset | None,
                       settings: dict[str, Any], *, work_dir: str | None = None, strategy=None) -> CompressResult:
    # A tiny student whose only layers are its first conv and classifier: cluster them all.
    skip = None if _clustered_layers(model, None, settings["clusters"]) else []
    clustered, report = cluster_and_finetune(
        model, train_ds, val_ds, settings["cluster_epochs"], settings["clusters"],
        learning_rate=settings["cluster_learning_rate"], work_dir=work_dir, strategy=strategy, skip=skip)
    return CompressResult(clustered, {**report, "sparsity": sparsity_report(clustered)["overall"]})


register_technique(Technique(
    name="cluster", summary="weight clustering to compress.clusters values per kernel (zeros kept), fine-tuned, "
                            "stripped; QAT after it preserves the clusters (PCQAT)", order=35,
    settings=("compress.clusters", "compress.cluster_epochs", "compress.cluster_learning_rate"),
    apply=_cluster_technique, enabled=lambda c: c.compress.enabled and c.compress.clusters > 0,
    report_key="clustered",
    describe=lambda r: f"at most {r['clusters']} values per kernel, sparsity {r['sparsity']:.1%}",
))
