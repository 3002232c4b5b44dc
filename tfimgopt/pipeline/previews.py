"""Preview pictures that need both data and augmentation (the pipeline layer joins them)."""

from __future__ import annotations

import os

from tfimgopt.errors import ConfigError, received


def parse_policy(policy):
    """A policy given on a command line: a name, or a YAML/JSON list of ops."""
    if isinstance(policy, str) and policy.lstrip().startswith(("[", "{")):
        import yaml

        try:
            return yaml.safe_load(policy)
        except yaml.YAMLError as err:
            raise ConfigError(f"Cannot parse the augmentation spec: {err}. {received('policy', policy)}") from None
    return policy


def augmentation_preview(*, source="digits", policy="default", out="augment_preview.png", image_size=64,
                         images=6, variants=5, seed=0, data_dir=None) -> str:
    """Loads a few training images and writes `preview_grid` of `policy` to `out`.

    Returns:
        The path of the PNG written.

    Example:
        >>> from tfimgopt.pipeline.previews import augmentation_preview
        >>> augmentation_preview(source="digits", policy="randaugment", out="grid.png")
        'grid.png'
    """
    from tfimgopt.augment import create_augmentation, preview_grid
    from tfimgopt.data import load_dataset

    if not isinstance(images, int) or isinstance(images, bool) or images < 1:
        raise ConfigError(f"images must be a positive int. {received('images', images)}")
    aug = create_augmentation(parse_policy(policy), seed=seed)
    channels = 3 if any(getattr(layer, "needs_rgb", False) for layer in aug.steps) else None
    splits = load_dataset(source, image_size=image_size, channels=channels, data_dir=data_dir, seed=seed)
    batch_images, labels = next(iter(splits.train.batch(images)))
    preview_grid(batch_images, aug, labels=labels.numpy(), num_classes=splits.info.num_classes,
                 variants=variants, seed=seed, path=out, class_names=splits.info.class_names,
                 title=f"{policy} on {source}")
    return os.fspath(out)
