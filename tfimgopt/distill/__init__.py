"""Knowledge distillation: a Keras `Distiller`, training and tuning helpers."""

from tfimgopt.distill.distiller import UNLABELLED, Distiller, distillation_loss, with_teacher_logits
from tfimgopt.distill.losses import DistillationLoss, FeatureDistillation, LogitsDistillation
from tfimgopt.distill.tune import METHODS, TuneResult, distill, make_distiller, student_accuracy, tune_distillation

__all__ = [
    "METHODS",
    "UNLABELLED",
    "DistillationLoss",
    "Distiller",
    "FeatureDistillation",
    "LogitsDistillation",
    "TuneResult",
    "distill",
    "distillation_loss",
    "make_distiller",
    "student_accuracy",
    "tune_distillation",
    "with_teacher_logits",
]
