"""The baseline stage: trains `train.model` (the teacher) and measures it."""

from __future__ import annotations

import os
from typing import Any

from tfimgopt.compat import keras
from tfimgopt.pipeline.config import RunConfig
from tfimgopt.pipeline.context import RunContext, build_model, test_accuracy
from tfimgopt.pipeline.data import PreparedData
from tfimgopt.pipeline.stages.base import REFERENCE, Stage, register_stage


def train_classifier(
    config: RunConfig, data: PreparedData, model_path: str, work_dir: str, root: str | None = None,
    strategy=None, user=None, keep=None,
) -> dict[str, Any]:
    """Trains `config.train.model` on `data`, saves it atomically, measures the test split.

    With `user` (a `tfimgopt.pipeline.adopt.UserModel`), that model is adopted instead: saved
    and measured as it is, or fine-tuned first when `train.epochs` > 0.

    Returns:
        A record with the model name, parameter count, test accuracy, path and history.
    """
    from tfimgopt import _io
    from tfimgopt.training import fine_tune, train

    _io.check_writable(model_path)  # a bad output path fails now, not after training
    t = config.train
    info = data.splits.info
    options = dict(t.model_options or {}, **({"weights": t.weights} if t.weights is not None else {}))

    def build():
        if user is not None:  # a fresh copy: training never changes the caller's model
            model = keras.models.clone_model(user.model)
            model.set_weights(user.model.get_weights())
        else:
            model = build_model(t.model, info, options, "train.model_options")
        if data.model_augmentation is None:
            return model
        from tfimgopt.augment import augmented_model

        return augmented_model(model, data.model_augmentation)

    extra: dict[str, Any] = {"weights": t.weights} if t.weights is not None else {}
    if user is not None:
        extra.update(adopted=user.source, keras3=user.keras3, input_range=config.data.input_range,
                     epochs=t.epochs_to_train)
    histories: list[str] = []
    if user is not None and not t.epochs_to_train:
        model = build()
        if data.model_augmentation is not None:
            model = model.layers[-1]
    elif t.fine_tune.active(t.weights):
        ft = t.fine_tune
        result = fine_tune(
            build, data.train, data.val, head=ft.head, head_epochs=t.epochs, epochs=ft.epochs,
            unfreeze=ft.unfreeze, learning_rate=t.learning_rate, fine_tune_learning_rate=ft.learning_rate,
            schedule=ft.schedule, optimizer=t.optimizer, strategy=strategy, work_dir=work_dir,
            jit_compile=t.jit_compile or None,
        )
        trained = result.model
        phases = ["head", "fine_tune"] if ft.epochs else ["head"]
        histories = [os.path.join(work_dir, phase, "history.csv") for phase in phases]
        extra["fine_tuned"] = result.unfrozen
    else:
        trained = train(
            build, data.train, data.val, t.epochs_to_train, optimizer=t.optimizer, learning_rate=t.learning_rate,
            work_dir=work_dir, jit_compile=t.jit_compile or None, strategy=strategy,
        ).model
        histories = [os.path.join(work_dir, "history.csv")]
    if histories:
        # With augmentation in the model, the classifier is its last layer: that is what ships.
        model = trained.layers[-1] if data.model_augmentation is not None else trained
    _io.write_with(model_path, model.save)
    if keep is not None:  # the run hands it to the next stages in memory
        keep(model)

    def rel(path):
        return os.path.relpath(path, root) if root else path

    return {
        "model": user.label if user is not None else t.model,
        "params": int(model.count_params()),
        "test_accuracy": test_accuracy(model, data.test),
        "path": rel(model_path),
        "history": rel(histories[-1]) if histories else None,
        **({"histories": [rel(p) for p in histories]} if len(histories) > 1 else {}),
        **extra,
    }


class BaselineStage(Stage):
    """Trains the baseline classifier; it is the teacher and the accuracy reference."""

    name = "baseline"
    role = REFERENCE
    order = 10
    settings = ("seed", "train")

    def inputs(self, config: RunConfig) -> dict[str, Any]:
        from tfimgopt import _io

        values = super().inputs(config)
        weights = config.train.weights
        if weights not in (None, "imagenet"):  # a file: its bytes, not only its name
            values["train.weights:sha256"] = _io.sha256_file(weights)
        if config.train.adopts_file and os.path.exists(config.train.model):
            values["train.model:sha256"] = _io.sha256_tree(config.train.model)
            values["data.input_range"] = config.data.input_range
        return values

    def run(self, ctx: RunContext) -> dict[str, Any]:
        rel = "models/baseline.keras"
        return train_classifier(ctx.config, ctx.data, ctx.path(rel), ctx.work_dir("baseline"), ctx.out, ctx.strategy,
                                ctx.user, keep=lambda model: ctx.keep(rel, model))

    def report_row(self, record: dict[str, Any]) -> dict[str, Any]:
        notes = "the accuracy reference"
        if "adopted" in record:
            notes = f"your model, fine-tuned {record['epochs']} epochs" if record["epochs"] else "your model, as it is"
        elif "weights" in record:
            notes = f"from {record['weights']} weights"
        return {"stage": self.name, "model": f"{record['model']} ({record['params']:,} params)",
                "test_accuracy": record["test_accuracy"], "notes": notes}

    def publish(self, ctx: RunContext, record: dict[str, Any]) -> None:
        ctx.add_model("baseline", record["path"])
        if "adopted" in record:
            trained = f", fine-tuned {record['epochs']} epochs" if record["epochs"] else ", used as it is"
            ctx.log(f"{record['model']}: test accuracy {record['test_accuracy']:.4f}, {record['params']:,} "
                    f"parameters, input range {record['input_range']}{trained}")
            return
        how = ""
        if "weights" in record:
            how = f", from {record['weights']} weights" + (
                f", fine-tuned (top {len(record['fine_tuned'])} layers)" if record.get("fine_tuned") else "")
        ctx.log(f"baseline {record['model']}: test accuracy {record['test_accuracy']:.4f}, "
                f"{record['params']:,} parameters{how}")


register_stage(BaselineStage())
