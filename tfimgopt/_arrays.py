"""Arrays out of what users pass as data: a NumPy array or a `tf.data.Dataset` of batches."""

from __future__ import annotations

from typing import Any

import numpy as np


def images_labels(dataset: Any, limit: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Images (and labels, sparse) from an array or a dataset of images or `(images, labels)` batches."""
    from tfimgopt.compat import tf

    if isinstance(dataset, tf.data.Dataset):
        xs, ys = [], []
        for batch in dataset:
            x, y = (batch[0], batch[1]) if isinstance(batch, tuple) else (batch, None)
            xs.append(np.asarray(x))
            if y is not None:
                ys.append(np.asarray(y))
            if limit and sum(len(a) for a in xs) >= limit:
                break
        images = np.concatenate(xs)[:limit]
        labels = np.concatenate(ys)[:limit] if ys else None
        if labels is not None and labels.ndim == 2:
            labels = labels.argmax(1)
        return images, labels
    return np.asarray(dataset)[:limit], None
