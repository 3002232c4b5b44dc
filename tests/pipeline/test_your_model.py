"""The main job on the user's own model and data: model files and objects (tf_keras and Keras 3),
.npz / arrays / tf.data sources, the measured input range, the picked student, single steps."""

import json
import os

import numpy as np
import pytest

from tfimgopt.compat import keras, tf
from tfimgopt.errors import ConfigError, DataError

# Tiny settings: the digits at their own 8x8, one epoch per training stage, few timed invokes.
FAST = ["--set", "compress.epochs=1", "--set", "compress.qat_epochs=1", "--set", "export.latency_runs=2",
        "--set", "export.num_calibration=16", "--set", "distill.epochs=1"]


def _digits(scale: float = 1.0):
    """scikit-learn's digits as 8x8x1 float images in [0, scale * 255] / 255-style ranges, split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images * (255.0 / 16.0) / 255.0 * scale).astype("float32")[..., None]
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], d.target[order].astype("int64")
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


def _tutorial_model(lib, shape=(8, 8, 1)):
    """TFMOT's pruning tutorial CNN: Conv2D(12, 3x3, relu) -> MaxPool(2) -> Flatten -> Dense(10)."""
    return lib.Sequential([lib.Input(shape), lib.layers.Conv2D(12, 3, activation="relu"), lib.layers.MaxPooling2D(2),
                           lib.layers.Flatten(), lib.layers.Dense(10)])


def _trained(lib, x, y, epochs=15):
    lib.utils.set_random_seed(0)
    model = _tutorial_model(lib, x.shape[1:])
    model.compile(lib.optimizers.Adam(3e-3), lib.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return model


def _keras_accuracy(model, x, y) -> float:
    """Accuracy on `x` ([0, 1] floats) as the run feeds them: stored as 8-bit pixels, then scaled."""
    x = np.round(x * 255) / 255
    return float(np.mean(np.argmax(np.asarray(model.predict(x, verbose=0)), -1) == y))


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """A tf_keras and a Keras 3 model trained on [0, 1] digits, saved as .keras, and the digits as .npz
    (keras.datasets-style keys, [0, 1] floats as a Keras user keeps them)."""
    import keras as keras3

    root = tmp_path_factory.mktemp("yours")
    (x, y), (xt, yt) = _digits()
    np.savez(root / "digits.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    paths = {}
    for name, lib in (("tf_keras", keras), ("keras3", keras3)):
        model = _trained(lib, x, y)
        model.save(root / f"{name}.keras")
        paths[name] = (str(root / f"{name}.keras"), _keras_accuracy(model, xt, yt))
    return root, paths


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tf_keras", "keras3"])
def test_cli_runs_the_main_job_on_your_model_file_and_npz(kind, user_files, tmp_path, capsys):
    from tfimgopt.cli import main

    root, paths = user_files
    path, accuracy = paths[kind]
    out = tmp_path / "run"
    assert main(["run", "--model", path, "--source", str(root / "digits.npz"), "--out", str(out), *FAST]) == 0
    report = json.loads((out / "report.json").read_text())
    yours = report["your_model"]
    assert yours["input_range"] == "0-1" and yours["keras3"] == (kind == "keras3")
    # Adopted as it is: the run's Keras accuracy is the model's own on the same test images.
    assert report["baseline"]["test_accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert report["baseline"]["epochs"] == 0 and report["baseline"]["history"] is None
    assert all(entry["passed"] for entry in report["verification"].values())
    assert report["selection"]["variant"] and (out / report["selection"]["path"]).is_file()
    assert {"baseline_float32", "pruned_float32", "pruned_int8"} <= {row["variant"] for row in report["variants"]}
    # Your model: TFMOT's tutorial sparsity, 0.8, on its classifier (1,080 of 1,188 prunable weights).
    assert report["pruned"]["sparsity"] == pytest.approx(0.8 * 1080 / 1188, abs=0.01)
    # The classifier holds the weights, so the default policy prunes it; the first convolution stays dense.
    assert [name.split("_")[0] for name in report["pruned"]["pruned_layers"]] == ["dense"]
    md = (out / "report.md").read_text()
    assert md.index("**Your model**") < md.index("## Training") and "input range 0-1" in md
    assert f"{100 * accuracy:.2f}%" in md
    assert "distillation skipped" in md  # 1,210 parameters: no zoo student is 8x smaller
    printed = capsys.readouterr()
    assert "oneDNN" not in printed.err and "fully_quantize" not in printed.err + printed.out  # native logs held back
    assert "epoch 1/1" in printed.out and "Epoch 1/1" not in printed.out  # one bar per stage, not Keras's lines


@pytest.mark.slow
def test_optimize_keras3_model_and_arrays_gives_keras3_back(tmp_path):
    import keras as keras3

    import tfimgopt

    (x, y), (xt, yt) = _digits()
    model = _trained(keras3, x, y)
    report = tfimgopt.optimize(model, (x, y), test_data=(xt, yt), out_dir=str(tmp_path / "run"),
                               compress__epochs=1, compress__qat_epochs=1, export__latency_runs=2,
                               export__num_calibration=16, log=lambda _: None)
    assert isinstance(report, tfimgopt.RunReport)
    assert report.baseline_accuracy == pytest.approx(_keras_accuracy(model, xt, yt), abs=1e-9)
    assert report.raw["your_model"]["input_range"] == "0-1" and report.keras3
    assert report.selected is not None and os.path.isfile(report.selected.path)
    assert "| variant |" in str(report) and report.selected.name in report._repr_markdown_()
    back = report.model("baseline_float32")
    assert isinstance(back, keras3.Model)  # Keras 3 in, Keras 3 out, taking [0, 1] images as before
    np.testing.assert_allclose(np.asarray(back(xt[:16])), np.asarray(model(xt[:16])), rtol=1e-4, atol=1e-4)
    pruned = report.model("pruned_float32")
    assert isinstance(pruned, keras3.Model)
    classifier = pruned.layers[-1].get_weights()[0]
    assert np.mean(classifier == 0) == pytest.approx(0.8, abs=0.01)  # pruned as TFMOT's tutorial prunes
    with pytest.raises(ConfigError, match=r"quantization-aware export.*report.model\('pruned_float32'\)"):
        report.model("pruned_qat_int8")
    again = tfimgopt.optimize(model, (x, y), test_data=(xt, yt), out_dir=str(tmp_path / "run"),
                              compress__epochs=1, compress__qat_epochs=1, export__latency_runs=2,
                              export__num_calibration=16, log=(lines := []).append)
    assert any("stage prune: already done" in line for line in lines)  # same model and arrays: resumed
    assert again.selected.name == report.selected.name


@pytest.mark.slow
def test_optimize_tf_keras_model_on_a_tf_data_dataset(tmp_path):
    import tfimgopt

    (x, y), _ = _digits()
    x255 = np.round(x * 255).astype("uint8")  # 0..255 pixels: auto keeps them, no layer added
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 255), keras.layers.Flatten(),
                              keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x255, y, epochs=10, verbose=0)
    data = tf.data.Dataset.from_tensor_slices((x255, y)).batch(50)
    report = tfimgopt.optimize(model, data, out_dir=str(tmp_path / "run"), distill__enabled=False,
                               compress__epochs=1, compress__qat_epochs=0, export__modes=["float32", "int8"],
                               export__latency_runs=2, export__num_calibration=16, log=lambda _: None)
    assert report.raw["your_model"]["input_range"] == "0-255"
    assert "input_range" not in [layer.name for layer in report.model("baseline_float32").layers]
    assert report.baseline_accuracy > 0.8 and not report.keras3
    assert {v.name for v in report.variants} == {"baseline_float32", "baseline_int8", "pruned_float32", "pruned_int8"}


@pytest.mark.slow
def test_h5_is_refused_without_unsafe(tmp_path, user_files):
    from tfimgopt.cli import main

    root, _ = user_files
    model = _tutorial_model(keras)
    model.save(tmp_path / "mine.h5")
    out = tmp_path / "run"
    assert main(["run", "--model", str(tmp_path / "mine.h5"), "--source", str(root / "digits.npz"),
                 "--out", str(out)]) == 2
    assert not (out / "models").exists()
    assert main(["evaluate", str(tmp_path / "mine.h5"), "--source", str(root / "digits.npz")]) == 2
    assert main(["evaluate", str(tmp_path / "mine.h5"), "--source", str(root / "digits.npz"), "--unsafe"]) == 0


def test_evaluate_a_model_file_on_npz(user_files, capsys):
    from tfimgopt.cli import main

    root, paths = user_files
    path, accuracy = paths["keras3"]
    assert main(["evaluate", path, "--source", str(root / "digits.npz")]) == 0
    printed = capsys.readouterr().out
    assert f"accuracy: {accuracy:.4f}" in printed and "input_range: 0-1" in printed and "image_size: 8" in printed
    assert main(["evaluate", path, "--source", str(root / "digits.npz"), "--image-size", "16"]) == 2
    assert "takes images of shape (8, 8, 1), but data.image_size asks for 16x16" in capsys.readouterr().err


def test_input_range_is_chosen_by_loss_and_accuracy():
    from tfimgopt.pipeline.adopt import choose_input_range

    (x, y), _ = _digits()
    model = _trained(keras, x * 2 - 1, y)  # trained on [-1, 1]
    pixels = tf.data.Dataset.from_tensor_slices((np.round(x * 255).astype("uint8"), y))
    lines = []
    assert choose_input_range(model, pixels, lines.append) == "-1-1"
    assert "-1-1 loss" in lines[0] and "Rescaling layer 'input_range'" in lines[0]


def test_input_range_layer_round_trips_for_sequential_and_functional():
    from tfimgopt.pipeline.adopt import RANGE_LAYER, as_image_model, with_input_range, without_input_range

    keras.utils.set_random_seed(1)
    inp = keras.Input((8, 8, 1))
    hidden = keras.layers.Conv2D(4, 3, name="c")(inp)
    out = keras.layers.Dense(3, name="d")(keras.layers.Flatten()(keras.layers.Add()([hidden, hidden])))
    x = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 1)).astype("float32")
    for model in (_tutorial_model(keras), keras.Model(inp, out)):
        wrapped = with_input_range(model, "-1-1")
        assert wrapped.layers[int(isinstance(model, keras.Sequential)) ^ 1].name == RANGE_LAYER or \
            RANGE_LAYER in [layer.name for layer in wrapped.layers]
        np.testing.assert_allclose(wrapped(x), model(x / 127.5 - 1), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(without_input_range(wrapped)(x), model(x), rtol=1e-6)
    flat = keras.Sequential([keras.Input((8, 8)), keras.layers.Reshape((8, 8, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(3)])
    image = as_image_model(flat)
    assert image.input_shape == (None, 8, 8, 1)
    np.testing.assert_allclose(image(x), flat(x[..., 0]), rtol=1e-6)
    back = without_input_range(with_input_range(image, "0-1"))
    assert back.input_shape == (None, 8, 8)
    np.testing.assert_allclose(back(x[..., 0]), flat(x[..., 0]), rtol=1e-6)


@pytest.mark.slow
def test_student_is_picked_by_parameter_count():
    from tfimgopt.data import DatasetInfo
    from tfimgopt.models import create_model
    from tfimgopt.pipeline.adopt import STUDENT_RATIO, pick_student

    info = DatasetInfo("x", 10, (32, 32, 1), tuple("0123456789"), {"train": 1})
    teacher = create_model("small_cnn", (32, 32, 1), 10).count_params()
    name, options, params = pick_student(teacher, info)
    assert params * STUDENT_RATIO <= teacher
    assert params == create_model(name, (32, 32, 1), 10, **options).count_params()
    none, why, smallest = pick_student(1000, info)
    assert none is None and "1/8 of the teacher's 1,000 parameters" in why and smallest > 125


def test_npz_layouts_and_refusals(tmp_path):
    from tfimgopt.data import find_source, load_dataset

    images, labels = np.zeros((30, 8, 8), np.uint8), np.arange(30) % 3
    np.savez(tmp_path / "ours.npz", images=images, labels=labels, class_names=np.array(["a", "b", "c"]))
    splits = load_dataset(str(tmp_path / "ours.npz"), image_size=8)
    assert splits.info.class_names == ("a", "b", "c") and splits.info.name.endswith("ours.npz")
    np.savez(tmp_path / "kd.npz", x_train=images, y_train=labels[:, None], x_test=images[:9], y_test=labels[:9])
    assert find_source(str(tmp_path / "kd.npz")).name == "npz"
    splits = load_dataset(str(tmp_path / "kd.npz"), image_size=8)  # CIFAR-style (N, 1) labels
    assert splits.info.num_examples["test"] == 9
    np.savez(tmp_path / "other.npz", a=images)
    with pytest.raises(DataError, match=r"images \+ labels, or x_train \+ y_train.*Received: keys=\['a'\]"):
        load_dataset(str(tmp_path / "other.npz"))
    np.savez(tmp_path / "half.npz", x_train=images, y_train=labels, x_test=images)
    with pytest.raises(DataError, match="has x_test without y_test"):
        load_dataset(str(tmp_path / "half.npz"))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    os.rename(tmp_path / "objects.npy", tmp_path / "objects.npz")
    with pytest.raises(DataError, match=r"objects\.npz"):
        load_dataset(str(tmp_path / "objects.npz"))


def test_boolean_images_are_refused():
    from tfimgopt.data import load_dataset

    with pytest.raises(DataError, match=r"booleans.*astype\('uint8'\) \* 255.*Received: images\.dtype=bool"):
        load_dataset((np.zeros((12, 8, 8), bool), np.arange(12) % 2))


def test_dataset_source_unbatches_and_reads_one_hot_labels():
    from tfimgopt.data import load_dataset

    images = np.random.default_rng(0).integers(0, 255, (40, 8, 8, 1)).astype("uint8")
    labels = np.arange(40) % 4
    ds = tf.data.Dataset.from_tensor_slices((images, tf.one_hot(labels, 4))).batch(7)
    splits = load_dataset(ds, image_size=8, val_fraction=0.0, test_fraction=0.0)
    got = np.stack([y for _, y in splits.train.as_numpy_iterator()])
    assert sorted(got.tolist()) == sorted(labels.tolist()) and splits.info.num_classes == 4
    with pytest.raises(DataError, match="must be finite"):
        load_dataset(ds.repeat())


def test_default_policy_prunes_every_layer_of_a_small_model(caplog):
    from tfimgopt.compress import plan_pruning
    from tfimgopt.models import create_model

    small = _tutorial_model(keras, (28, 28, 1))  # the classifier holds 99.5% of the weights: pruned too
    pruned, dense = plan_pruning(small)
    conv, classifier = [layer.name for layer in small.layers if layer.weights]
    assert pruned == [classifier] and dense == {conv: "first convolution (default policy)"}
    tiny = create_model("tiny_cnn", (8, 8, 1), 10, filters=2)  # classifier 83%, first conv 17%
    assert plan_pruning(tiny) == (["classifier"], {"conv1": "first convolution (default policy)"})
    big = create_model("small_cnn", (32, 32, 1), 10)  # first conv + classifier: 3% of its weights
    pruned, dense = plan_pruning(big)
    assert set(dense) == {"conv1", "classifier"} and "conv2" in pruned
