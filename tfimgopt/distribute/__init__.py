"""Distribution strategies (TPU, GPUs, several machines, CPU), precision and batch sizes."""

from tfimgopt.distribute.strategy import (
    PRECISIONS,
    STRATEGIES,
    BatchPlan,
    StrategyError,
    choose_precision,
    create_strategy,
    list_strategies,
    needs_static_shapes,
    plan_batches,
    set_precision,
    strategy_kind,
)

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
