"""Distillation losses as objects, in the style of Keras 3's `keras.distillation`: logits
distillation, and feature distillation between named teacher and student layers.

Each loss gives one value per example, so a `Distiller` can mask unlabelled examples,
average over the global batch under a distribution strategy, and compile with XLA. Each
round-trips through `get_config`/`from_config`.

Differences from Keras 3, on purpose: `FeatureDistillation` learns a projection (a 1x1
convolution on feature maps, a linear map on vectors) when the student's features are
narrower or wider than the teacher's; it trains with the student and is not part of it.
"""

from __future__ import annotations

import inspect
from typing import Any

from tfimgopt.compat import keras, tf
from tfimgopt.errors import ConfigError, received

KL_NAMES = ("kl_divergence", "kld", "kullback_leibler_divergence", "KLDivergence")


def kl_distillation(teacher_logits: tf.Tensor, student_logits: tf.Tensor, temperature: float) -> tf.Tensor:
    """Per-example `T^2 * KL(softmax(t / T) || softmax(s / T))`, computed stably in float32.

    Args:
        teacher_logits: `(batch, classes)` teacher logits.
        student_logits: `(batch, classes)` student logits.
        temperature: Softening temperature `T > 0`.

    Returns:
        A `(batch,)` float32 tensor.
    """
    t = tf.cast(teacher_logits, tf.float32) / temperature
    s = tf.cast(student_logits, tf.float32) / temperature
    # KL = sum p_t * (log p_t - log p_s), with log-softmax instead of log(softmax).
    kl = tf.reduce_sum(tf.nn.softmax(t) * (tf.nn.log_softmax(t) - tf.nn.log_softmax(s)), axis=-1)
    return kl * (temperature**2)


def check_temperature(temperature: Any) -> float:
    if (isinstance(temperature, bool) or not isinstance(temperature, int | float) or not temperature > 0
            or temperature == float("inf")):
        raise ConfigError(f"temperature must be a finite number > 0. {received('temperature', temperature)}")
    return float(temperature)


def per_example_loss(loss: Any) -> Any:
    """A copy of a Keras loss (tf_keras or Keras 3) that returns one value per example;
    other callables are returned as they are."""
    if isinstance(loss, keras.losses.Loss):
        config = loss.get_config()
        config["reduction"] = keras.losses.Reduction.NONE
        return type(loss).from_config(config)
    get_config = getattr(loss, "get_config", None)
    if callable(get_config) and hasattr(loss, "reduction") and hasattr(type(loss), "from_config"):
        config = dict(get_config())
        config["reduction"] = "none"  # Keras 3's word for no reduction
        return type(loss).from_config(config)
    return loss


def _reduce_to_examples(values: tf.Tensor) -> tf.Tensor:
    """Means a loss's output over every axis but the first (a scalar is broadcast)."""
    values = tf.cast(values, tf.float32)
    if values.shape.rank <= 1:
        return values
    return tf.reduce_mean(tf.reshape(values, [tf.shape(values)[0], -1]), axis=-1)


def _resolve(loss: Any, what: str) -> tuple[Any, str]:
    """(per-example callable, name) of a loss given as a name, a Keras loss or a function."""
    if isinstance(loss, str):
        try:
            fn = keras.losses.get(loss)
        except ValueError:
            raise ConfigError(f"Unknown {what} loss {loss!r}: use a Keras loss name such as 'mse', 'mae', "
                              f"'cosine_similarity', 'kl_divergence', or a loss object or function. "
                              f"{received('loss', loss)}") from None
        return per_example_loss(fn), loss
    if not callable(loss):
        raise ConfigError(f"The {what} loss must be a Keras loss name, a loss object or a function "
                          f"(y_true, y_pred). {received('loss', loss)}")
    return per_example_loss(loss), getattr(loss, "name", None) or getattr(loss, "__name__", type(loss).__name__)


def _is_kl(loss: Any) -> bool:
    if isinstance(loss, str):
        return loss in KL_NAMES
    return type(loss).__name__ == "KLDivergence" or getattr(loss, "__name__", "") in KL_NAMES


def _serialize_loss(loss: Any) -> Any:
    if isinstance(loss, str):
        return loss
    if isinstance(loss, keras.losses.Loss):
        return keras.losses.serialize(loss)
    raise ConfigError(f"This loss cannot be saved in a config: give it by name or as a tf_keras Loss object. "
                      f"{received('loss', loss)}")


def _deserialize_loss(loss: Any) -> Any:
    return loss if isinstance(loss, str) else keras.losses.deserialize(loss)


class DistillationLoss:
    """One distillation term of a `Distiller`: what it compares and how.

    Subclasses set `teacher_layer_name`/`student_layer_name` (None: the model's logits),
    may create variables in `build`, and implement `per_example`.
    """

    teacher_layer_name: str | None = None
    student_layer_name: str | None = None

    def build(self, teacher_shape: tf.TensorShape, student_shape: tf.TensorShape) -> None:
        """Checks the compared outputs fit together (shapes without the batch axis)."""

    @property
    def layers(self) -> list[keras.layers.Layer]:
        """Layers that train with the student but are not part of it (projections)."""
        return []

    def per_example(self, teacher: tf.Tensor, student: tf.Tensor) -> tf.Tensor:
        """One float32 loss value per example, shape `(batch,)`."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DistillationLoss:
        return cls(**config)


class LogitsDistillation(DistillationLoss):
    """Distillation on the models' outputs, softened by a temperature.

    With `loss="kl_divergence"` (the default, or a `KLDivergence` object) the term is
    `T^2 * KL(softmax(t / T) || softmax(s / T))`, computed stably from the logits; other
    losses compare the softened logits `t / T` and `s / T` directly, as in Keras 3.

    Args:
        temperature: Softening temperature > 0.
        loss: A Keras loss name, a loss object (tf_keras or Keras 3) or `fn(y_true, y_pred)`.

    Example:
        >>> from tfimgopt.distill import LogitsDistillation
        >>> term = LogitsDistillation(temperature=4.0)
        >>> term.get_config()
        {'temperature': 4.0, 'loss': 'kl_divergence'}
    """

    def __init__(self, temperature: float = 3.0, loss: Any = "kl_divergence"):
        self.temperature = check_temperature(temperature)
        self.loss = loss
        self._kl = _is_kl(loss)
        self._fn = None if self._kl else _resolve(loss, "logits distillation")[0]

    def build(self, teacher_shape, student_shape):
        if teacher_shape[-1] != student_shape[-1]:
            raise ConfigError(f"Logits distillation needs as many teacher as student classes. Received: teacher "
                              f"outputs {tuple(teacher_shape)}, student outputs {tuple(student_shape)}")

    def per_example(self, teacher, student):
        if self._kl:
            return kl_distillation(teacher, student, self.temperature)
        t = tf.cast(teacher, tf.float32) / self.temperature
        s = tf.cast(student, tf.float32) / self.temperature
        return _reduce_to_examples(self._fn(t, s))

    def get_config(self):
        return {"temperature": self.temperature, "loss": _serialize_loss(self.loss)}

    @classmethod
    def from_config(cls, config):
        return cls(config["temperature"], _deserialize_loss(config["loss"]))


class FeatureDistillation(DistillationLoss):
    """Distillation between an intermediate teacher layer and a student layer.

    The student's features pass through a learned projection to the teacher's width when
    the two differ (a linear map on the last axis: a 1x1 convolution on feature maps). It
    is trained with the student and dropped afterwards: the student stays as it was built.
    Spatial sizes must match (choose layers at the same resolution).

    Args:
        loss: A Keras loss name (`"mse"`, `"mae"`, `"cosine_similarity"`...), a loss
            object or `fn(teacher_features, student_features)`; averaged per example.
        teacher_layer_name: Teacher layer whose output is the target (None: the logits).
        student_layer_name: Student layer compared with it (None: the logits).
        projection: `"auto"` (learn one when the widths differ) or `None` (widths must match).

    Example:
        >>> from tfimgopt.distill import FeatureDistillation
        >>> term = FeatureDistillation("mse", teacher_layer_name="conv4", student_layer_name="conv1")
        >>> term.get_config()["teacher_layer_name"]
        'conv4'
    """

    def __init__(self, loss: Any = "mse", teacher_layer_name: str | None = None,
                 student_layer_name: str | None = None, projection: str | None = "auto"):
        if projection not in ("auto", None):
            raise ConfigError(f"projection must be 'auto' or None. {received('projection', projection)}")
        self.loss = loss
        self._fn = _resolve(loss, "feature distillation")[0]
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name
        self.projection = projection
        self._projection: keras.layers.Layer | None = None

    def build(self, teacher_shape, student_shape):
        teacher_shape, student_shape = tuple(teacher_shape), tuple(student_shape)
        where = (f"teacher layer {self.teacher_layer_name or '(logits)'} {teacher_shape}, "
                 f"student layer {self.student_layer_name or '(logits)'} {student_shape}")
        if teacher_shape[:-1] != student_shape[:-1]:
            raise ConfigError(f"Feature distillation compares features of the same spatial size; these differ: "
                              f"{where}. Choose layers at the same resolution.")
        if teacher_shape[-1] != student_shape[-1] and self._projection is None:
            if self.projection is None:
                raise ConfigError(f"The features have different widths ({where}) and projection=None. Use "
                                  "projection='auto' to learn a linear map between them.")
            name = f"projection_{self.student_layer_name}_to_{self.teacher_layer_name}"
            self._projection = keras.layers.Dense(teacher_shape[-1], use_bias=False, name=name, dtype="float32")
            self._projection.build((None, *student_shape))

    @property
    def layers(self):
        return [self._projection] if self._projection is not None else []

    def per_example(self, teacher, student):
        student = tf.cast(student, tf.float32)
        if self._projection is not None:
            student = self._projection(student)
        return _reduce_to_examples(self._fn(tf.cast(teacher, tf.float32), student))

    def get_config(self):
        return {"loss": _serialize_loss(self.loss), "teacher_layer_name": self.teacher_layer_name,
                "student_layer_name": self.student_layer_name, "projection": self.projection}

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "loss": _deserialize_loss(config["loss"])})


class KerasIOLoss(LogitsDistillation):
    """`Distiller.compile(distillation_loss_fn=...)` as keras.io's distillation example
    defines it: `fn(softmax(t / T), softmax(s / T)) * T^2` for a Keras loss or any
    two-argument callable; `fn(teacher_logits, student_logits, temperature)` for a
    three-argument one (tfimgopt's own form)."""

    def __init__(self, temperature: float, loss: Any):
        self.temperature = check_temperature(temperature)
        self.loss = loss
        self.form = distillation_fn_form(loss)
        self._kl = False
        self._fn = per_example_loss(loss) if self.form == "probabilities" else loss

    def per_example(self, teacher, student):
        if self.form == "logits":
            return _reduce_to_examples(self._fn(teacher, student, self.temperature))
        t = tf.nn.softmax(tf.cast(teacher, tf.float32) / self.temperature)
        s = tf.nn.softmax(tf.cast(student, tf.float32) / self.temperature)
        values = _reduce_to_examples(self._fn(t, s)) * (self.temperature**2)
        return values if values.shape.rank == 1 else tf.fill(tf.shape(teacher)[:1], values)

    def get_config(self):
        return {"temperature": self.temperature, "loss": _serialize_loss(self.loss)}


def distillation_fn_form(fn: Any) -> str:
    """`"probabilities"` (keras.io's two-argument form, and every Keras loss object) or
    `"logits"` (three arguments: teacher logits, student logits, temperature), told by the
    number of required positional parameters.

    Raises:
        ConfigError: not callable, or a signature that is neither (e.g. `*args`).
    """
    if isinstance(fn, keras.losses.Loss) or (hasattr(fn, "get_config") and hasattr(fn, "reduction")):
        return "probabilities"
    if not callable(fn):
        raise ConfigError(f"distillation_loss_fn must be callable. {received('distillation_loss_fn', fn)}")
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # some builtins have no signature
        params = []
    required = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    if not any(p.kind == p.VAR_POSITIONAL for p in params):
        if len(required) == 2:
            return "probabilities"
        if len(required) == 3:
            return "logits"
    raise ConfigError(
        "Cannot tell how to call distillation_loss_fn: pass a Keras loss or fn(teacher_probs, student_probs) "
        "(keras.io's form: applied to temperature-softened probabilities, scaled by T^2), or "
        f"fn(teacher_logits, student_logits, temperature). {received('distillation_loss_fn', fn)}")


LOSSES = {"logits": LogitsDistillation, "feature": FeatureDistillation}
DEFAULT_LOSSES = ({"type": "logits"},)


def loss_from_config(spec: dict[str, Any], temperature: float | None = None) -> tuple[DistillationLoss, float]:
    """A loss and its weight from a run config entry: `{"type": "logits" | "feature",
    "weight": 1.0, ...the loss's own arguments}`; a logits entry without a temperature
    takes `temperature`."""
    if not isinstance(spec, dict) or spec.get("type") not in LOSSES:
        raise ConfigError(f"Each distillation loss is a table with type one of {sorted(LOSSES)} (and weight, "
                          f"and the loss's own arguments). {received('loss', spec)}")
    args = {k: v for k, v in spec.items() if k not in ("type", "weight")}
    if spec["type"] == "logits" and "temperature" not in args and temperature is not None:
        args["temperature"] = temperature
    weight = spec.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
        raise ConfigError(f"A distillation loss weight must be a number >= 0. {received('weight', weight)}")
    try:
        return LOSSES[spec["type"]](**args), float(weight)
    except TypeError as err:
        accepted = [p for p in inspect.signature(LOSSES[spec["type"]]).parameters if p != "self"]
        raise ConfigError(f"Bad arguments for a {spec['type']} distillation loss ({err}); accepted: "
                          f"{accepted} and weight. {received('loss', spec)}") from None


def losses_from_config(specs: Any, temperature: float) -> dict[str, Any]:
    """`Distiller` keyword arguments for the losses of a run config (`distill.losses`):
    empty for the default (one logits term at `temperature`), else `distillation_losses`
    and `distillation_loss_weights`."""
    if not isinstance(specs, list | tuple) or not specs:
        raise ConfigError(f"distill.losses must be a non-empty list of loss tables. {received('losses', specs)}")
    if [dict(s) if isinstance(s, dict) else s for s in specs] == list(DEFAULT_LOSSES):
        return {}
    built = [loss_from_config(spec, temperature) for spec in specs]
    return {"distillation_losses": [loss for loss, _ in built], "distillation_loss_weights": [w for _, w in built]}
