"""Model files and run folders are untrusted input: nothing stored in them runs, nothing is
read or written through a link, and a changed artifact is never reused."""

import json
import os
import shutil
import zipfile

import numpy as np
import pytest

from tfimgopt.compat import keras
from tfimgopt.errors import ConfigError
from tfimgopt.pipeline import load_config, load_model


@pytest.fixture(scope="module")
def evil_files(tmp_path_factory):
    """A model whose Lambda layer appends to a marker file whenever its code runs, in every format."""
    root = tmp_path_factory.mktemp("evil")
    marker = str(root / "marker")

    def payload(x, marker=marker):
        with open(marker, "a") as f:
            f.write("ran\n")
        return x

    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(payload), keras.layers.Dense(2)])
    model.save(str(root / "evil.h5"))
    shutil.copy(root / "evil.h5", root / "evil_h5.keras")  # HDF5 bytes under the .keras name
    model.save(str(root / "evil_savedmodel"), save_format="tf")
    model.save(str(root / "evil.keras"))
    os.remove(marker)  # saving ran the layer; from here on, nothing may
    return root, marker


@pytest.mark.parametrize("name", ["evil.h5", "evil_h5.keras", "evil_savedmodel", "evil.keras"])
def test_stored_code_never_runs_through_any_loading_path(evil_files, name):
    root, marker = evil_files
    with pytest.raises(ConfigError, match=r"Refused to load .*(HDF5 file|SavedModel folder|Lambda layer)"):
        load_model(str(root / name))
    assert not os.path.exists(marker)


def test_a_trusted_file_still_loads_with_safe_mode_off(evil_files):
    root, marker = evil_files
    model = load_model(str(root / "evil.h5"), safe_mode=False)
    assert model.output_shape == (None, 2) and os.path.exists(marker)  # the user asked for it
    os.remove(marker)


def test_a_stage_record_cannot_point_the_loader_at_stored_code_or_outside(evil_files, tmp_path):
    from tfimgopt.data import load_dataset
    from tfimgopt.pipeline import RunContext

    root, marker = evil_files
    (tmp_path / "models").mkdir()
    shutil.copy(root / "evil_h5.keras", tmp_path / "models" / "baseline.keras")
    ctx = RunContext(load_config(), str(tmp_path), data=load_dataset("digits", image_size=8))
    ctx.add_model("baseline", "models/baseline.keras")
    with pytest.raises(ConfigError, match="it is an HDF5 file"):
        ctx.model("baseline")
    ctx.add_model("student", str(root / "evil.keras"))  # an absolute path in a record
    with pytest.raises(ConfigError, match="must be a relative path inside the run folder"):
        ctx.model("student")
    ctx.add_model("pruned", "../evil/evil.keras")
    with pytest.raises(ConfigError, match="may not contain '..'"):
        ctx.model("pruned")
    assert not os.path.exists(marker)


def test_an_archive_that_expands_enormously_is_refused_before_extracting(tmp_path):
    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.h5", bytes(40 << 20))  # 40 MiB of zeros: a few KiB compressed
    assert bomb.stat().st_size < 1 << 20
    before = set(os.listdir(tmp_path))
    with pytest.raises(ConfigError, match=r"member 'model.weights.h5' expands to 41,943,040 bytes"):
        load_model(str(bomb))
    assert set(os.listdir(tmp_path)) == before
    padded = tmp_path / "padded.keras"
    with zipfile.ZipFile(padded, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("config.json", " " * ((64 << 20) + 1))  # a config padded past 64 MiB
    with pytest.raises(ConfigError, match=r"member 'config.json' expands to 67,108,865 bytes"):
        load_model(str(padded))
    (tmp_path / "not_a_model.keras").write_bytes(b"hello")
    with pytest.raises(ConfigError, match="Not a Keras model file"):
        load_model(str(tmp_path / "not_a_model.keras"))


@pytest.mark.parametrize("where", ["models", "stages", "work/baseline", "plots/accuracy_vs_size.png"])
def test_a_run_folder_holding_a_link_is_refused_and_nothing_outside_is_written(where, tmp_path):
    from tfimgopt.pipeline import run

    out, outside = tmp_path / "run", tmp_path / "outside"
    outside.mkdir()
    (out / "stages").mkdir(parents=True)
    (out / "config.json").write_text("{}")
    (out / ".tfimgopt-run").write_text("")  # a folder of ours, as a resumed one would be
    link = out / where
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.exists():
        link.rmdir()
    link.symlink_to(outside)
    with pytest.raises(ConfigError, match=rf"holds a symbolic link \({link} -> "):
        run(load_config(overrides=[f"out_dir={json.dumps(str(out))}", "train.epochs=1"]), log=lambda _: None)
    assert os.listdir(outside) == []


@pytest.mark.slow
def test_a_changed_model_file_is_not_reused(tmp_path):
    """A finished stage whose file was replaced is redone, and so is everything after it."""
    from tfimgopt.pipeline import run

    overrides = ["data.image_size=8", "train.model=tiny_cnn", "train.epochs=1", "distill.epochs=1",
                 'distill.student_options={"filters": 2}', "compress.enabled=false", 'export.modes=["float32"]',
                 "export.latency_runs=2", f"out_dir={json.dumps(str(tmp_path))}"]
    run(load_config(overrides=overrides), log=lambda _: None)
    student = tmp_path / "models" / "student.keras"
    other = keras.models.load_model(str(student))
    other.set_weights([np.zeros_like(w) for w in other.get_weights()])
    other.save(str(student))
    lines = []
    run(load_config(overrides=overrides), log=lines.append)
    assert any(line.startswith("== stage baseline: already done") for line in lines)
    assert any("stage distill: redoing it, changed since its record: models/student.keras changed" in line
               for line in lines)
    assert any(line.startswith("== stage export: redoing it") for line in lines)
