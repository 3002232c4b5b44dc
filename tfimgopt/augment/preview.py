"""A picture of what an augmentation does: originals beside several augmented versions."""

from __future__ import annotations

import os

import numpy as np

from tfimgopt._io import write_with
from tfimgopt.compat import tf
from tfimgopt.errors import ConfigError, received


def preview_grid(images, augmentation, *, labels=None, num_classes=None, variants: int = 5, seed: int = 0,
                 path: str | os.PathLike | None = None, class_names=None, title: str | None = None):
    """Draws a grid: one row per image, the original then `variants` augmented versions.

    Args:
        images: A batch `(n, height, width, channels)` (NumPy or tensor), in the
            augmentation's `value_range`.
        augmentation: An `Augmentation` (see `create_augmentation`) or any callable on
            batches.
        labels: Integer labels of the images; needed by MixUp/CutMix, whose mixed label
            weights are printed above each cell.
        num_classes: Number of classes, for one-hot labels.
        variants: Augmented versions per image.
        seed: Seed of the first variant (variant `i` uses `[seed, i]`).
        path: Where to write the PNG (atomically); `None` only returns the figure.
        class_names: Optional names printed instead of class indices.
        title: Figure title.

    Returns:
        The matplotlib `Figure`.

    Example:
        >>> from tfimgopt.augment import create_augmentation, preview_grid
        >>> figure = preview_grid(images[:6], create_augmentation("default"), path="grid.png")
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not isinstance(variants, int) or isinstance(variants, bool) or variants < 1:
        raise ConfigError(f"variants must be a positive int. {received('variants', variants)}")
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4 or images.shape[0] == 0:
        raise ConfigError(
            f"images must be a non-empty batch (n, height, width, channels). Received: shape {images.shape}"
        )
    takes_labels = getattr(augmentation, "takes_labels", False)
    if takes_labels:
        if labels is None or not num_classes:
            raise ConfigError("This augmentation mixes labels; pass labels= and num_classes= to preview it.")
        one_hot = tf.one_hot(tf.convert_to_tensor(labels, tf.int32), num_classes)
    value_range = getattr(augmentation, "value_range", (0, 255))
    columns, captions = [images.numpy()], [None]
    for v in range(variants):
        kwargs = {"seed": [seed, v]} if getattr(augmentation, "accepts_seed", False) else {}
        if takes_labels:
            out, mixed = augmentation((images, one_hot), **kwargs)
            captions.append(mixed.numpy())
        else:
            out = augmentation(images, **kwargs)
            captions.append(None)
        columns.append(np.asarray(out))
    n = images.shape[0]
    fig, axes = plt.subplots(n, variants + 1, figsize=(1.6 * (variants + 1), 1.6 * n + 0.4), squeeze=False)
    for row in range(n):
        for col, batch in enumerate(columns):
            ax = axes[row, col]
            img = (batch[row].astype(np.float32) - value_range[0]) / (value_range[1] - value_range[0])
            img = np.clip(img, 0, 1)
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                      vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_title("original" if labels is None else f"original: {_name(int(labels[row]), class_names)}",
                             fontsize=7)
            elif captions[col] is not None:
                ax.set_title(_mix_caption(captions[col][row], class_names), fontsize=7)
    fig.suptitle(title or f"{type(augmentation).__name__}: {variants} variants per image", fontsize=9)
    fig.tight_layout()
    if path is not None:
        write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return fig


def _name(index, class_names):
    return str(class_names[index]) if class_names is not None else str(index)


def _mix_caption(weights, class_names):
    top = np.argsort(weights)[::-1][:2]
    return " ".join(f"{_name(int(i), class_names)}:{weights[i]:.2f}" for i in top if weights[i] > 0.005)
