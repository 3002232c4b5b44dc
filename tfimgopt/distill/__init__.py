"""Knowledge distillation: a Keras `Distiller` and its helpers."""

from tfimgopt.distill.distiller import Distiller, distillation_loss, with_teacher_logits

__all__ = ["Distiller", "distillation_loss", "with_teacher_logits"]
