"""Compression through TFMOT: magnitude pruning, weight clustering and quantization-aware training
(PQAT, CQAT, PCQAT), as registered techniques."""

from tfimgopt.compress.channels import (
    ChannelGraph,
    ChannelPruned,
    channel_groups,
    count_flops,
    prune_channels,
    prune_channels_and_finetune,
)
from tfimgopt.compress.cluster import cluster, cluster_and_finetune, strip_clustering, unique_values
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
from tfimgopt.compress.quantize import PRESERVE, QuantizationError, quantize_and_finetune, quantize_aware
from tfimgopt.compress.techniques import (
    CompressResult,
    Technique,
    TechniqueResult,
    get_technique,
    list_techniques,
    register_technique,
)
from tfimgopt.keras3 import from_keras3  # the conversion lives in tfimgopt.keras3; here for old imports

__all__ = [
    "ChannelGraph",
    "ChannelPruned",
    "channel_groups",
    "count_flops",
    "prune_channels",
    "prune_channels_and_finetune",
    "CompressResult",
    "Technique",
    "TechniqueResult",
    "get_technique",
    "list_techniques",
    "register_technique",
    "PRESERVE",
    "SCHEDULES",
    "Pruned",
    "QuantizationError",
    "check_graph_model",
    "cluster",
    "cluster_and_finetune",
    "from_keras3",
    "plan_pruning",
    "prune",
    "prune_and_finetune",
    "quantize_and_finetune",
    "quantize_aware",
    "sparsity_report",
    "strip",
    "strip_clustering",
    "unique_values",
]
