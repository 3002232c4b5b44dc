"""Structured (channel) pruning: remove whole filters, so the model is smaller *and* faster.

Magnitude pruning zeroes single weights, which LiteRT's CPU kernels still multiply. This
module removes whole channels and rebuilds a smaller dense model, the approach of
Torch-Pruning (Fang et al., "DepGraph", CVPR 2023) for tf_keras Sequential and functional
models:

1. `channel_groups` builds the dependency graph: channels that must go together share a
   group (a convolution's filters, the BatchNormalization after it, a depthwise
   convolution on them, the next layer's input rows, every branch of a residual `Add`,
   offsets inside a `Concatenate`, the rows of a Dense after `Flatten`). Channels that
   reach a model input or output are locked.
2. `channel_importance` scores each channel of a group: the L1 norm of its filters
   (`"l1"`) or the magnitude of its BatchNormalization scale (`"bn_gamma"`), normalized
   per layer and averaged over the group's layers.
3. `prune_channels` keeps the best channels (a ratio per group, or one global ranking),
   rebuilds the model with fewer filters and copies the surviving weights in.
   `prune_channels_and_finetune` does it in steps with fine-tuning in between,
   resumable and under a strategy.

A layer without a rule (Reshape, Lambda, a nested model, a shared layer...) is refused
with a `ConfigError` naming it: a silently wrong model is worse than no pruning.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from tfimgopt.compat import keras, tf
from tfimgopt.compress.techniques import CompressResult, Technique, register_technique
from tfimgopt.errors import ConfigError, received

CRITERIA = ("l1", "bn_gamma")
SCOPES = ("local", "global")

#: Layers whose output channels are their own (a new group per layer): the filters pruned.
PRODUCERS = ("Conv2D", "Dense")
#: Layers that keep their input's channels, weights per channel (sliced) or none.
CHANNELWISE = ("BatchNormalization", "DepthwiseConv2D")
PASS_THROUGH = (
    "InputLayer", "ReLU", "Activation", "LeakyReLU", "ELU", "Dropout", "SpatialDropout2D", "GaussianNoise",
    "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D", "ZeroPadding2D",
    "Cropping2D", "UpSampling2D", "Rescaling", "Identity", "ActivityRegularization",
)
ELEMENTWISE = ("Add", "Multiply", "Subtract", "Maximum", "Minimum", "Average")
#: Per-channel layers whose state is not sliced: their channels stay (e.g. input normalization).
LOCKING = ("Normalization", "Softmax")
SUPPORTED = (*PRODUCERS, *CHANNELWISE, *PASS_THROUGH, *ELEMENTWISE, *LOCKING, "Concatenate", "Flatten", "Reshape")


@dataclasses.dataclass
class _Tensor:
    """The channels of a layer's output: segments `(space, size)` along the last axis;
    `repeat` > 1 after Flatten (index = position * channels + channel)."""

    segments: list[tuple[int, int]]
    repeat: int = 1


@dataclasses.dataclass
class ChannelGroup:
    """Channels that are removed together.

    Attributes:
        index: The group's id in the graph.
        size: Channels in the group.
        producers: Layers whose filters (output channels) are the group.
        channelwise: Layers holding one weight set per channel of the group (BatchNorm,
            depthwise convolutions).
        consumers: Layers whose input rows are (partly) the group.
        locked: Why it cannot be pruned (None when it can): it reaches a model input or
            output, or a layer asked to be kept.
    """

    index: int
    size: int
    producers: list[str] = dataclasses.field(default_factory=list)
    channelwise: list[str] = dataclasses.field(default_factory=list)
    consumers: list[str] = dataclasses.field(default_factory=list)
    locked: str | None = None

    @property
    def prunable(self) -> bool:
        return self.locked is None and bool(self.producers)


class ChannelGraph:
    """The channel dependency graph of a Sequential or functional tf_keras model.

    Attributes:
        model: The model analysed.
        groups: `ChannelGroup`s, one per set of channels that must be removed together.
    """

    def __init__(self, model: keras.Model, keep: Iterable[str] = ()):
        _check_model(model)
        self.model = model
        self._parent: list[int] = []
        self._size: list[int] = []
        self._locks: dict[int, str] = {}
        self.inputs: dict[str, _Tensor] = {}  # layer name -> its input's channels
        self.outputs: dict[str, _Tensor] = {}  # layer name -> its output's channels
        self._kind: dict[str, str] = {}
        config = model.get_config()
        layers = config["layers"]
        sequential = "inbound_nodes" not in layers[-1]
        previous = None
        if sequential and layers[0]["class_name"] != "InputLayer":  # Sequential built without keras.Input
            previous = "__input__"
            self._input(previous, int(model.input_shape[-1]))
        for entry in layers:
            name, kind = entry["config"]["name"], entry["class_name"]
            if sequential:
                sources = [previous] if previous else []
            else:
                sources = _sources(entry, name)
            self._kind[name] = kind
            if kind == "InputLayer":  # not among a Sequential model's layers: read its config
                self._input(name, int(entry["config"]["batch_input_shape"][-1]))
            else:
                self._add(model.get_layer(name), kind, sources)
            previous = name
        for tensor in (self.outputs[n] for n in _output_names(model, config, sequential)):
            for space, _ in tensor.segments:
                self._lock(space, "reaches a model output")
        for name in keep:
            if name not in self.outputs:
                raise ConfigError(f"keep names a layer the model does not have; its layers: "
                                  f"{list(self.outputs)[:20]}... {received('keep', name)}")
            for space, _ in self.outputs[name].segments:
                self._lock(space, f"kept: {name}")
        self.groups = self._collect()

    # --- building -------------------------------------------------------------------------

    def _space(self, size: int) -> int:
        self._parent.append(len(self._parent))
        self._size.append(size)
        return len(self._parent) - 1

    def find(self, space: int) -> int:
        while self._parent[space] != space:
            self._parent[space] = self._parent[self._parent[space]]
            space = self._parent[space]
        return space

    def _union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self._parent[b] = a
            if b in self._locks:
                self._locks.setdefault(a, self._locks[b])

    def _lock(self, space: int, why: str) -> None:
        self._locks.setdefault(self.find(space), why)

    def _input(self, name: str, channels: int) -> None:
        space = self._space(channels)
        self._lock(space, "a model input")
        self.outputs[name] = _Tensor([(space, channels)])

    def _add(self, layer: keras.layers.Layer, kind: str, sources: list[str]) -> None:
        name = layer.name
        if kind not in SUPPORTED:
            what = "a nested model" if isinstance(layer, keras.Model) else f"a {kind} layer"
            raise ConfigError(
                f"Channel pruning has no rule for layer {name!r} ({what}): it cannot tell which channels go "
                f"through it, and guessing could build a wrong model. Layers it handles: {', '.join(SUPPORTED)}. "
                f"Rebuild the model without it, or prune with magnitude pruning (tfimgopt.compress.prune). "
                f"Received: layer {name!r} of class {type(layer).__name__}")
        inputs = [self.outputs[s] for s in sources]
        if len(inputs) != 1 and kind not in (*ELEMENTWISE, "Concatenate"):
            raise ConfigError(f"Channel pruning expects one input for {kind} layer {name!r}; it has {len(inputs)}. "
                              f"Received: layer {name!r}")
        self.inputs[name] = inputs[0] if len(inputs) == 1 else _Tensor([s for t in inputs for s in t.segments])
        config = layer.get_config()
        if kind in PRODUCERS:
            if kind == "Conv2D" and config.get("groups", 1) != 1:
                raise ConfigError(f"Channel pruning does not handle grouped convolutions (groups="
                                  f"{config['groups']}). Received: layer {name!r}")
            if kind == "Dense" and len(layer.input_shape) != 2:
                raise ConfigError(f"Channel pruning handles Dense layers on vectors only; {name!r} takes "
                                  f"{layer.input_shape}. Received: layer {name!r}")
            out = int(config["filters"] if kind == "Conv2D" else config["units"])
            self.outputs[name] = _Tensor([(self._space(out), out)])
            return
        tensor = inputs[0]
        if kind == "Flatten":
            shape = layer.input_shape
            if tensor.repeat != 1 or len(shape) != 4:
                raise ConfigError(f"Channel pruning handles Flatten of 4-D feature maps only. Received: layer "
                                  f"{name!r} with input shape {shape}")
            self.outputs[name] = _Tensor(list(tensor.segments), repeat=int(shape[1] * shape[2]))
            return
        if kind == "DepthwiseConv2D" and config.get("depth_multiplier", 1) != 1:
            raise ConfigError(f"Channel pruning handles depthwise convolutions with depth_multiplier=1 only. "
                              f"Received: layer {name!r} with depth_multiplier={config['depth_multiplier']}")
        if kind == "BatchNormalization" and list(layer.axis) != [len(layer.input_shape) - 1]:
            raise ConfigError(f"Channel pruning handles BatchNormalization over the last axis only. Received: layer "
                              f"{name!r} with axis={config.get('axis')}")
        if kind == "Rescaling" and (np.ndim(config["scale"]) or np.ndim(config["offset"])):
            raise ConfigError(f"Channel pruning handles Rescaling with scalar scale and offset only. Received: "
                              f"layer {name!r}")
        if kind in ELEMENTWISE:
            first = inputs[0]
            for other in inputs[1:]:
                if other.repeat != first.repeat or [s for _, s in other.segments] != [s for _, s in first.segments]:
                    raise ConfigError(f"Channel pruning cannot match the channels of the inputs of {kind} layer "
                                      f"{name!r} (different layouts). Received: layer {name!r}")
                for (a, _), (b, _) in zip(first.segments, other.segments, strict=True):
                    self._union(a, b)
            self.outputs[name] = _Tensor(list(first.segments), first.repeat)
            return
        if kind == "Concatenate":
            if config.get("axis") not in (-1, 3) or any(t.repeat != 1 for t in inputs):
                raise ConfigError(f"Channel pruning handles Concatenate along the channel axis only. Received: "
                                  f"layer {name!r} with axis={config.get('axis')}")
            self.outputs[name] = _Tensor([s for t in inputs for s in t.segments])
            return
        if kind == "Reshape":  # channel-preserving only: (..., C) -> (..., C), e.g. (C,) -> (1, 1, C)
            if tensor.repeat != 1 or layer.input_shape[-1] != layer.output_shape[-1]:
                raise ConfigError(f"Channel pruning handles Reshape layers that keep the channel axis last and "
                                  f"whole only; {name!r} maps {layer.input_shape} to {layer.output_shape}. "
                                  f"Received: layer {name!r}")
        if kind in LOCKING or config.get("activation") == "softmax":  # none of these channels may go
            for space, _ in tensor.segments:
                self._lock(space, f"{kind} {name}")
        self.outputs[name] = _Tensor(list(tensor.segments), tensor.repeat)  # channelwise and pass-through

    def _collect(self) -> list[ChannelGroup]:
        groups: dict[int, ChannelGroup] = {}

        def group(space: int) -> ChannelGroup:
            root = self.find(space)
            if root not in groups:
                groups[root] = ChannelGroup(root, self._size[root], locked=self._locks.get(root))
            return groups[root]

        for name, kind in self._kind.items():
            if kind == "InputLayer":
                continue
            if kind in PRODUCERS:
                group(self.outputs[name].segments[0][0]).producers.append(name)
            if kind in CHANNELWISE:
                group(self.outputs[name].segments[0][0]).channelwise.append(name)
            if kind in (*PRODUCERS, "DepthwiseConv2D"):
                for space, _ in self.inputs[name].segments:
                    if name not in group(space).consumers:
                        group(space).consumers.append(name)
        return list(groups.values())

    # --- queries --------------------------------------------------------------------------

    def kind(self, layer: str) -> str | None:
        """The class name of a layer of the model (None for a name it does not have)."""
        return self._kind.get(layer)

    def group_of(self, layer: str) -> ChannelGroup:
        """The group of a layer's output channels."""
        root = self.find(self.outputs[layer].segments[0][0])
        return next(g for g in self.groups if g.index == root)

    def prunable(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    def kept_indices(self, tensor: _Tensor, keep: dict[int, np.ndarray]) -> np.ndarray:
        """Indices along a tensor's last axis that survive, given kept channels per group."""
        parts, offset = [], 0
        for space, size in tensor.segments:
            kept = keep.get(self.find(space))
            parts.append(offset + (np.arange(size) if kept is None else np.asarray(kept)))
            offset += size
        channel = np.concatenate(parts) if parts else np.arange(0)
        if tensor.repeat == 1:
            return channel
        return (np.arange(tensor.repeat)[:, None] * offset + channel[None, :]).reshape(-1)


def _check_model(model: Any) -> None:
    from tfimgopt.compress.prune import check_graph_model

    check_graph_model(model, "Channel pruning")


def _sources(entry: dict, name: str) -> list[str]:
    nodes = entry.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise ConfigError(f"Channel pruning cannot prune a layer used more than once (shared layer {name!r}: "
                          f"its channels would have to match in every use). Received: layer {name!r}")
    if not nodes:
        return []
    node = nodes[0]
    if isinstance(node, dict):  # newer serialization: {"args": [...], "kwargs": {...}}
        raise ConfigError(f"Unrecognised layer graph format for {name!r}. Received: inbound_nodes={nodes!r}")
    return [item[0] for item in node]


def _output_names(model: keras.Model, config: dict, sequential: bool) -> list[str]:
    if sequential:
        return [config["layers"][-1]["config"]["name"]]
    return [item[0] for item in config["output_layers"]]


def channel_groups(model: keras.Model, keep: Iterable[str] = ()) -> list[ChannelGroup]:
    """The groups of channels that are pruned together (see `ChannelGraph`).

    Args:
        model: A Sequential or functional tf_keras model.
        keep: Layer names whose output channels must all stay.

    Raises:
        ConfigError: a subclassed or Keras 3 model, or a layer without a rule (named).
    """
    return ChannelGraph(model, keep).groups


# --- importance ---------------------------------------------------------------------------------


def _normalized(values: np.ndarray) -> np.ndarray:
    mean = float(np.mean(values)) if values.size else 0.0
    return values / mean if mean > 0 else np.ones_like(values)


def channel_importance(graph: ChannelGraph, group: ChannelGroup, criterion: str = "l1") -> np.ndarray:
    """One score per channel of `group` (higher = more important), mean 1 per layer.

    `"l1"`: the L1 norm of each output filter of the group's producers. `"bn_gamma"`: the
    magnitude of the BatchNormalization scale of each channel (network slimming, Liu et
    al. 2017); a group without BatchNormalization falls back to L1.
    """
    if criterion not in CRITERIA:
        raise ConfigError(f"criterion must be one of {CRITERIA}. {received('criterion', criterion)}")
    model = graph.model
    scores = []
    if criterion == "bn_gamma":
        for name in group.channelwise:
            layer = model.get_layer(name)
            if graph.kind(name) == "BatchNormalization" and layer.scale:
                scores.append(_normalized(np.abs(layer.gamma.numpy())))
    if not scores:
        for name in group.producers:
            kernel = model.get_layer(name).kernel.numpy()
            scores.append(_normalized(np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)))
    return np.mean(scores, axis=0)


# --- pruning --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ChannelPruned(CompressResult):
    """What `prune_channels` (and `prune_channels_and_finetune`) did: a `CompressResult`.

    Attributes:
        model: The rebuilt, smaller model (dense: no zeros were added).
        report: Parameters and FLOPs before and after, channels per layer, criterion.
        kept: Producer layer name -> output channels kept (before -> after in `report`).
    """

    kept: dict[str, list[int]] = dataclasses.field(default_factory=dict)


def _keep_counts(graph: ChannelGraph, scores: dict[int, np.ndarray], ratio: float, scope: str,
                 min_channels: int, round_to: int, targets: dict[int, int] | None) -> dict[int, int]:
    groups = {g.index: g for g in graph.prunable()}

    def rounded(n: int, size: int) -> int:
        n = max(min_channels, n)
        if round_to > 1:
            n = int(np.ceil(n / round_to) * round_to)
        return min(size, n)

    if targets is not None:
        return {i: rounded(targets[i], groups[i].size) for i in groups}
    if scope == "local":
        return {i: rounded(int(round(g.size * (1 - ratio))), g.size) for i, g in groups.items()}
    everything = np.concatenate([scores[i] for i in groups]) if groups else np.zeros(0)
    if not everything.size:
        return {}
    cut = np.quantile(everything, ratio, method="lower") if ratio > 0 else -np.inf
    return {i: rounded(int((scores[i] > cut).sum()), g.size) for i, g in groups.items()}


def prune_channels(
    model: keras.Model,
    ratio: float = 0.5,
    *,
    criterion: str = "l1",
    scope: str = "local",
    keep: Iterable[str] = (),
    min_channels: int = 1,
    round_to: int = 1,
    exact_zero_only: bool = False,
) -> ChannelPruned:
    """Removes the least important channels of every prunable group and rebuilds the model.

    Args:
        model: A Sequential or functional tf_keras model (trained).
        ratio: Share of channels to remove, in [0, 1): of each group (`scope="local"`) or
            of all prunable channels ranked together (`scope="global"`).
        criterion: `"l1"` (filter L1 norm) or `"bn_gamma"` (BatchNormalization scale).
        scope: `"local"` (the same ratio per group) or `"global"`.
        keep: Layer names whose output channels all stay.
        min_channels: Channels every group keeps at least.
        round_to: Kept channel counts are rounded up to a multiple of this (8 suits
            XNNPACK's and GPU kernels' vector widths).
        exact_zero_only: Remove exactly the channels whose producers' filters and biases
            and whose BatchNormalization scales and offsets are all zero (their removal does
            not change the outputs); `ratio` and `criterion` are then unused.

    Returns:
        A `ChannelPruned`: the smaller model, the kept channels, and the report (parameters
        and FLOPs before/after, channels per pruned layer).

    Raises:
        ConfigError: bad settings, or a model the dependency graph cannot handle.

    Example:
        >>> from tfimgopt.compress.channels import prune_channels
        >>> from tfimgopt.models import create_model
        >>> model = create_model("small_cnn", (16, 16, 1), 10, width=8, dense=32)
        >>> result = prune_channels(model, 0.5)
        >>> result.report["channels"]["conv1"]
        [8, 4]
    """
    return _prune_channels(model, ratio, criterion=criterion, scope=scope, keep=keep, min_channels=min_channels,
                           round_to=round_to, exact_zero_only=exact_zero_only)


def _prune_channels(
    model: keras.Model,
    ratio: float = 0.5,
    *,
    criterion: str = "l1",
    scope: str = "local",
    keep: Iterable[str] = (),
    min_channels: int = 1,
    round_to: int = 1,
    exact_zero_only: bool = False,
    targets_by_layer: dict[str, int] | None = None,
) -> ChannelPruned:
    """`prune_channels`, or (`targets_by_layer`) to given channel counts per producer layer."""
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio < 1:
        raise ConfigError(f"ratio must be a number in [0, 1). {received('ratio', ratio)}")
    if scope not in SCOPES:
        raise ConfigError(f"scope must be one of {SCOPES}. {received('scope', scope)}")
    for name, value in (("min_channels", min_channels), ("round_to", round_to)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an int >= 1. {received(name, value)}")
    if criterion not in CRITERIA:
        raise ConfigError(f"criterion must be one of {CRITERIA}. {received('criterion', criterion)}")
    graph = ChannelGraph(model, keep)
    keep_idx: dict[int, np.ndarray] = {}
    if exact_zero_only:
        for g in graph.prunable():
            dead = _zero_channels(graph, g)
            keep_idx[g.index] = np.flatnonzero(~dead) if (~dead).any() else np.arange(min(1, g.size))
    else:
        scores = {g.index: channel_importance(graph, g, criterion) for g in graph.prunable()}
        targets = None
        if targets_by_layer is not None:
            targets = {graph.group_of(name).index: n for name, n in targets_by_layer.items()
                       if graph.group_of(name).prunable}
            for g in graph.prunable():
                targets.setdefault(g.index, g.size)
        counts = _keep_counts(graph, scores, float(ratio), scope, min_channels, round_to, targets)
        for index, count in counts.items():
            best = np.argsort(-scores[index], kind="stable")[:count]
            keep_idx[index] = np.sort(best)
    pruned = rebuild(graph, keep_idx)
    channels = {}
    for g in graph.prunable():
        for name in g.producers:
            channels[name] = [g.size, len(keep_idx[g.index])]
    before, after = count_flops(model), count_flops(pruned)
    report = {
        "criterion": "exact zeros" if exact_zero_only else criterion,
        "scope": scope,
        "ratio": float(ratio),
        "params_before": int(model.count_params()),
        "params_after": int(pruned.count_params()),
        "flops_before": before,
        "flops_after": after,
        "channels": channels,
        "locked_groups": sum(1 for g in graph.groups if g.locked and g.producers),
    }
    kept = {name: [int(i) for i in keep_idx[g.index]] for g in graph.prunable() for name in g.producers}
    return ChannelPruned(pruned, report, kept)


def _zero_channels(graph: ChannelGraph, group: ChannelGroup) -> np.ndarray:
    """Channels whose every producer filter and bias, and BatchNorm gamma and beta, are 0."""
    model = graph.model
    dead = np.ones(group.size, bool)
    for name in group.producers:
        layer = model.get_layer(name)
        kernel = layer.kernel.numpy()
        dead &= ~np.any(kernel.reshape(-1, kernel.shape[-1]) != 0, axis=0)
        if getattr(layer, "use_bias", False):
            dead &= layer.bias.numpy() == 0
    for name in group.channelwise:
        if graph.kind(name) == "BatchNormalization":
            layer = model.get_layer(name)
            if layer.scale:
                dead &= layer.gamma.numpy() == 0
            if layer.center:
                dead &= layer.beta.numpy() == 0
    return dead


def rebuild(graph: ChannelGraph, keep: dict[int, np.ndarray]) -> keras.Model:
    """The model with only the kept channels of each group (indices per group id), weights copied."""
    model = graph.model
    config = model.get_config()
    for entry in config["layers"]:
        name, kind = entry["config"]["name"], entry["class_name"]
        if kind in PRODUCERS:
            count = len(graph.kept_indices(graph.outputs[name], keep))
            entry["config"]["filters" if kind == "Conv2D" else "units"] = count
        elif kind == "Reshape":
            shape = list(entry["config"]["target_shape"])
            entry["config"]["target_shape"] = (*shape[:-1], len(graph.kept_indices(graph.outputs[name], keep)))
    pruned = type(model).from_config(config)
    for layer in model.layers:
        kind = graph.kind(layer.name)
        if not layer.weights:
            continue
        new_layer = pruned.get_layer(layer.name)
        weights = layer.get_weights()
        if kind in PRODUCERS:
            rows = graph.kept_indices(graph.inputs[layer.name], keep)
            cols = graph.kept_indices(graph.outputs[layer.name], keep)
            kernel = np.take(np.take(weights[0], rows, axis=-2), cols, axis=-1)
            weights = [kernel, *[np.take(w, cols, axis=-1) for w in weights[1:]]]
        elif kind in CHANNELWISE:
            cols = graph.kept_indices(graph.outputs[layer.name], keep)
            if kind == "DepthwiseConv2D":
                weights = [np.take(weights[0], cols, axis=2), *[np.take(w, cols, axis=-1) for w in weights[1:]]]
            else:
                weights = [np.take(w, cols, axis=-1) for w in weights]
        new_layer.set_weights(weights)
    return pruned


# --- FLOPs ------------------------------------------------------------------------------------------


def count_flops(model: keras.Model) -> int:
    """Multiply-accumulates of one image through the model's convolutions and Dense layers
    (the work that dominates latency; activations, pooling and BatchNorm not counted)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw, channels, mult = layer.depthwise_kernel.shape
            h, w = layer.output_shape[1:3]
            total += int(h * w * kh * kw * channels * mult)
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            h, w = layer.output_shape[1:3]
            total += int(h * w * kh * kw * cin * cout)
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return total


# --- prune, fine-tune, repeat -------------------------------------------------------------------------


def prune_channels_and_finetune(
    model: keras.Model | Callable[[], keras.Model],
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset | None = None,
    ratio: float = 0.5,
    *,
    steps: int = 3,
    epochs: int = 2,
    learning_rate: float = 1e-3,
    criterion: str = "l1",
    scope: str = "local",
    keep: Sequence[str] = (),
    min_channels: int = 1,
    round_to: int = 1,
    strategy: tf.distribute.Strategy | None = None,
    work_dir: str | None = None,
    jit_compile: bool | None = None,
    verbose: int | str = "auto",
) -> ChannelPruned:
    """Prunes channels gradually: `steps` rounds of pruning then `epochs` of fine-tuning.

    Round `i` keeps `1 - ratio * i / steps` of each group's original channels (local), or
    ranks globally at that ratio. With a `work_dir`, each finished round is saved
    (`round<i>.keras`, written atomically) and training inside a round backs up every
    epoch: a rerun after an interruption continues where it stopped.

    Returns:
        A `ChannelPruned` against the original model (report before = the input model).
    """
    from tfimgopt import _io
    from tfimgopt.training import train

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be an int >= 1. {received('steps', steps)}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ConfigError(f"epochs must be an int >= 0. {received('epochs', epochs)}")
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        original = model if isinstance(model, keras.Model) else model()
    graph = ChannelGraph(original, keep)  # refuse an unsupported model before any training
    sizes = {name: g.size for g in graph.prunable() for name in g.producers[:1]}
    current = original
    for step in range(1, steps + 1):
        saved = os.path.join(work_dir, f"round{step}.keras") if work_dir else None
        if saved and os.path.isfile(saved):
            with strategy.scope():
                current = keras.models.load_model(saved)
            continue
        share = float(ratio) * step / steps
        targets, now = None, share
        if scope == "local":  # each group to its share of its original size
            targets = {name: int(round(size * (1 - share))) for name, size in sizes.items()}
        else:  # of what is left, the part that brings the total to `share` of the original
            now = 1 - (1 - share) / (1 - float(ratio) * (step - 1) / steps)
        with strategy.scope():
            current = _prune_channels(current, now, criterion=criterion, scope=scope, keep=keep,
                                      min_channels=min_channels, round_to=round_to, targets_by_layer=targets).model
        if epochs:
            train(current, train_ds, val_ds, epochs, learning_rate=learning_rate, strategy=strategy,
                  work_dir=os.path.join(work_dir, f"round{step}") if work_dir else None, jit_compile=jit_compile,
                  verbose=verbose)
        if saved:
            _io.write_with(saved, current.save)
    channels = {}
    final = ChannelGraph(current, keep)
    for g in graph.prunable():
        for name in g.producers:
            channels[name] = [g.size, int(final.group_of(name).size)]
    report = {
        "criterion": criterion, "scope": scope, "ratio": float(ratio), "steps": steps, "epochs_per_step": epochs,
        "params_before": int(original.count_params()), "params_after": int(current.count_params()),
        "flops_before": count_flops(original), "flops_after": count_flops(current), "channels": channels,
    }
    return ChannelPruned(current, report)


# --- the run's technique ------------------------------------------------------------------------------


def _channel_prune(model: keras.Model, train_ds: tf.data.Dataset, val_ds: tf.data.Dataset | None,
                   settings: dict[str, Any], *, work_dir: str | None = None, strategy=None):
    result = prune_channels_and_finetune(
        model, train_ds, val_ds, settings["channel_ratio"], steps=settings["channel_steps"],
        epochs=settings["channel_epochs"], learning_rate=settings["learning_rate"],
        criterion=settings["channel_criterion"], scope=settings["channel_scope"],
        round_to=settings["channel_round_to"], strategy=strategy, work_dir=work_dir)
    return CompressResult(result.model, result.report)


register_technique(Technique(
    name="channel_prune", summary="structured pruning: removes compress.channel_ratio of the channels, "
                                  "fine-tuned in rounds (a smaller, faster dense model)", order=25,
    settings=("compress.channel_ratio", "compress.channel_criterion", "compress.channel_scope",
              "compress.channel_steps", "compress.channel_epochs", "compress.channel_round_to",
              "compress.learning_rate"),
    apply=_channel_prune, enabled=lambda c: c.compress.enabled and c.compress.channel_ratio > 0,
    report_key="channel_pruned",
    describe=lambda r: (f"{r['params_before']:,} -> {r['params_after']:,} parameters, {r['flops_before']:,} -> "
                        f"{r['flops_after']:,} multiply-adds"),
))
