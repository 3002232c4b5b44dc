"""A small model zoo of image classifiers, all outputting logits, built on tf_keras.

Every model takes `uint8`-range images (0..255) and rescales them itself, so the same
model serves training, TFLite export and on-device inference without extra steps.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from typing import Any

from tfimgopt._registry import Registry
from tfimgopt.compat import keras
from tfimgopt.errors import ConfigError, EnvironmentProblem, received

ModelBuilder = Callable[..., keras.Model]
_REGISTRY: Registry[ModelBuilder] = Registry("model")


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Registers a builder `fn(input_shape, num_classes, **kw) -> keras.Model` by name.

    Raises:
        ConfigError: if the name is registered already.

    Example:
        >>> from tfimgopt.models import create_model, register_model
        >>> @register_model("my_mlp")
        ... def my_mlp(input_shape, num_classes):
        ...     from tfimgopt.compat import keras
        ...     return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
        ...                              keras.layers.Dense(num_classes)])
        >>> create_model("my_mlp", (8, 8, 1), 10).output_shape
        (None, 10)
    """

    return _REGISTRY.register(name)


def list_models(filter: str | None = None, exclude: Sequence[str] = ()) -> list[str]:  # noqa: A002
    """Names accepted by `create_model`, optionally matching a shell pattern (`"mobilenet*"`)."""
    return _REGISTRY.names(filter, exclude)


def is_graph_model(model: Any) -> bool:
    """True for tf_keras Sequential and functional models (what TFMOT can rewrite)."""
    return isinstance(model, keras.Model) and bool(getattr(model, "_is_graph_network", False))


def create_model(
    name: str | keras.Model,
    input_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
    **kwargs: Any,
) -> keras.Model:
    """Builds a classifier by name, or checks and returns a model you built yourself.

    Args:
        name: One of `list_models()`, or a tf_keras Sequential/functional model.
            Subclassed models train fine, but the compression stages (pruning, QAT)
            cannot rewrite them; build those as Sequential or functional models.
        input_shape: `(height, width, channels)`.
        num_classes: Number of output logits.
        **kwargs: Passed to the builder (e.g. `alpha` for MobileNetV2, `width`), and
            `weights`: None (random), `"imagenet"` (MobileNetV2/V3, EfficientNetB0:
            `tf_keras.applications` downloads them) or the path of a weights file (of
            the backbone for those four, of the whole model for the others).

    Returns:
        A `keras.Model` mapping images in [0, 255] to `num_classes` logits.

    Raises:
        ConfigError: unknown name (lists the valid ones), bad shape or class count, a
            model that is not a tf_keras model, or a weights file that is missing or
            does not fit.
        EnvironmentProblem: `weights="imagenet"` without network access (names the host
            and the offline fix).

    Example:
        >>> from tfimgopt.models import create_model
        >>> model = create_model("small_cnn", (32, 32, 1), 10)
    """
    if isinstance(name, keras.Model):
        return name
    if not isinstance(name, str):
        module = type(name).__module__
        hint = (
            " It looks like a Keras 3 model; tfimgopt uses tf_keras (Keras 2). Build it "
            "with `from tfimgopt.compat import keras`."
            if module.startswith("keras") else ""
        )
        raise ConfigError(
            f"create_model takes a model name or a tf_keras Model.{hint} "
            f"Received: model of type {module}.{type(name).__name__}"
        )
    builder = _REGISTRY.get(name)
    if (
        input_shape is None
        or len(input_shape) != 3
        or not all(isinstance(d, int) and d > 0 for d in input_shape)
    ):
        raise ConfigError(
            f"input_shape must be (height, width, channels) of positive ints. "
            f"{received('input_shape', input_shape)}"
        )
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ConfigError(f"num_classes must be an int >= 2. {received('num_classes', num_classes)}")
    weights = kwargs.get("weights")
    if weights is None or "weights" in inspect.signature(builder).parameters:
        return builder(tuple(input_shape), num_classes, **kwargs)
    # A zoo model without pretrained weights: a path is a weights file of the whole model.
    kwargs.pop("weights")
    _check_weights(name, weights, input_shape, imagenet=False)
    model = builder(tuple(input_shape), num_classes, **kwargs)
    try:
        model.load_weights(os.fspath(weights))
    except (ValueError, OSError, KeyError) as err:
        raise _load_failed(name, weights, err) from None
    return model


def _classifier(num_classes: int) -> keras.layers.Layer:
    # float32 logits even under a mixed-precision policy: softmax/loss stay stable.
    return keras.layers.Dense(num_classes, name="classifier", dtype="float32")


@register_model("small_cnn")
def small_cnn(
    input_shape: Sequence[int], num_classes: int, width: int = 32, dense: int = 256,
    dropout: float = 0.3,
) -> keras.Model:
    """A VGG-style CNN (about 1.1M parameters at 32x32x1): the default teacher."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(input_shape, name="image"),
            layers.Rescaling(1.0 / 255.0, name="rescale"),
            layers.Conv2D(width, 3, padding="same", activation="relu", name="conv1"),
            layers.Conv2D(width, 3, padding="same", activation="relu", name="conv2"),
            layers.MaxPooling2D(name="pool1"),
            layers.Conv2D(2 * width, 3, padding="same", activation="relu", name="conv3"),
            layers.Conv2D(2 * width, 3, padding="same", activation="relu", name="conv4"),
            layers.MaxPooling2D(name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dropout(dropout, name="dropout"),
            layers.Dense(dense, activation="relu", name="fc"),
            _classifier(num_classes),
        ],
        name="small_cnn",
    )


def _conv_pool_classifier(name: str, input_shape: Sequence[int], num_classes: int,
                          widths: Sequence[int]) -> keras.Model:
    """Rescaling, then a 3x3 ReLU convolution and a 2x2 max-pool per width, then a linear classifier."""
    layers = keras.layers
    blocks = []
    for i, width in enumerate(widths, start=1):
        blocks += [layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{i}"),
                   layers.MaxPooling2D(name=f"pool{i}")]
    return keras.Sequential(
        [keras.Input(input_shape, name="image"), layers.Rescaling(1.0 / 255.0, name="rescale"), *blocks,
         layers.Flatten(name="flatten"), _classifier(num_classes)],
        name=name,
    )


@register_model("tiny_cnn")
def tiny_cnn(input_shape: Sequence[int], num_classes: int, filters: int = 4) -> keras.Model:
    """One small convolution and a linear classifier: the smallest student."""
    return _conv_pool_classifier("tiny_cnn", input_shape, num_classes, (filters,))


@register_model("compact_cnn")
def compact_cnn(input_shape: Sequence[int], num_classes: int, filters: int = 16) -> keras.Model:
    """Two small convolutions (`filters`, then twice as many) and a linear classifier: the
    default distillation student (25k parameters at 32x32, about 30 KiB as int8)."""
    return _conv_pool_classifier("compact_cnn", input_shape, num_classes, (filters, 2 * filters))


# Where tf_keras.applications downloads ImageNet weights from (named in the offline error).
WEIGHTS_HOST = "storage.googleapis.com"


def _check_weights(name: str, weights: Any, input_shape: Sequence[int], imagenet: bool) -> None:
    if weights is None:
        return
    if weights == "imagenet":
        if not imagenet:
            raise ConfigError(f"{name} has no ImageNet weights in this zoo; models with them: "
                              f"{', '.join(n for n in list_models() if n in IMAGENET_MODELS)}. "
                              f"{received('weights', weights)}")
        if input_shape[-1] != 3:
            raise ConfigError(f"ImageNet weights take 3-channel (RGB) images; these have {input_shape[-1]} "
                              "(for grayscale data set data.channels=3). "
                              f"{received('input_shape', tuple(input_shape))}")
        return
    if not isinstance(weights, str | os.PathLike) or not os.path.isfile(weights):
        raise ConfigError(f"weights must be None, 'imagenet' or the path of a weights file that exists. "
                          f"{received('weights', weights)}")


def _load_failed(name: str, weights: Any, err: Exception) -> Exception:
    text = str(err)
    if weights == "imagenet" and ("URL fetch failure" in text or "fetch" in text.lower()):
        return EnvironmentProblem(
            f"Could not download the ImageNet weights of {name} from {WEIGHTS_HOST} (no network access?): "
            f"{text.splitlines()[0]}. Offline: download that file where there is network access and pass "
            f"weights='path/to/file.h5' (or copy it into ~/.keras/models/, where Keras looks first).")
    reason = text.splitlines()[0] if text else type(err).__name__
    return ConfigError(f"The weights file does not fit {name} (a file saved from the same architecture, input "
                       f"channels and options is needed): {reason}. {received('weights', weights)}")


_SCALAR_OPS = {"__operators__.add": lambda y: (1.0, y), "math.multiply": lambda y: (y, 0.0)}


def _without_op_layers(model: keras.Model) -> keras.Model:
    """The same model with its `x + c` and `x * c` TF-op layers (TFOpLambda, which
    tf_keras.applications' MobileNetV3 uses in its hard-sigmoid) rebuilt as Rescaling
    layers: TFMOT's quantization cannot clone TF-op layers. Outputs and weights are equal."""
    config = model.get_config()
    rescaling = next((layer for layer in config["layers"] if layer["class_name"] == "Rescaling"), None)
    changed = False
    for layer in config["layers"]:
        if layer["class_name"] != "TFOpLambda":
            continue
        function = layer["config"]["function"]
        (source, node, tensor, kwargs), = layer["inbound_nodes"]
        y = kwargs.get("y")
        if function not in _SCALAR_OPS or not isinstance(y, int | float) or set(kwargs) - {"y", "name"}:
            raise ConfigError(f"{model.name} has a TF-op layer {layer['name']} ({function}) that cannot be rebuilt "
                              "as a layer, so TFMOT could not quantize the model.")
        scale, offset = _SCALAR_OPS[function](float(y))
        layer.update(class_name="Rescaling", registered_name=None,
                     module=rescaling["module"] if rescaling else "keras.layers",
                     config={"name": layer["config"]["name"], "trainable": True, "dtype": layer["config"]["dtype"],
                             "scale": scale, "offset": offset},
                     inbound_nodes=[[[source, node, tensor, {}]]])
        changed = True
    if not changed:
        return model
    rebuilt = keras.Model.from_config(config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _application(base_fn, name: str, scale: float | None, offset: float = 0.0, *, imagenet: bool = True,
                 builtin_preprocessing: bool = False):
    """A `tf_keras.applications` backbone under the zoo's rules. `scale`/`offset`: the input
    scaling the backbone was trained with, as a Rescaling layer (None when the backbone
    has its own, `builtin_preprocessing`)."""

    def build(input_shape: Sequence[int], num_classes: int, bn_momentum: float = 0.9, weights: Any = None,
              **kwargs: Any) -> keras.Model:
        if not isinstance(bn_momentum, int | float) or isinstance(bn_momentum, bool) or not 0 <= bn_momentum < 1:
            raise ConfigError(f"bn_momentum must be in [0, 1). {received('bn_momentum', bn_momentum)}")
        _check_weights(name, weights, input_shape, imagenet)
        inputs = keras.Input(input_shape, name="image")
        x = inputs if scale is None else keras.layers.Rescaling(scale, offset=offset, name="rescale")(inputs)
        if builtin_preprocessing and "include_preprocessing" in inspect.signature(base_fn).parameters:
            kwargs.setdefault("include_preprocessing", True)
        # weights: None (random), "imagenet" (tf_keras.applications downloads and checks the file)
        # or a path (it loads it). input_tensor keeps the model flat, which TFMOT needs (it
        # cannot prune or quantize inside nested models).
        source = weights if weights in (None, "imagenet") else os.fspath(weights)
        try:
            base = base_fn(input_tensor=x, include_top=False, weights=source, pooling="avg", **kwargs)
        except (ValueError, OSError, KeyError) as err:
            if weights is None:
                raise
            raise _load_failed(name, weights, err) from None
        except Exception as err:  # get_file raises a bare Exception when the download fails
            if weights != "imagenet":
                raise
            raise _load_failed(name, weights, err) from None
        # Keras builds these BatchNormalization layers with momentum 0.999, tuned for
        # ImageNet-length training: after a few hundred steps from scratch the moving
        # statistics are still near their initial values and inference gives chance
        # accuracy (measured: MobileNetV2 on the digits, 320 steps -> 10.3%).
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = float(bn_momentum)
        outputs = _classifier(num_classes)(base.output)
        return _without_op_layers(keras.Model(inputs, outputs, name=name))

    preprocessing = ("its own input scaling (built in)" if scale is None
                     else f"input scaling x * {scale:.6g} + {offset:g}")
    build.__doc__ = (
        f"`tf_keras.applications` {name} with our classifier and {preprocessing}, so it takes 0..255 images; "
        "`weights`: None (random), 'imagenet' (tf_keras.applications's download) or a weights file of the "
        "backbone; BatchNormalization momentum `bn_momentum` (0.9: from-scratch training on small data; "
        "Keras's 0.999 needs long runs)."
    )
    return build


IMAGENET_MODELS = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0")

# MobileNets were trained on [-1, 1] inputs; EfficientNet and MobileNetV3 scale inside.
register_model("mobilenet_v2")(
    _application(keras.applications.MobileNetV2, "mobilenet_v2", 1.0 / 127.5, -1.0)
)
register_model("mobilenet_v3_small")(
    _application(keras.applications.MobileNetV3Small, "mobilenet_v3_small", None, builtin_preprocessing=True)
)
register_model("mobilenet_v3_large")(
    _application(keras.applications.MobileNetV3Large, "mobilenet_v3_large", None, builtin_preprocessing=True)
)
register_model("efficientnet_b0")(
    _application(keras.applications.EfficientNetB0, "efficientnet_b0", None, builtin_preprocessing=True)
)
# ResNet50's ImageNet weights expect Caffe-style input (BGR, mean subtracted), which this
# entry does not build: random weights only.
register_model("resnet50")(
    _application(keras.applications.ResNet50, "resnet50", 1.0 / 127.5, -1.0, imagenet=False)
)
