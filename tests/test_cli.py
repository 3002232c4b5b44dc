"""The command line: help, train, and the main job (resumable), with clear errors."""

import json
import subprocess
import sys

import pytest

from tfimgopt.cli import main
from tfimgopt.compat import keras


def test_help_lists_subcommands():
    proc = subprocess.run([sys.executable, "-m", "tfimgopt.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for command in ("run", "train"):
        assert command in proc.stdout


def test_train_command_saves_a_model(tmp_path, capsys):
    out = tmp_path / "m.keras"
    code = main(["train", "-o", str(out), "--model", "tiny_cnn", "--image-size", "8", "--epochs", "1"])
    assert code == 0
    assert "test accuracy" in capsys.readouterr().out
    assert keras.models.load_model(out).output_shape == (None, 10)


def test_train_fine_tunes_from_a_weights_file(tmp_path, capsys):
    import numpy as np

    from tfimgopt.models import create_model

    pretrained = create_model("small_cnn", (8, 8, 1), 10, width=4, dense=8)
    for i, w in enumerate(pretrained.weights):  # recognisable values, unlike any initializer's
        w.assign(np.full(w.shape, 0.01 * (i + 1), np.float32))
    weights = tmp_path / "pretrained.h5"
    pretrained.save_weights(str(weights))
    out = tmp_path / "m.keras"
    code = main(["train", "-o", str(out), "--model", "small_cnn",
                 "--set", 'train.model_options={"width": 4, "dense": 8}',
                 "--image-size", "8", "--epochs", "1", "--weights", str(weights), "--fine-tune-epochs", "1",
                 "--set", "train.fine_tune.unfreeze=1", "--set", "train.augment=none"])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"fine-tuned from {weights} weights (phase 2: top 1 layers)" in printed
    trained = keras.models.load_model(out)
    with_weights = [layer for layer in trained.layers if layer.weights]
    assert len(with_weights) >= 4
    first = with_weights[0]  # frozen in both phases: still the file's values
    for w, p in zip(first.get_weights(), pretrained.get_layer(first.name).get_weights(), strict=True):
        np.testing.assert_array_equal(w, p)
    for layer in with_weights[-2:]:  # the unfrozen layer and the head trained
        assert not np.array_equal(layer.get_weights()[0], pretrained.get_layer(layer.name).get_weights()[0])


def test_run_writes_report_and_resume_skips_finished_stage(tmp_path, capsys):
    args = ["run", "--out", str(tmp_path), "--model", "tiny_cnn", "--image-size", "8", "--epochs", "2",
            "--learning-rate", "0.02", "--set", "distill.enabled=false", "--set", "compress.enabled=false",
            "--set", "export.modes=[float32]", "--optimize-for", "accuracy"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "== stage baseline" in first and "test accuracy" in first
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["baseline"]["model"] == "tiny_cnn"
    assert 0.3 < report["baseline"]["test_accuracy"] <= 1.0
    model = keras.models.load_model(tmp_path / report["baseline"]["path"])
    assert model.count_params() == report["baseline"]["params"]
    assert json.loads((tmp_path / "config.json").read_text())["train"]["epochs"] == 2
    assert "| baseline | tiny_cnn" in (tmp_path / "report.md").read_text()
    assert report["selection"]["variant"] == "baseline_float32"

    assert main(args) == 0
    second = capsys.readouterr().out
    assert "stage baseline: already done, skipped" in second
    assert "Epoch 1/2" not in second


def test_bad_config_value_exits_2_with_message(tmp_path, capsys):
    code = main(["run", "--out", str(tmp_path), "--set", "train.epochs=-1"])
    assert code == 2
    assert "Received: train.epochs=-1" in capsys.readouterr().err
    assert not (tmp_path / "report.json").exists()


def test_augment_preview_writes_png(tmp_path, capsys):
    out = tmp_path / "grid.png"
    code = main(["augment-preview", "--policy", "[random_flip, {op: random_rotation, factor: 0.1}, cutmix]",
                 "--out", str(out), "--image-size", "16", "--images", "3", "--variants", "2"])
    assert code == 0 and str(out) in capsys.readouterr().out
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert main(["augment-preview", "--policy", "sharpen", "--out", str(tmp_path / "x.png")]) == 2
    assert "Unknown augmentation 'sharpen'" in capsys.readouterr().err


@pytest.mark.slow
def test_single_step_commands_chain(tmp_path, capsys):
    data = ["--image-size", "8", "--set", "export.latency_runs=2", "--set", "export.num_calibration=16"]
    teacher, student = tmp_path / "t.keras", tmp_path / "s.keras"
    assert main(["train", "-o", str(teacher), "--model", "tiny_cnn", "--epochs", "1", *data[:2]]) == 0
    assert main(["distill", "--teacher", str(teacher), "-o", str(student), "--student", "tiny_cnn", "--epochs", "1",
                 "--alpha", "0.5",
                 "--unlabelled-fraction", "0.5", *data]) == 0
    assert "test_accuracy" in capsys.readouterr().out
    pruned = tmp_path / "p.keras"
    assert main(["prune", str(student), "-o", str(pruned), "--sparsity", "0.6", "--epochs", "1", *data]) == 0
    # tiny_cnn's classifier holds 640 of its 676 prunable weights: the default policy prunes it to
    # 60% and keeps the 36-weight first convolution dense.
    assert "sparsity: 0.5680" in capsys.readouterr().out
    assert main(["quantize", str(pruned), "-o", str(tmp_path / "q.tflite"), "--epochs", "1", *data]) == 0
    assert main(["export", str(pruned), "-o", str(tmp_path / "p.tflite"), "--mode", "int8", *data]) == 0
    assert "passed=True" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "p.tflite"), *data]) == 0
    assert "latency_ms_median" in capsys.readouterr().out
    assert main(["export", str(pruned), "-o", str(tmp_path / "p.bin"), *data]) == 2
    assert "must end in .tflite" in capsys.readouterr().err


@pytest.mark.slow
def test_prune_structured_removes_channels(tmp_path, capsys):
    from tfimgopt.models import create_model

    model_file, out = tmp_path / "m.keras", tmp_path / "c.keras"
    create_model("small_cnn", (8, 8, 1), 10, width=8, dense=16).save(model_file)
    args = ["prune", str(model_file), "-o", str(out), "--structured", "--image-size", "8"]
    assert main(args) == 2
    assert "set --channel-ratio (e.g. 0.5)" in capsys.readouterr().err
    assert main([*args, "--channel-ratio", "0.5", "--set", "compress.channel_epochs=1",
                 "--set", "compress.channel_steps=1"]) == 0
    printed = capsys.readouterr().out
    assert "channels: conv1=8->4, conv2=8->4, conv3=16->8, conv4=16->8, fc=16->8" in printed
    pruned = keras.models.load_model(out)
    assert f"params_after: {pruned.count_params()}" in printed and pruned.get_layer("conv3").filters == 8


def test_lambda_model_is_refused_unless_unsafe(tmp_path, capsys):
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Lambda(lambda x: x * 2.0),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    path = tmp_path / "lambda.keras"
    model.save(path)
    assert main(["evaluate", str(path), "--image-size", "8"]) == 2
    err = capsys.readouterr().err
    assert "Refused to load" in err and "--unsafe" in err
    assert main(["evaluate", str(path), "--image-size", "8", "--unsafe"]) == 0
    assert main(["evaluate", str(tmp_path / "missing.keras")]) == 2
    assert "Model file not found" in capsys.readouterr().err
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    assert main(["evaluate", str(tmp_path / "junk.keras")]) == 2
    assert "Received: model=" in capsys.readouterr().err
