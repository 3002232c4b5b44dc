"""Batch augmentation layers for tf.data and Keras models: TensorFlow ops only, seeded.

Geometric layers fuse into one resampling per image, colour layers share one float
conversion, and policies (RandAugment, AugMix, MixUp, CutMix) choose per image without
Python loops.  See `create_augmentation` and `list_augmentations`.
"""

from tfimgopt.augment._base import FILL_MODES, INTERPOLATIONS, AugmentationLayer, register_op, register_policy
from tfimgopt.augment.color import (
    RandomBrightness,
    RandomContrast,
    RandomGrayscale,
    RandomHue,
    RandomSaturation,
)
from tfimgopt.augment.compose import (
    PLACEMENTS,
    Augmentation,
    augmented_model,
    create_augmentation,
    list_augmentations,
    resolve_placement,
    split_augmentation,
)
from tfimgopt.augment.geometric import (
    RandomCrop,
    RandomFlip,
    RandomResizedCrop,
    RandomRotation,
    RandomTranslation,
    RandomZoom,
)
from tfimgopt.augment.policies import AugMix, CutMix, MixUp, RandAugment
from tfimgopt.augment.preview import preview_grid

__all__ = [
    "FILL_MODES",
    "INTERPOLATIONS",
    "PLACEMENTS",
    "AugMix",
    "Augmentation",
    "AugmentationLayer",
    "CutMix",
    "MixUp",
    "RandAugment",
    "RandomBrightness",
    "RandomContrast",
    "RandomCrop",
    "RandomFlip",
    "RandomGrayscale",
    "RandomHue",
    "RandomResizedCrop",
    "RandomRotation",
    "RandomSaturation",
    "RandomTranslation",
    "RandomZoom",
    "augmented_model",
    "create_augmentation",
    "list_augmentations",
    "preview_grid",
    "register_op",
    "register_policy",
    "resolve_placement",
    "split_augmentation",
]
