"""One rule for each kind of surprising data, decided, documented (README) and tested."""

import os
import re

import numpy as np
import pytest
from PIL import Image

from tfimgopt.data import load_dataset
from tfimgopt.errors import DataError


def _arrays(values, labels=None):
    images = np.asarray(values, np.float32)
    return images, np.arange(len(images)) % 2 if labels is None else np.asarray(labels)


def _floats(low, high, n=40):
    return np.linspace(low, high, n * 16, dtype=np.float32).reshape(n, 4, 4)


@pytest.mark.parametrize("low, high, fragment", [
    (0.0, 1.0001, "lie in [0, 1.0001]"),   # a [0, 1] image with an overshoot is not 0..255
    (-1.0, 1.0, "lie in [-1, 1]"),          # [-1, 1] is not clipped at 0
    (-2.5, 3.1, "lie in [-2.5, 3.1]"),      # standardized
    (0.0, 300.0, "lie in [0, 300]"),
])
def test_ambiguous_float_ranges_are_refused(low, high, fragment):
    with pytest.raises(DataError, match=re.escape(fragment)):
        load_dataset(_arrays(_floats(low, high)), image_size=4)


def test_float_ranges_that_are_clear_are_kept_exactly():
    unit = load_dataset(_arrays(_floats(0.0, 1.0)), image_size=4, val_fraction=0, test_fraction=0)
    wide = load_dataset(_arrays(_floats(0.0, 255.0)), image_size=4, val_fraction=0, test_fraction=0)
    a = np.concatenate([x.numpy().ravel() for x, _ in unit.train])
    b = np.concatenate([x.numpy().ravel() for x, _ in wide.train])
    assert a.max() == b.max() == 255 and a.min() == b.min() == 0


def test_labels_must_be_the_classes_without_gaps():
    x = np.zeros((40, 4, 4), np.uint8)
    with pytest.raises(DataError, match=r"1 label\(s\) in between are missing \(first: \[1\]\)"):
        load_dataset((x, np.arange(40) % 2 * 2), image_size=4)  # labels {0, 2}
    y = np.arange(40) % 2
    y[0] = 10**6
    with pytest.raises(DataError, match=r"999,998 label\(s\) in between are missing"):
        load_dataset((x, y), image_size=4)
    declared = load_dataset({"train": (x, np.arange(40) % 2 * 2), "class_names": ["a", "b", "c"]}, image_size=4)
    assert declared.info.num_classes == 3  # with class_names, a class may have no example


def test_a_class_without_a_training_image_or_an_empty_split_is_refused():
    x = np.zeros((41, 4, 4), np.uint8)
    y = np.r_[np.arange(40) % 2, 2]  # class 2 has one image, which the split puts elsewhere or nowhere
    with pytest.raises(DataError, match=r"Class '2' has no training image after the split \(1 image"):
        load_dataset((x, y), image_size=4, val_fraction=0.0, test_fraction=0.6)
    few = np.zeros((10, 4, 4), np.uint8)  # 5 per class: 10% validation rounds to none
    with pytest.raises(DataError, match=r"The val split of arrays is empty: val_fraction=0.1"):
        load_dataset((few, np.arange(10) % 2), image_size=4)


def test_ragged_lists_and_huge_image_sizes_are_named():
    with pytest.raises(DataError, match=r"must be arrays of one shape.*Received: shapes \[\(4, 4\), \(5, 5\)\]"):
        load_dataset(([np.zeros((4, 4)), np.zeros((5, 5))], [0, 1]), image_size=4)
    with pytest.raises(DataError, match="image_size must be between 1 and 2048 pixels a side"):
        load_dataset("digits", image_size=100_000)


def _png(path, value=128, size=8):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8)).save(path)


def test_folder_rules_empty_hidden_linked_and_unreadable(tmp_path, monkeypatch, caplog):
    root = tmp_path / "photos"
    for label in ("cat", "dog"):
        for i in range(12):
            _png(str(root / label / f"{i}.png"), 40 * (label == "dog") + i)
    (root / "empty").mkdir()                        # left by an archive tool: not a class
    (root / "__MACOSX").mkdir()
    _png(str(root / "__MACOSX" / "x.png"))
    _png(str(root / ".hidden" / "x.png"))           # hidden: not a class
    _png(str(tmp_path / "elsewhere" / "0.png"))
    for i in range(1, 12):
        _png(str(tmp_path / "elsewhere" / f"{i}.png"), 200)
    os.symlink(tmp_path / "elsewhere", root / "fox")  # a linked class folder is followed
    bad_name = os.fsencode(str(root / "cat")) + b"/\xff\xfe.png"  # not UTF-8
    with open(bad_name, "wb") as f:
        f.write((root / "cat" / "0.png").read_bytes())
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # an image over it is a decompression bomb
    _png(str(root / "dog" / "bomb.png"), size=64)
    with caplog.at_level("WARNING"):
        splits = load_dataset(str(root), image_size=8)
    assert splits.info.class_names == ("cat", "dog", "fox")
    assert sum(splits.info.num_examples.values()) == 36
    skipped = {os.path.basename(p) for p in splits.info.skipped_files}
    assert "bomb.png" in skipped and any("\udcff" in p for p in splits.info.skipped_files)
    assert "no readable images (not classes): empty" in caplog.text
    images = np.concatenate([x.numpy().ravel() for x, _ in splits.train])
    assert images.size > 0  # every listed file decodes in tf.data: nothing undecodable got through
