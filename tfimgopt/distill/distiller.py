"""Knowledge distillation as a Keras model: a frozen teacher guides a student.

Loss per example (Hinton et al., 2015), by default:

    alpha * CE(y, student(x)) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))

where `t` and `s` are the teacher's and student's logits. The teacher runs in inference
mode and never changes; only the student is trained. `T^2` keeps the gradient scale of
the soft term independent of the temperature. The soft term may instead be a weighted sum
of distillation losses (`LogitsDistillation`, `FeatureDistillation` between named layers),
as in Keras 3's `keras.distillation`.
"""

from __future__ import annotations

from typing import Any

from tfimgopt.compat import keras, tf
from tfimgopt.distill.losses import (
    LOSSES,
    DistillationLoss,
    KerasIOLoss,
    LogitsDistillation,
    check_temperature,
    kl_distillation,
    per_example_loss,
)
from tfimgopt.errors import ConfigError, received

TEACHER_LOGITS = "teacher_logits"
LABEL = "label"
LABELLED = "labelled"
UNLABELLED = -1  # the sparse label of an unlabelled example (tfimgopt.data.UNLABELLED)


def _check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be a number in [0, 1]. {received('alpha', alpha)}")
    return float(alpha)


# The default soft term, under its historical public name.
distillation_loss = kl_distillation
# Loss classes by the class name get_config records (the run config's LOSSES, by type).
LOSS_CLASSES = {cls.__name__: cls for cls in LOSSES.values()}


def _check_weights(weights: Any, n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    weights = list(weights)
    if len(weights) != n or any(isinstance(w, bool) or not isinstance(w, int | float) or w < 0 for w in weights):
        raise ConfigError(f"distillation_loss_weights must be {n} number(s) >= 0, one per distillation loss. "
                          f"{received('distillation_loss_weights', weights)}")
    return [float(w) for w in weights]


def _layer_output(model: keras.Model, name: str | None, role: str) -> tf.Tensor:
    if name is None:
        return model.outputs[0]
    try:
        return model.get_layer(name).output
    except ValueError:
        names = [layer.name for layer in model.layers]
        raise ConfigError(f"The {role} has no layer {name!r}. Its layers: {names}. "
                          f"{received(f'{role}_layer_name', name)}") from None


class Distiller(keras.Model):
    """Trains `student` on hard labels plus temperature-softened `teacher` outputs.

    A drop-in Keras model: `compile`, `fit`, `evaluate` and `predict` work as usual;
    calling it runs the student, and `evaluate` measures the student. Labels may be
    sparse integers or one-hot/soft rows (MixUp, CutMix). Batches may carry
    precomputed teacher logits as `(x, {"label": y, "teacher_logits": t})` (see
    `with_teacher_logits`), which skips the teacher's forward pass.

    Unlabelled images (a transfer set) train too: an example whose sparse label is -1,
    whose soft label row is all zeros, or whose `{"labelled": 0}` mask says so gets only
    the distillation term, `(1 - alpha) * T^2 * KL`; a batch of images alone (no labels)
    is all unlabelled.  The loss is still averaged over every example of the global
    batch, so the update under a distribution strategy equals the single-device one.
    Student loss and metrics are averaged over labelled examples only.

    Both models must output logits (softmax heads are turned back into logits). After
    training, save or compress `distiller.student` on its own: projections learned by
    `FeatureDistillation` are not part of it.

    Args:
        teacher: A trained tf_keras model; frozen here.
        student: The tf_keras model to train.
        alpha: Weight of the hard-label loss in [0, 1]; `1 - alpha` weighs the
            distillation term. May be overridden in `compile`.
        temperature: Softening temperature > 0 of the default logits term. May be
            overridden in `compile`.
        distillation_losses: Instead of the default term: one `DistillationLoss` or a
            list (`LogitsDistillation(temperature)`, `FeatureDistillation(loss,
            teacher_layer_name, student_layer_name)`), summed with...
        distillation_loss_weights: ...these weights (default 1 each).
        student_loss_weight: Keras 3's name for `alpha`.

    Raises:
        ConfigError: alpha outside [0, 1], temperature <= 0, models with different
            numbers of outputs, unknown layer names, or mismatched weights.

    Example:
        >>> from tfimgopt.distill import Distiller
        >>> from tfimgopt.models import create_model
        >>> teacher = create_model("small_cnn", (16, 16, 1), 10)
        >>> student = create_model("tiny_cnn", (16, 16, 1), 10)
        >>> distiller = Distiller(teacher, student)
        >>> distiller.compile(optimizer="adam", metrics=["accuracy"], alpha=0.1, temperature=4)
    """

    def __init__(
        self,
        teacher: keras.Model,
        student: keras.Model,
        alpha: float | None = None,
        temperature: float = 4.0,
        distillation_losses: DistillationLoss | list[DistillationLoss] | None = None,
        distillation_loss_weights: list[float] | None = None,
        student_loss_weight: float | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        from tfimgopt.keras3 import as_logits, as_tf_keras

        teacher, student = (as_tf_keras(m, f"Distiller ({name})") for name, m in (("teacher", teacher),
                                                                                 ("student", student)))
        for name, model in (("teacher", teacher), ("student", student)):
            if not isinstance(model, keras.Model):
                raise ConfigError(
                    f"{name} must be a tf_keras Model (Keras 3 models are converted with "
                    f"tfimgopt.keras3.from_keras3). Received: {name} of type {type(model).__name__}"
                )
        # Distillation compares temperature-softened logits: softmax outputs are turned back into logits.
        teacher, student = as_logits(teacher, "Distiller (teacher)"), as_logits(student, "Distiller (student)")
        if teacher.output_shape[-1] != student.output_shape[-1]:
            raise ConfigError(
                "teacher and student must output the same number of classes. "
                f"Received: teacher={teacher.output_shape}, student={student.output_shape}"
            )
        self.teacher = teacher
        self.student = student
        self.teacher.trainable = False
        if alpha is not None and student_loss_weight is not None and alpha != student_loss_weight:
            raise ConfigError("alpha and student_loss_weight are two names for one weight; give one. Received: "
                              f"alpha={alpha!r}, student_loss_weight={student_loss_weight!r}")
        self.alpha = _check_alpha(next((a for a in (alpha, student_loss_weight) if a is not None), 0.1))
        self.temperature = check_temperature(temperature)
        self._custom_losses = distillation_losses is not None
        self._loss_fn = None  # compile(distillation_loss_fn=...)
        if self._custom_losses:
            losses = [distillation_losses] if isinstance(distillation_losses, DistillationLoss) \
                else list(distillation_losses)
            self._set_losses(losses, _check_weights(distillation_loss_weights, len(losses)))
        else:
            if distillation_loss_weights is not None:
                raise ConfigError("distillation_loss_weights needs distillation_losses. "
                                  f"{received('distillation_loss_weights', distillation_loss_weights)}")
            self._set_losses([LogitsDistillation(self.temperature)], [1.0])
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        self.total_loss_tracker = keras.metrics.Mean(name="loss")
        self.student_loss_fn = None

    def compile(
        self,
        optimizer: Any = "adam",
        metrics: Any = None,
        student_loss_fn: Any = None,
        distillation_loss_fn: Any = None,
        alpha: float | None = None,
        temperature: float | None = None,
        **kwargs: Any,
    ) -> None:
        """Configures training.

        Args:
            optimizer: Optimizer for the student.
            metrics: Metrics on the student's predictions (e.g. `["accuracy"]`).
            student_loss_fn: Hard-label loss on logits; by default cross-entropy,
                sparse or categorical to match the labels.
            distillation_loss_fn: The soft term, as keras.io's distillation example
                defines it: a Keras loss (e.g. `KLDivergence()`) or any
                `fn(teacher_probs, student_probs)` is applied to the temperature-softened
                probabilities and scaled by T^2. A three-argument
                `fn(teacher_logits, student_logits, temperature)` gets the logits. By
                default the T^2-scaled KL divergence, computed stably from the logits.
            alpha: Overrides the constructor's alpha.
            temperature: Overrides the constructor's temperature.
            **kwargs: Passed to `keras.Model.compile` (e.g. `jit_compile=True`).
        """
        # As weighted metrics, so that unlabelled examples (weight 0) do not count:
        # Keras ignores sample weights for plain `metrics`.
        weighted = list(metrics or []) + list(kwargs.pop("weighted_metrics", None) or [])
        super().compile(optimizer=optimizer, weighted_metrics=weighted or None, **kwargs)
        if alpha is not None:
            self.alpha = _check_alpha(alpha)
        if temperature is not None:
            self.temperature = check_temperature(temperature)
        if self._custom_losses and (distillation_loss_fn is not None or temperature is not None):
            raise ConfigError("This Distiller has its distillation_losses: set their temperature and loss there, "
                              "not in compile(). Received: "
                              f"distillation_loss_fn={distillation_loss_fn!r}, temperature={temperature!r}")
        self.student_loss_fn = per_example_loss(student_loss_fn) if student_loss_fn is not None else None
        if not self._custom_losses:
            self._loss_fn = distillation_loss_fn
            term = KerasIOLoss(self.temperature, distillation_loss_fn) if distillation_loss_fn is not None \
                else LogitsDistillation(self.temperature)
            self._set_losses([term], [1.0])

    def _set_losses(self, losses: list[Any], weights: list[float]) -> None:
        """Checks and builds the distillation terms, and the models giving the outputs they compare."""
        if not losses or not all(isinstance(loss, DistillationLoss) for loss in losses):
            raise ConfigError("distillation_losses must be one or more DistillationLoss objects (LogitsDistillation, "
                              f"FeatureDistillation). {received('distillation_losses', losses)}")
        teacher_names = list(dict.fromkeys([None, *(loss.teacher_layer_name for loss in losses)]))
        student_names = list(dict.fromkeys([None, *(loss.student_layer_name for loss in losses)]))
        features = len(teacher_names) > 1 or len(student_names) > 1
        if features:  # layer outputs need functional (or Sequential) models
            teacher_outputs = [_layer_output(self.teacher, n, "teacher") for n in teacher_names]
            student_outputs = [_layer_output(self.student, n, "student") for n in student_names]
            shapes = {("teacher", n): o.shape[1:] for n, o in zip(teacher_names, teacher_outputs, strict=True)}
            shapes.update({("student", n): o.shape[1:] for n, o in zip(student_names, student_outputs, strict=True)})
        else:
            shapes = {("teacher", None): tf.TensorShape(self.teacher.output_shape[1:]),
                      ("student", None): tf.TensorShape(self.student.output_shape[1:])}
        for loss in losses:
            loss.build(shapes["teacher", loss.teacher_layer_name], shapes["student", loss.student_layer_name])
        self.distillation_losses = losses
        self.distillation_loss_weights = weights
        self._teacher_names, self._student_names = teacher_names, student_names
        self._teacher_taps = keras.Model(self.teacher.inputs, teacher_outputs) if features else None
        self._student_taps = keras.Model(self.student.inputs, student_outputs) if features else None
        # Tracked as attributes, so their variables are saved with the distiller (not the student).
        self.projections = [layer for loss in losses for layer in loss.layers]

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        # Listing the trackers here lets Keras reset them at the start of each epoch.
        trackers = [self.total_loss_tracker, self.student_loss_tracker, self.distillation_loss_tracker]
        if self.compiled_metrics is not None:
            trackers += self.compiled_metrics.metrics
        return trackers

    @property
    def checkpoint_model(self) -> keras.Model:
        """What checkpoints save: the student (the teacher never changes)."""
        return self.student

    def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.student(inputs, training=training)

    def _hard_loss(self, y: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        if self.student_loss_fn is not None:
            return self.student_loss_fn(y, logits)
        logits = tf.cast(logits, tf.float32)
        if y.dtype.is_floating and y.shape.rank == 2:
            return tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=logits)
        y = tf.reshape(tf.cast(y, tf.int32), [-1])
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)

    def _unpack(self, data: Any):
        """`(x, y, teacher_logits, labelled_mask)`; y is made safe to feed the hard loss."""
        if isinstance(data, tuple | list) and len(data) >= 2:
            x, y = data[0], data[1]
        else:
            x, y = (data[0] if isinstance(data, tuple | list) else data), None
        teacher_logits, mask = None, None
        if isinstance(y, dict):
            teacher_logits = y.get(TEACHER_LOGITS)
            mask = y.get(LABELLED)
            y = y.get(LABEL)
        batch = tf.shape(x)[0]
        if y is None:
            y = tf.zeros([batch], tf.int32)
            mask = tf.zeros([batch], tf.float32)
        elif y.dtype.is_floating and y.shape.rank == 2:
            if mask is None:
                mask = tf.cast(tf.reduce_sum(y, axis=-1) > 0, tf.float32)
        else:
            y = tf.reshape(y, [-1])
            if mask is None:
                mask = tf.cast(y >= 0, tf.float32)
            y = tf.maximum(y, tf.zeros_like(y))
        return x, y, teacher_logits, tf.cast(tf.reshape(mask, [-1]), tf.float32)

    def _teacher_outputs(self, x, teacher_logits) -> dict[str | None, tf.Tensor]:
        """Layer name (None: logits) -> teacher output, without gradient."""
        if self._teacher_taps is None:
            outputs = {None: teacher_logits if teacher_logits is not None else self.teacher(x, training=False)}
        else:
            outputs = dict(zip(self._teacher_names, self._teacher_taps(x, training=False), strict=True))
            if teacher_logits is not None:
                outputs[None] = teacher_logits
        return {name: tf.stop_gradient(value) for name, value in outputs.items()}

    def _student_outputs(self, x, training: bool) -> dict[str | None, tf.Tensor]:
        if self._student_taps is None:
            return {None: self.student(x, training=training)}
        return dict(zip(self._student_names, self._student_taps(x, training=training), strict=True))

    def _loss_terms(self, y, student, teacher, mask):
        hard = self._hard_loss(y, student[None]) * mask
        soft = tf.zeros_like(hard)
        for loss, weight in zip(self.distillation_losses, self.distillation_loss_weights, strict=True):
            soft += weight * loss.per_example(teacher[loss.teacher_layer_name], student[loss.student_layer_name])
        per_example = self.alpha * hard + (1.0 - self.alpha) * soft
        return hard, soft, per_example

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        x, y, teacher_logits, mask = self._unpack(data)
        teacher = self._teacher_outputs(x, teacher_logits)
        with tf.GradientTape() as tape:
            student = self._student_outputs(x, training=True)
            student_logits = student[None]
            hard, soft, per_example = self._loss_terms(y, student, teacher, mask)
            # Sum over the replica's examples / global batch: gradients summed across
            # replicas then equal the single-device gradient of the batch mean.
            loss = tf.nn.compute_average_loss(per_example)
            if self.student.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.student.losses))
            scaled = self.optimizer.get_scaled_loss(loss) if hasattr(self.optimizer, "get_scaled_loss") else loss
        variables = self.student.trainable_variables + [v for p in self.projections for v in p.trainable_variables]
        grads = tape.gradient(scaled, variables)
        if hasattr(self.optimizer, "get_unscaled_gradients"):
            grads = self.optimizer.get_unscaled_gradients(grads)
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        return self._update_metrics(y, student_logits, hard, soft, per_example, mask)

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        x, y, teacher_logits, mask = self._unpack(data)
        student = self._student_outputs(x, training=False)
        hard, soft, per_example = self._loss_terms(y, student, self._teacher_outputs(x, teacher_logits), mask)
        return self._update_metrics(y, student[None], hard, soft, per_example, mask)

    def _update_metrics(self, y, student_logits, hard, soft, per_example, mask) -> dict[str, tf.Tensor]:
        self.student_loss_tracker.update_state(hard, sample_weight=mask)
        self.distillation_loss_tracker.update_state(soft)
        self.total_loss_tracker.update_state(per_example)
        self.compiled_metrics.update_state(y, student_logits, sample_weight=mask)
        return {m.name: m.result() for m in self.metrics}

    def get_config(self) -> dict[str, Any]:
        config = {
            "name": self.name,
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            "student": keras.saving.serialize_keras_object(self.student),
            "alpha": self.alpha,
            "temperature": self.temperature,
        }
        if self._custom_losses:
            config["distillation_losses"] = [{"class_name": type(loss).__name__, "config": loss.get_config()}
                                             for loss in self.distillation_losses]
            config["distillation_loss_weights"] = list(self.distillation_loss_weights)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Distiller:
        config = dict(config)
        teacher = keras.saving.deserialize_keras_object(config.pop("teacher"))
        student = keras.saving.deserialize_keras_object(config.pop("student"))
        if config.get("distillation_losses") is not None:
            losses = []
            for item in config.pop("distillation_losses"):
                if item.get("class_name") not in LOSS_CLASSES:
                    raise ConfigError(f"Unknown distillation loss class {item.get('class_name')!r}: known are "
                                      f"{sorted(LOSS_CLASSES)}. {received('distillation_losses', item)}")
                losses.append(LOSS_CLASSES[item["class_name"]].from_config(item["config"]))
            config["distillation_losses"] = losses
        return cls(teacher, student, **config)


def with_teacher_logits(
    teacher: keras.Model, dataset: tf.data.Dataset, batch_size: int = 256
) -> tf.data.Dataset:
    """Runs the teacher once over an unbatched dataset and attaches its logits.

    Turns `(image, label)` pairs into `(image, {"label": label, "teacher_logits": t})`,
    which `Distiller` uses instead of calling the teacher at every step: a large saving
    when the teacher is much bigger than the student.

    Only valid when the student sees exactly the images the teacher saw: no random
    augmentation after this point (shuffling and batching are fine). With augmentation
    the teacher must see each augmented image, so train without this.

    Args:
        teacher: The trained teacher (logits out).
        dataset: Unbatched `(image, label)` pairs in a fixed order (not shuffled yet).
        batch_size: Batch size for the teacher's pass.

    Returns:
        An unbatched dataset of `(image, {"label", "teacher_logits"})`.
    """
    images = dataset.map(lambda x, y: x).batch(batch_size)
    logits = teacher.predict(images, verbose=0)
    logits_ds = tf.data.Dataset.from_tensor_slices(logits.astype("float32"))
    return tf.data.Dataset.zip((dataset, logits_ds)).map(
        lambda xy, t: (xy[0], {LABEL: xy[1], TEACHER_LOGITS: t})
    )
