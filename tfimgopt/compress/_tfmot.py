"""TFMOT, imported without its process-wide side effect (see `tfimgopt._upstream`)."""

from __future__ import annotations

from tfimgopt._upstream import import_tfmot

tfmot = import_tfmot()

__all__ = ["tfmot"]
