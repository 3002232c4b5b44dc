"""Distribution strategies (TPU, GPUs, several machines, CPU), precision and batch sizes.

The names load their module (and TensorFlow) on first use; the strategy and precision
names do not need TensorFlow.
"""

from tfimgopt._lazy import lazy_attributes
from tfimgopt.distribute._names import PRECISIONS, STRATEGIES, list_strategies

_LAZY = {name: "tfimgopt.distribute.strategy" for name in (
    "BatchPlan", "StrategyError", "choose_precision", "create_strategy", "needs_static_shapes", "plan_batches",
    "set_precision", "strategy_kind")}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())

__all__ = [
    "PRECISIONS",
    "STRATEGIES",
    "BatchPlan",
    "StrategyError",
    "choose_precision",
    "create_strategy",
    "list_strategies",
    "needs_static_shapes",
    "plan_batches",
    "set_precision",
    "strategy_kind",
]
