"""The shared training loop: compile, fit under a strategy, back up, resume."""

from tfimgopt.training.fit import (
    AtomicModelCheckpoint,
    default_loss,
    default_metrics,
    make_optimizer,
    train,
)

__all__ = ["AtomicModelCheckpoint", "default_loss", "default_metrics", "make_optimizer", "train"]
