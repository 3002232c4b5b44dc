"""Knowledge distillation as a Keras model: a frozen teacher guides a student.

Loss per example (Hinton et al., 2015):

    alpha * CE(y, student(x)) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))

where `t` and `s` are the teacher's and student's logits. The teacher runs in inference
mode and never changes; only the student is trained. `T^2` keeps the gradient scale of
the soft term independent of the temperature.
"""

from __future__ import annotations

from typing import Any

from tfimgopt.compat import keras, tf
from tfimgopt.errors import ConfigError, received

TEACHER_LOGITS = "teacher_logits"
LABEL = "label"
LABELLED = "labelled"
UNLABELLED = -1  # the sparse label of an unlabelled example (tfimgopt.data.UNLABELLED)


def _check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be a number in [0, 1]. {received('alpha', alpha)}")
    return float(alpha)


def _check_temperature(temperature: Any) -> float:
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not temperature > 0
        or temperature == float("inf")
    ):
        raise ConfigError(f"temperature must be a finite number > 0. {received('temperature', temperature)}")
    return float(temperature)


def _per_example(loss_fn: Any) -> Any:
    """A copy of a Keras loss that returns one value per example (no reduction)."""
    if isinstance(loss_fn, keras.losses.Loss):
        config = loss_fn.get_config()
        config["reduction"] = keras.losses.Reduction.NONE
        return type(loss_fn).from_config(config)
    return loss_fn


def distillation_loss(
    teacher_logits: tf.Tensor, student_logits: tf.Tensor, temperature: float
) -> tf.Tensor:
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
    p_teacher = tf.nn.softmax(t)
    # KL = sum p_t * (log p_t - log p_s), with log-softmax instead of log(softmax).
    kl = tf.reduce_sum(p_teacher * (tf.nn.log_softmax(t) - tf.nn.log_softmax(s)), axis=-1)
    return kl * (temperature**2)


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

    Both models must output logits. After training, save or compress
    `distiller.student` on its own.

    Args:
        teacher: A trained tf_keras model; frozen here.
        student: The tf_keras model to train.
        alpha: Weight of the hard-label loss in [0, 1]; `1 - alpha` weighs the
            distillation term. May be overridden in `compile`.
        temperature: Softening temperature > 0. May be overridden in `compile`.

    Raises:
        ConfigError: alpha outside [0, 1], temperature <= 0, or models with different
            numbers of outputs.

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
        alpha: float = 0.1,
        temperature: float = 4.0,
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
        self.alpha = _check_alpha(alpha)
        self.temperature = _check_temperature(temperature)
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
            distillation_loss_fn: `fn(teacher_logits, student_logits, temperature)` ->
                per-example loss; by default `distillation_loss` (T^2-scaled KL).
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
            self.temperature = _check_temperature(temperature)
        self.student_loss_fn = _per_example(student_loss_fn) if student_loss_fn is not None else None
        self.distillation_loss_fn = distillation_loss_fn or distillation_loss

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

    def _loss_terms(self, y, student_logits, teacher_logits, mask):
        hard = self._hard_loss(y, student_logits) * mask
        soft = self.distillation_loss_fn(teacher_logits, student_logits, self.temperature)
        per_example = self.alpha * hard + (1.0 - self.alpha) * soft
        return hard, soft, per_example

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        x, y, teacher_logits, mask = self._unpack(data)
        if teacher_logits is None:
            teacher_logits = self.teacher(x, training=False)
        teacher_logits = tf.stop_gradient(teacher_logits)
        with tf.GradientTape() as tape:
            student_logits = self.student(x, training=True)
            hard, soft, per_example = self._loss_terms(y, student_logits, teacher_logits, mask)
            # Sum over the replica's examples / global batch: gradients summed across
            # replicas then equal the single-device gradient of the batch mean.
            loss = tf.nn.compute_average_loss(per_example)
            if self.student.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.student.losses))
            scaled = self.optimizer.get_scaled_loss(loss) if hasattr(self.optimizer, "get_scaled_loss") else loss
        variables = self.student.trainable_variables
        grads = tape.gradient(scaled, variables)
        if hasattr(self.optimizer, "get_unscaled_gradients"):
            grads = self.optimizer.get_unscaled_gradients(grads)
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        return self._update_metrics(y, student_logits, hard, soft, per_example, mask)

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        x, y, teacher_logits, mask = self._unpack(data)
        student_logits = self.student(x, training=False)
        if teacher_logits is None:
            teacher_logits = self.teacher(x, training=False)
        hard, soft, per_example = self._loss_terms(y, student_logits, teacher_logits, mask)
        return self._update_metrics(y, student_logits, hard, soft, per_example, mask)

    def _update_metrics(self, y, student_logits, hard, soft, per_example, mask) -> dict[str, tf.Tensor]:
        self.student_loss_tracker.update_state(hard, sample_weight=mask)
        self.distillation_loss_tracker.update_state(soft)
        self.total_loss_tracker.update_state(per_example)
        self.compiled_metrics.update_state(y, student_logits, sample_weight=mask)
        return {m.name: m.result() for m in self.metrics}

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            "student": keras.saving.serialize_keras_object(self.student),
            "alpha": self.alpha,
            "temperature": self.temperature,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Distiller:
        config = dict(config)
        teacher = keras.saving.deserialize_keras_object(config.pop("teacher"))
        student = keras.saving.deserialize_keras_object(config.pop("student"))
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
