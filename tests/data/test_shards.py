"""Shards for big data: written once from any source, read back as a source (interleaved, deterministic)."""

import json
import os

import numpy as np
import pytest

from tfimgopt.data import find_source, load_dataset, write_shards
from tfimgopt.errors import ConfigError, DataError


def _arrays():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:16, 0:16] / 16
    images = np.stack([np.clip(127 + 100 * np.sin(6 * rng.uniform() * xx + 3 * rng.uniform() * yy)[..., None]
                               + rng.normal(0, 3, (16, 16, 1)), 0, 255) for _ in range(60)]).astype("uint8")
    return images, np.arange(60) % 3


@pytest.mark.slow
def test_shards_round_trip_images_labels_class_names_and_counts(tmp_path):
    images, labels = _arrays()
    source = {"train": (images[:40], labels[:40]), "test": (images[40:], labels[40:]), "class_names": ["a", "b", "c"]}
    manifest = write_shards(source, str(tmp_path / "shards"), image_size=16, images_per_shard=7, val_fraction=0.25,
                            log=lambda _: None)
    assert {name: split["count"] for name, split in manifest["splits"].items()} == {"train": 30, "val": 10, "test": 20}
    assert len(manifest["splits"]["train"]["files"]) == 5  # 30 images, 7 per shard
    assert find_source(str(tmp_path / "shards")).name == "shards"
    direct = load_dataset(source, image_size=16, val_fraction=0.25)
    back = load_dataset(str(tmp_path / "shards"), image_size=16, seed=0)
    assert back.info.class_names == ("a", "b", "c") and back.info.num_examples == dict(direct.info.num_examples)
    assert back.info.image_shape == (16, 16, 1)
    for split in ("val", "test"):  # same order as written; JPEG quality 95 keeps the pixels close
        want = np.stack([x for x, _ in getattr(direct, split).as_numpy_iterator()]).astype(float)
        got = list(getattr(back, split).as_numpy_iterator())
        assert [int(y) for _, y in got] == [int(y) for _, y in getattr(direct, split).as_numpy_iterator()]
        mse = np.mean((np.stack([x for x, _ in got]).astype(float) - want) ** 2)
        assert 10 * np.log10(255.0**2 / mse) > 35
    # Training files are interleaved in an order fixed by the seed.
    order = [int(y) for _, y in load_dataset(str(tmp_path / "shards"), image_size=16, seed=1).train.as_numpy_iterator()]
    assert order == [int(y) for _, y in load_dataset(str(tmp_path / "shards"), image_size=16, seed=1)
                     .train.as_numpy_iterator()]
    assert sorted(order) == sorted(int(y) for _, y in direct.train.as_numpy_iterator())
    smaller = load_dataset(str(tmp_path / "shards"), image_size=8, channels=3)
    assert next(iter(smaller.test))[0].shape == (8, 8, 3)
    # At the written size the records are only decoded, channels still converted on the way.
    rgb = load_dataset(str(tmp_path / "shards"), image_size=16, channels=3)
    gray, colour = next(iter(back.test))[0].numpy(), next(iter(rgb.test))[0].numpy()
    assert colour.shape == (16, 16, 3) and (colour == gray).all()


def test_the_writer_refuses_a_foreign_folder_and_replaces_its_own(tmp_path):
    images, labels = _arrays()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match=r"not empty and holds no tfimgopt-shards\.json.*Received: out="):
        write_shards((images, labels), str(foreign), image_size=16, log=lambda _: None)
    assert os.listdir(foreign) == ["notes.txt"] and (foreign / "notes.txt").read_text() == "keep"
    out = tmp_path / "shards"
    write_shards((images, labels), str(out), image_size=16, images_per_shard=5, log=lambda _: None)
    write_shards((images[:30], labels[:30]), str(out), image_size=16, images_per_shard=50, log=lambda _: None)
    manifest = json.loads((out / "tfimgopt-shards.json").read_text())
    listed = {entry["name"] for split in manifest["splits"].values() for entry in split["files"]}
    assert set(os.listdir(out)) == listed | {"tfimgopt-shards.json"}  # the first write's shards are gone


def test_a_changed_or_missing_shard_is_named(tmp_path):
    images, labels = _arrays()
    out = tmp_path / "shards"
    manifest = write_shards((images, labels), str(out), image_size=16, log=lambda _: None)
    name = manifest["splits"]["train"]["files"][0]["name"]
    with open(out / name, "ab") as f:
        f.write(b"x")
    with pytest.raises(DataError, match=rf"{name} has .* bytes, the manifest says"):
        load_dataset(str(out), image_size=16)
    os.remove(out / name)
    with pytest.raises(DataError, match=rf"{name} listed in the manifest is missing"):
        load_dataset(str(out), image_size=16)


@pytest.mark.slow
def test_a_run_reads_shards_written_by_the_cli(tmp_path, capsys):
    from tfimgopt.cli import main

    assert main(["data", "shard", "digits", "--out", str(tmp_path / "digits8"), "--image-size", "8"]) == 0
    assert "wrote 4 shards" in capsys.readouterr().out  # 1,259 training images: 2 shards of 1,024
    assert main(["run", "--source", str(tmp_path / "digits8"), "--out", str(tmp_path / "run"), "--image-size", "8",
                 "--set", "train.model=tiny_cnn", "--set", "train.epochs=4", "--set", "train.learning_rate=0.01",
                 "--set", "distill.enabled=false",
                 "--set", "compress.epochs=1", "--set", "compress.qat_epochs=0", "--set", "export.modes=[float32]",
                 "--set", "export.latency_runs=2"]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["dataset"]["name"] == str(tmp_path / "digits8")
    assert report["dataset"]["num_examples"] == {"train": 1259, "val": 179, "test": 359}
    assert report["baseline"]["test_accuracy"] > 0.5
