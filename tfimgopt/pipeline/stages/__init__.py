"""The run's stages: the `Stage` contract, its registry, and the built-in stages.

Built in: baseline -> distill -> one stage per compression technique (prune, qat) ->
export -> evaluate. `list_stages()` gives the run order.
"""

from tfimgopt.pipeline.stages import baseline, distill, evaluate, export  # noqa: F401  (they register)
from tfimgopt.pipeline.stages.base import RECORD_VERSION, Stage, fingerprint, register_stage
from tfimgopt.pipeline.stages.registry import get_stage, list_stages
from tfimgopt.pipeline.stages.technique import TechniqueStage

__all__ = ["RECORD_VERSION", "Stage", "TechniqueStage", "fingerprint", "get_stage", "list_stages", "register_stage"]
