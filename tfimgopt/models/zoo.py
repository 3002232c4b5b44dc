"""A small model zoo of image classifiers, all outputting logits, built on tf_keras.

Every model takes `uint8`-range images (0..255) and rescales them itself, so the same
model serves training, TFLite export and on-device inference without extra steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tfimgopt._registry import Registry
from tfimgopt.compat import keras
from tfimgopt.errors import ConfigError, received

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
        **kwargs: Passed to the builder (e.g. `alpha` for MobileNetV2, `width`).

    Returns:
        A `keras.Model` mapping images in [0, 255] to `num_classes` logits.

    Raises:
        ConfigError: unknown name (lists the valid ones), bad shape or class count, or
            a model that is not a tf_keras model.

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
    return builder(tuple(input_shape), num_classes, **kwargs)


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


@register_model("tiny_cnn")
def tiny_cnn(input_shape: Sequence[int], num_classes: int, filters: int = 4) -> keras.Model:
    """One small convolution and a linear classifier: the smallest student."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(input_shape, name="image"),
            layers.Rescaling(1.0 / 255.0, name="rescale"),
            layers.Conv2D(filters, 3, padding="same", activation="relu", name="conv1"),
            layers.MaxPooling2D(name="pool1"),
            layers.Flatten(name="flatten"),
            _classifier(num_classes),
        ],
        name="tiny_cnn",
    )


@register_model("compact_cnn")
def compact_cnn(input_shape: Sequence[int], num_classes: int, filters: int = 16) -> keras.Model:
    """Two small convolutions (`filters`, then twice as many) and a linear classifier: the
    default distillation student (25k parameters at 32x32, about 30 KiB as int8)."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(input_shape, name="image"),
            layers.Rescaling(1.0 / 255.0, name="rescale"),
            layers.Conv2D(filters, 3, padding="same", activation="relu", name="conv1"),
            layers.MaxPooling2D(name="pool1"),
            layers.Conv2D(2 * filters, 3, padding="same", activation="relu", name="conv2"),
            layers.MaxPooling2D(name="pool2"),
            layers.Flatten(name="flatten"),
            _classifier(num_classes),
        ],
        name="compact_cnn",
    )


def _application(base_fn, name: str, scale: float, offset: float):
    def build(input_shape: Sequence[int], num_classes: int, bn_momentum: float = 0.9,
              **kwargs: Any) -> keras.Model:
        if not isinstance(bn_momentum, int | float) or isinstance(bn_momentum, bool) or not 0 <= bn_momentum < 1:
            raise ConfigError(f"bn_momentum must be in [0, 1). {received('bn_momentum', bn_momentum)}")
        inputs = keras.Input(input_shape, name="image")
        x = keras.layers.Rescaling(scale, offset=offset, name="rescale")(inputs)
        # weights=None: nothing is downloaded; input_tensor keeps the model flat, which
        # TFMOT needs (it cannot prune or quantize inside nested models).
        base = base_fn(
            input_tensor=x, include_top=False, weights=None, pooling="avg", **kwargs
        )
        # Keras builds these BatchNormalization layers with momentum 0.999, tuned for
        # ImageNet-length training: after a few hundred steps from scratch the moving
        # statistics are still near their initial values and inference gives chance
        # accuracy (measured: MobileNetV2 on the digits, 320 steps -> 10.3%).
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = float(bn_momentum)
        outputs = _classifier(num_classes)(base.output)
        return keras.Model(inputs, outputs, name=name)

    build.__doc__ = (
        f"`tf_keras.applications` {name} with random weights and our classifier; BatchNormalization "
        "momentum `bn_momentum` (0.9: from-scratch training on small data; Keras's 0.999 needs long runs)."
    )
    return build


register_model("mobilenet_v2")(
    _application(keras.applications.MobileNetV2, "mobilenet_v2", 1.0 / 127.5, -1.0)
)
register_model("resnet50")(
    _application(keras.applications.ResNet50, "resnet50", 1.0 / 127.5, -1.0)
)
