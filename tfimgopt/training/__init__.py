"""The shared training loop: compile, fit under a strategy, back up, resume; and the
two-phase fine-tuning recipe for pretrained backbones."""

from tfimgopt.training.fine_tune import FineTuneResult, fine_tune
from tfimgopt.training.fit import (
    AtomicModelCheckpoint,
    default_loss,
    default_metrics,
    make_optimizer,
    train,
)

__all__ = ["AtomicModelCheckpoint", "FineTuneResult", "default_loss", "default_metrics", "fine_tune",
           "make_optimizer", "train"]
