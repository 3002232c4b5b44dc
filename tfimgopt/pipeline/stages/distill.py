"""The distillation stage: a small student learns from the baseline (the teacher)."""

from __future__ import annotations

import os
from typing import Any

from tfimgopt.compat import keras
from tfimgopt.errors import ConfigError
from tfimgopt.pipeline.config import DEFAULT_STUDENT, RunConfig, is_model_file
from tfimgopt.pipeline.context import RunContext, build_model, test_accuracy
from tfimgopt.pipeline.data import PreparedData
from tfimgopt.pipeline.stages.base import Stage, register_stage


def train_student(config: RunConfig, data: PreparedData, teacher: keras.Model, work_dir: str, strategy=None, log=print):
    """Distils `teacher` into `config.distill.student` on the transfer set (or the labelled
    training data), tuning alpha and temperature first if asked.

    Returns:
        `(student, alpha, temperature, tuning table or None)`.
    """
    from tfimgopt.distill import distill, tune_distillation

    c = config.distill
    train_ds = data.transfer if data.transfer is not None else data.train
    build_student = student_builder(config, data.splits.info)

    def student():
        keras.utils.set_random_seed(config.seed)
        return build_student()

    if c.tune:
        result = tune_distillation(
            teacher, student, train_ds, data.val, alphas=c.tune_alphas, temperatures=c.tune_temperatures,
            epochs=c.epochs, method=c.tune_method, learning_rate=c.learning_rate, strategy=strategy,
            seed=config.seed, losses=c.losses,
        )
        log(f"tuned: alpha={result.alpha:g}, temperature={result.temperature:g} "
            f"(val accuracy {result.val_accuracy:.4f})\n" + result.markdown())
        return result.student, result.alpha, result.temperature, result.table
    model = distill(teacher, student, train_ds, data.val, c.epochs, alpha=c.alpha, temperature=c.temperature,
                    learning_rate=c.learning_rate, strategy=strategy, work_dir=work_dir, losses=c.losses)
    return model, c.alpha, c.temperature, None


def student_builder(config: RunConfig, info):
    """A function building a fresh `distill.student`: a zoo model, or the user's student file
    (its architecture and weights, fed the run's input range)."""
    c = config.distill
    if not is_model_file(c.student):  # "auto" not settled by a run: the zoo teacher's default
        name = DEFAULT_STUDENT if c.student == "auto" else c.student
        return lambda: build_model(name, info, c.student_options, "distill.student_options")
    from tfimgopt.pipeline.adopt import load_user_model, with_input_range

    loaded = with_input_range(load_user_model(c.student, safe_mode=not config.train.unsafe,
                                              what="distill.student").model, config.data.input_range)

    def build():
        model = keras.models.clone_model(loaded)
        model.set_weights(loaded.get_weights())
        return model

    return build


def _teacher(config: RunConfig, info, user) -> keras.Model:
    if user is not None:
        return user.model
    return build_model(config.train.model, info, config.train.model_options, "train.model_options")


def check_student_smaller(config: RunConfig, info, user=None) -> None:
    """Refuses a student with at least as many parameters as its teacher, before anything trains."""
    teacher = _teacher(config, info, user).count_params()
    student = student_builder(config, info)().count_params()
    keras.utils.set_random_seed(config.seed)  # building them drew from the seeded generators
    teacher_name = user.label if user is not None else config.train.model
    if student >= teacher and not config.distill.allow_larger_student:
        raise ConfigError(
            f"The student ({config.distill.student}, {student:,} parameters) is not smaller than the teacher "
            f"({teacher_name}, {teacher:,} parameters) at image size {info.image_shape[0]}: distilling would "
            "ship a larger model. Choose a smaller distill.student or distill.student_options, or set "
            f"distill.allow_larger_student=true to do it anyway. Received: distill.student={config.distill.student!r}, "
            f"distill.student_options={config.distill.student_options!r}")


def check_losses(config: RunConfig, info, user=None) -> None:
    """Builds the configured distillation terms on fresh teacher and student models, so a
    wrong layer name or shape fails before anything trains."""
    from tfimgopt.distill import Distiller
    from tfimgopt.distill.losses import losses_from_config

    terms = losses_from_config(config.distill.losses, config.distill.temperature)
    if terms:
        Distiller(_teacher(config, info, user), student_builder(config, info)(), **terms)
        keras.utils.set_random_seed(config.seed)


class DistillStage(Stage):
    """Distils the baseline into `distill.student`; the student is what later stages compress."""

    name = "distill"
    order = 20
    settings = ("distill",)
    report_key = "student"

    def enabled(self, config: RunConfig) -> bool:
        return config.distill.enabled

    def inputs(self, config: RunConfig) -> dict[str, Any]:
        values = super().inputs(config)
        if os.path.exists(config.distill.student):  # a student file: its bytes, not only its name
            from tfimgopt import _io

            values["distill.student:sha256"] = _io.sha256_tree(config.distill.student)
        return values

    def preflight(self, ctx: RunContext) -> None:
        check_student_smaller(ctx.config, ctx.data.splits.info, ctx.user)
        check_losses(ctx.config, ctx.data.splits.info, ctx.user)

    def run(self, ctx: RunContext) -> dict[str, Any]:
        work = ctx.work_dir("student")
        teacher = ctx.model(ctx.reference)
        model, alpha, temperature, table = train_student(ctx.config, ctx.data, teacher, work, ctx.strategy, ctx.log)
        return {
            "model": os.path.basename(ctx.config.distill.student), "params": int(model.count_params()), "alpha": alpha,
            "temperature": temperature, "transfer_set": ctx.data.transfer is not None,
            "unlabelled_images": ctx.data.num_unlabelled, "tuning": table,
            "test_accuracy": test_accuracy(model, ctx.data.test), "path": ctx.save_model("student", model),
            "history": None if table else ctx.rel(f"{work}/history.csv"),
        }

    def report_row(self, record: dict[str, Any]) -> dict[str, Any]:
        notes = f"alpha {record['alpha']:g}, T {record['temperature']:g}" + (" (tuned)" if record["tuning"] else "")
        if record["transfer_set"]:
            notes += f", transfer set with {record['unlabelled_images']} unlabelled images"
        return {"stage": self.name, "model": f"{record['model']} ({record['params']:,} params)",
                "test_accuracy": record["test_accuracy"], "notes": notes}

    def publish(self, ctx: RunContext, record: dict[str, Any]) -> None:
        ctx.add_model("student", record["path"])
        ctx.log(f"student {record['model']}: test accuracy {record['test_accuracy']:.4f}")


register_stage(DistillStage())
