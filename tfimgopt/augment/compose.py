"""`Augmentation`: an ordered chain of augmentation layers, fused where possible; the
`create_augmentation` factory, its declarative specs, and placement (data or model).
"""

from __future__ import annotations

import inspect

from tfimgopt.augment import color, geometric, policies  # noqa: F401  (importing them registers their ops)
from tfimgopt.augment._base import (
    OPS,
    POLICIES,
    AugmentationLayer,
    check_images,
    check_seed,
    check_value_range,
    fold,
    register_policy,
    warp,
)
from tfimgopt.augment.color import color_run
from tfimgopt.augment.external import ExternalLayer, check_in_model, library_of
from tfimgopt.augment.geometric import GeometricLayer, image_size
from tfimgopt.compat import keras, tf
from tfimgopt.errors import ConfigError, received

PLACEMENTS = ("auto", "data", "model")


@keras.utils.register_keras_serializable(package="tfimgopt")
class Augmentation(AugmentationLayer):
    """Applies augmentation layers in order, resampling each image once per geometric run.

    Consecutive geometric layers (flips, rotations, translations, zooms, crops) with the
    same interpolation and fill are multiplied into one matrix per image and applied in
    one `ImageProjectiveTransformV3` pass; flips and crops join any run.  Consecutive
    colour layers share one float32 conversion.  Label-mixing layers (MixUp, CutMix)
    make the whole chain take and return `(images, labels)`.

    Args:
        layers: Augmentation layers, applied in order.
        seed: Seed of the chain's random stream when the caller passes no seed.

    Example:
        >>> from tfimgopt.augment import Augmentation, RandomFlip, RandomRotation
        >>> aug = Augmentation([RandomRotation(0.05), RandomFlip()], seed=0)
        >>> images = aug(images)
    """

    kind = "pipeline"
    #: `tfimgopt.data.build_pipeline` passes per-batch seeds to callables that have this.
    accepts_seed = True

    def __init__(self, layers=(), *, seed=None, **kwargs):
        kwargs.setdefault("value_range", _common_range(layers))
        super().__init__(seed=seed, **kwargs)
        for layer in layers:
            if not isinstance(layer, AugmentationLayer):
                raise ConfigError(
                    f"Augmentation takes tfimgopt augmentation layers (see list_augmentations()). "
                    f"Received: {layer!r}"
                )
        self.steps = list(layers)
        self._plan = _plan(self.steps)

    @property
    def takes_labels(self):
        return any(layer.takes_labels for layer in self.steps)

    def call(self, inputs, training=True, seed=None):
        images, labels = inputs if self.takes_labels else (inputs, None)
        if training is False:
            for layer in self.steps:
                if isinstance(layer, GeometricLayer):
                    images = layer.inference(images)
            return (images, labels) if self.takes_labels else images
        seed = self._call_seed(seed)
        images = check_images(images, "Augmentation")
        # Each geometric run and each colour run is its own XLA program: compiling the
        # whole chain as one was 2.5x slower (XLA recomputed the resampling for the
        # contrast op's mean).
        images, labels = self._run(images, labels, seed)
        return (images, labels) if self.takes_labels else images

    def _run(self, images, labels, seed):
        for kind, indices in self._plan:
            layers = [self.steps[i] for i in indices]
            seeds = [fold(seed, i) for i in indices]
            if kind == "geometric":
                images = _fused_warp(images, layers, seeds)
            elif kind == "color":
                images = color_run(self, layers, images, tf.stack(seeds))
            elif layers[0].takes_labels:
                images, labels = layers[0].augment_with_labels(images, labels, seeds[0])
            else:
                images = layers[0].augment(images, seeds[0])
        return images, labels

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape)
        for layer in self.steps:
            shape = layer.compute_output_shape(shape)
        return shape

    def get_config(self):
        config = super().get_config()
        config["layers"] = [keras.layers.serialize(layer) for layer in self.steps]
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        layers = [keras.layers.deserialize(c) for c in config.pop("layers")]
        return cls(layers, **config)


def _common_range(layers):
    ranges = {tuple(layer.value_range) for layer in layers if isinstance(layer, AugmentationLayer)}
    return ranges.pop() if len(ranges) == 1 else (0, 255)


def _plan(layers):
    """Groups layer indices into fused runs: `[(kind, [indices]), ...]`."""
    plan = []
    for i, layer in enumerate(layers):
        kind = layer.kind if layer.kind in ("geometric", "color") else "single"
        if plan and kind != "single" and plan[-1][0] == kind:
            if kind == "color" or _compatible([layers[j] for j in plan[-1][1]] + [layer]):
                plan[-1][1].append(i)
                continue
        plan.append((kind, [i]))
    return plan


def _sampling(layers):
    """The (interpolation, fill_mode, fill_value) of a geometric run, or None if they clash."""
    inexact = {(layer.interpolation, layer.fill_mode, layer.fill_value) for layer in layers if not layer.exact}
    if not inexact:
        return ("nearest", "constant", 0.0)  # flips and crops sample pixel centres: exact and fastest
    return inexact.pop() if len(inexact) == 1 else None


def _compatible(layers):
    return _sampling(layers) is not None


def _fused_warp(images, layers, seeds):
    batch = tf.shape(images)[0]
    height, width = image_size(images)
    total = None
    for layer, s in zip(layers, seeds, strict=False):
        matrices, (height, width) = layer.transform(batch, height, width, s)
        total = matrices if total is None else total @ matrices
    interpolation, fill_mode, fill_value = _sampling(layers)
    return warp(images, total, (height, width), interpolation=interpolation, fill_mode=fill_mode,
                fill_value=fill_value, affine=all(layer.affine for layer in layers))


# --- the factory ----------------------------------------------------------------------

# Named policies: specs of layers.  "default" is the classic recipe (rotate, flip,
# translate, crop, colour); "digits" leaves out the flip, which turns a 2 into a
# different symbol.
for _name, _spec in {
    "none": [],
    "flip": [{"op": "random_flip", "mode": "horizontal"}],
    "light": [
        {"op": "random_flip", "mode": "horizontal"},
        {"op": "random_translation", "height_factor": 0.1, "width_factor": 0.1},
    ],
    "default": [
        {"op": "random_rotation", "factor": 15 / 360},
        {"op": "random_flip", "mode": "horizontal"},
        {"op": "random_translation", "height_factor": 0.1, "width_factor": 0.1},
        {"op": "random_zoom", "height_factor": (-0.2, 0.0)},
        {"op": "random_brightness", "factor": 0.2},
        {"op": "random_contrast", "factor": 0.2},
    ],
    "digits": [
        {"op": "random_rotation", "factor": 10 / 360},
        {"op": "random_translation", "height_factor": 0.1, "width_factor": 0.1},
        {"op": "random_zoom", "height_factor": (-0.1, 0.1)},
    ],
    "randaugment": [{"op": "random_flip", "mode": "horizontal"}, {"op": "randaugment"}],
    "augmix": [{"op": "random_flip", "mode": "horizontal"}, {"op": "augmix"}],
    "mixup": [{"op": "random_flip", "mode": "horizontal"}, {"op": "mixup"}],
    "cutmix": [{"op": "random_flip", "mode": "horizontal"}, {"op": "cutmix"}],
}.items():
    register_policy(_name, _spec)

# Geometric options a policy-level call may set on all its geometric layers.
_SAMPLING_KEYS = ("interpolation", "fill_mode", "fill_value")


def list_augmentations() -> dict[str, list[str]]:
    """Names accepted by `create_augmentation`: `{"policies": [...], "layers": [...]}`."""
    return {"policies": POLICIES.names(), "layers": OPS.names()}


def create_augmentation(spec="default", *, seed: int | None = None, value_range=(0, 255),
                        **sampling) -> Augmentation:
    """Builds an `Augmentation` from a policy name, a layer name or a declarative spec.

    Args:
        spec: A policy name (`"default"`, `"randaugment"`, ... see
            `list_augmentations()`), a layer name with its defaults, or a list whose items
            are names or dicts `{"op": name, **parameters}` — the form a config file uses.
            An `Augmentation` or a single augmentation layer is returned as one chain.
        seed: Seed of the chain (pipelines pass per-batch seeds derived from their own).
        value_range: `(min, max)` pixel values of the images it will see.
        **sampling: `interpolation`, `fill_mode` and/or `fill_value` applied to every
            geometric layer (e.g. `fill_mode="constant"`, `interpolation="nearest"` for speed).

    Returns:
        An `Augmentation`.

    Raises:
        ConfigError: for an unknown name, a malformed item or bad parameters, naming them.

    Example:
        >>> from tfimgopt.augment import create_augmentation
        >>> aug = create_augmentation([{"op": "random_rotation", "factor": 0.05}, "mixup"], seed=0)
    """
    check_seed(seed)
    value_range = check_value_range(value_range)
    unknown = set(sampling) - set(_SAMPLING_KEYS)
    if unknown:
        raise ConfigError(f"Unknown option(s) {sorted(unknown)}; accepted: {_SAMPLING_KEYS}.")
    if isinstance(spec, Augmentation):
        return spec
    if isinstance(spec, AugmentationLayer):
        return Augmentation([spec], seed=seed)
    if library_of(spec) is not None:
        return Augmentation([ExternalLayer(spec, value_range=value_range)], seed=seed, value_range=value_range)
    if isinstance(spec, str):
        if spec in POLICIES:
            items = POLICIES.get(spec)
        elif spec in OPS:
            items = [spec]
        else:
            raise ConfigError(_unknown_name(spec))
    elif isinstance(spec, (list, tuple)):
        items = spec
    else:
        raise ConfigError(
            f"An augmentation spec is a policy name, a layer name or a list of ops. {received('spec', spec)}"
        )
    layers = []
    for index, item in enumerate(items):
        layers.extend(_build_item(item, index, value_range, sampling))
    return Augmentation(layers, seed=seed, value_range=value_range)


def _unknown_name(name):
    import difflib

    names = POLICIES.names() + OPS.names()
    close = difflib.get_close_matches(str(name), names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"Unknown augmentation {name!r}.{hint} Policies: {POLICIES.names()}; layers: {OPS.names()}."


def _build_item(item, index, value_range, sampling):
    if isinstance(item, AugmentationLayer):
        return [item]
    if library_of(item) is not None:  # a tf_keras, Keras 3 or keras-cv layer: runs as it is, unfused
        return [ExternalLayer(item, value_range=value_range)]
    if isinstance(item, str):
        if item in POLICIES and item not in OPS:  # inside a list, "mixup" means the layer
            return [_build_item(sub, index, value_range, sampling)[0] for sub in POLICIES.get(item)]
        item = {"op": item}
    if not isinstance(item, dict) or not isinstance(item.get("op"), str):
        raise ConfigError(
            f"Each augmentation op is a name, a mapping with an 'op' key, e.g. "
            f"{{'op': 'random_rotation', 'factor': 0.05}}, or a Keras preprocessing layer (tf_keras, Keras 3, "
            f"keras-cv). Received: item {index} = {item!r}"
        )
    params = {k: v for k, v in item.items() if k != "op"}
    name = item["op"]
    if name not in OPS:
        raise ConfigError(_unknown_name(name))
    cls = OPS.get(name)
    accepted = _parameters(cls)
    bad = [k for k in params if k not in accepted]
    if bad:
        raise ConfigError(f"{name} has no parameter(s) {bad}; accepted: {sorted(accepted)}. Received: {item!r}")
    params.setdefault("value_range", value_range)
    if issubclass(cls, GeometricLayer):
        for key, value in sampling.items():
            params.setdefault(key, value)
    try:
        return [cls(**params)]
    except TypeError as err:
        raise ConfigError(f"{name}: {err}. Accepted parameters: {sorted(accepted)}. Received: {item!r}") from None


def _parameters(cls):
    names = set()
    for klass in cls.__mro__:
        if klass in (keras.layers.Layer, object) or not issubclass(klass, AugmentationLayer):
            continue
        names.update(p for p in inspect.signature(klass.__init__).parameters if p not in ("self", "kwargs"))
    return names | {"seed", "value_range"}


# --- placement ------------------------------------------------------------------------


def resolve_placement(placement: str = "auto", strategy: tf.distribute.Strategy | None = None) -> str:
    """Decides where augmentation runs: `"data"` (tf.data on the host) or `"model"`.

    `"auto"` picks `"model"` when the strategy's devices are GPUs (the GPU does the work
    and the host CPU stays free for input), and `"data"` otherwise: on TPUs (whose
    programs should hold the model only, and whose hosts have many cores) and on CPUs.
    """
    if placement not in PLACEMENTS:
        raise ConfigError(f"placement must be one of {PLACEMENTS}. {received('placement', placement)}")
    if placement != "auto":
        return placement
    strategy = strategy or tf.distribute.get_strategy()
    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:  # the default strategy runs on the first GPU if there is one
        devices = [d.name for d in tf.config.list_logical_devices("GPU")[:1]]
    return "model" if any("GPU" in str(d).upper() for d in devices) else "data"


def split_augmentation(augmentation, placement: str = "auto", strategy=None):
    """Splits a chain into `(data_part, model_part)` for the chosen placement.

    Label-mixing layers (MixUp, CutMix) need the labels, so they always stay in the
    data pipeline; with `"model"` placement the image layers before them move into the
    model.  Either part may be `None`.
    """
    augmentation = create_augmentation(augmentation) if not isinstance(augmentation, Augmentation) else augmentation
    if resolve_placement(placement, strategy) == "data" or not augmentation.steps:
        return (augmentation if augmentation.steps else None), None
    first_label = next((i for i, layer in enumerate(augmentation.steps) if layer.takes_labels), None)
    if first_label is None:
        check_in_model(augmentation.steps)
        return None, augmentation
    if any(not layer.takes_labels for layer in augmentation.steps[first_label:]):
        raise ConfigError(
            "With placement='model', image ops after MixUp/CutMix cannot move into the model; put MixUp/CutMix last."
        )
    image_part = augmentation.steps[:first_label]
    check_in_model(image_part)
    data = Augmentation(augmentation.steps[first_label:], seed=augmentation.seed)
    model = Augmentation(image_part, seed=augmentation.seed) if image_part else None
    return data, model


def augmented_model(model: keras.Model, augmentation) -> keras.Model:
    """Wraps `model` so that `augmentation` runs as its first layer ("model" placement).

    The augmentation is active in `fit` and a pass-through in `predict`/`evaluate`.
    The result saves and loads like any tf_keras model (importing tfimgopt registers the
    layers); `model.layers[-1]` is the original model, which is what to prune or export.
    """
    if augmentation.takes_labels:
        raise ConfigError("MixUp/CutMix need the labels and cannot run inside the model; use placement='data'.")
    check_in_model(getattr(augmentation, "steps", [augmentation]))
    from tfimgopt.keras3 import as_tf_keras

    model = as_tf_keras(model, "augmented_model")  # a Keras 3 model inside a tf_keras one would not train
    if not isinstance(model, keras.Model):
        raise ConfigError(f"augmented_model needs a tf_keras model. Received: model of type {type(model).__name__}")
    inputs = keras.Input(model.input_shape[1:], dtype=model.inputs[0].dtype, name="images")
    outputs = model(augmentation(inputs))
    return keras.Model(inputs, outputs, name=f"{model.name}_augmented")

