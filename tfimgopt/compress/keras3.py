"""Kept for old imports: the Keras 3 conversion lives in `tfimgopt.keras3`."""

from tfimgopt.keras3 import from_keras3, to_keras3

__all__ = ["from_keras3", "to_keras3"]
