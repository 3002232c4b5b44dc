"""Compression through TFMOT: magnitude pruning and quantization-aware training."""

from tfimgopt.compress.keras3 import from_keras3
from tfimgopt.compress.prune import (
    SCHEDULES,
    Pruned,
    check_graph_model,
    plan_pruning,
    prune,
    prune_and_finetune,
    sparsity_report,
    strip,
)
from tfimgopt.compress.quantize import QuantizationError, quantize_and_finetune, quantize_aware

__all__ = [
    "SCHEDULES",
    "Pruned",
    "QuantizationError",
    "check_graph_model",
    "from_keras3",
    "plan_pruning",
    "prune",
    "prune_and_finetune",
    "quantize_and_finetune",
    "quantize_aware",
    "sparsity_report",
    "strip",
]
