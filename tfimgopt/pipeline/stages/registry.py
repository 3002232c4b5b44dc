"""The run's stages by name, in run order: every registered stage, and one stage per
registered compression technique (made when first asked for, so a technique registered
after import, by a plugin, is a stage too)."""

from __future__ import annotations

from collections.abc import Sequence

from tfimgopt.compress import get_technique, list_techniques
from tfimgopt.pipeline.stages.base import _STAGES, Stage, register_stage
from tfimgopt.pipeline.stages.technique import TechniqueStage


def _sync_techniques() -> None:
    """Every registered compression technique is a stage (registered after us or not)."""
    for name in list_techniques():
        if name not in _STAGES:
            register_stage(TechniqueStage(get_technique(name)))


def get_stage(name: str) -> Stage:
    """The stage registered as `name`; an unknown name raises with close names."""
    _sync_techniques()
    return _STAGES.get(name)


def list_stages(filter: str | None = None, exclude: Sequence[str] = ()) -> list[str]:  # noqa: A002
    """Stage names in run order.

    Example:
        >>> from tfimgopt.pipeline.stages import list_stages
        >>> list_stages()
        ['baseline', 'distill', 'channel_prune', 'prune', 'cluster', 'qat', 'export', 'evaluate']
    """
    _sync_techniques()
    return sorted(_STAGES.names(filter, exclude), key=lambda n: (_STAGES.get(n).order, n))
