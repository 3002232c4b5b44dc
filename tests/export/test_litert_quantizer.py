"""LiteRT Quantizer as the second quantization backend: int4 files, selective float layers
read back from the flatbuffer, the quantization debugger, and the backend choice in a run."""

import numpy as np
import pytest

from tfimgopt.compat import keras
from tfimgopt.errors import ConfigError
from tfimgopt.export import get_exporter, layer_precisions
from tfimgopt.export.debugger import layer_errors, worst_layers
from tfimgopt.export.layers import weighted_layers


def _sensitive_model():
    """A model whose layer `sensitive` is known to break under quantization: huge weights on
    an input channel that is always zero set every quantization scale of that layer, so its
    real weights round to zero, while its float output does not depend on them."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="early")(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="sensitive")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu", name="late")(x)
    model = keras.Model(inputs, keras.layers.Dense(4, name="head")(x))
    kernel, bias = model.get_layer("early").get_weights()
    kernel[..., 0], bias[0] = 0.0, -1.0  # channel 0 of `early` is always 0 after its ReLU
    model.get_layer("early").set_weights([kernel, bias])
    kernel, bias = model.get_layer("sensitive").get_weights()
    kernel[:, :, 0, :] = 1000 * np.abs(kernel).max()
    model.get_layer("sensitive").set_weights([kernel, bias])
    return model


@pytest.fixture(scope="module")
def sensitive():
    return _sensitive_model(), (np.random.RandomState(0).rand(32, 8, 8, 1) * 255).astype("float32")


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_the_debugger_names_the_layer_that_breaks(sensitive, mode, tmp_path):
    model, images = sensitive
    artifact = get_exporter(mode).export(model, str(tmp_path / "m.tflite"), calibration=images, num_calibration=32)
    rows = artifact.layer_errors(model, images[:16])
    assert [r["layer"] for r in rows][:3] == ["early", "sensitive", "late"]
    assert worst_layers(rows, 1)[0]["layer"] == "sensitive"
    by_layer = {r["layer"]: r for r in rows}
    assert by_layer["sensitive"]["noise_added"] > 0.5 > by_layer["early"]["noise_added"]
    assert by_layer["sensitive"]["snr_db"] < 3 < 15 < by_layer["early"]["snr_db"]


def test_layers_that_quantize_cleanly_add_little_noise(tmp_path):
    from tfimgopt.export import export_tflite
    from tfimgopt.models import create_model

    keras.utils.set_random_seed(0)
    model = create_model("tiny_cnn", (8, 8, 1), 4, filters=4)
    images = (np.random.RandomState(1).rand(16, 8, 8, 1) * 255).astype("float32")
    artifact = get_exporter("int8").export(model, str(tmp_path / "m.tflite"), calibration=images, num_calibration=16)
    rows = layer_errors(export_tflite(model, "float32"), artifact.read_bytes(), images, weighted_layers(model))
    assert rows and all(r["cosine"] > 0.99 and r["noise_added"] < 0.05 for r in rows), rows
    assert layer_errors(export_tflite(model, "float32"), export_tflite(model, "float32"), images,
                        weighted_layers(model))[-1]["snr_db"] is None  # identical files: no noise at all


@pytest.mark.parametrize("mode, stored", [("int4", "INT4"), ("weight_only_int4", "INT4"), ("litert_int8", "INT8")])
def test_float_layers_keep_exactly_those_layers_float_in_the_flatbuffer(sensitive, mode, stored, tmp_path):
    model, images = sensitive
    exporter = get_exporter(mode)
    artifact = exporter.export(model, str(tmp_path / "m.tflite"), calibration=images, num_calibration=32,
                               float_layers=["sens*", "head"])
    precisions = layer_precisions(artifact.path, weighted_layers(model))
    assert precisions == {"early": stored, "sensitive": "FLOAT32", "late": stored, "head": "FLOAT32"}
    check = artifact.verify(model, images)
    assert check["float_layers"] == ["head", "sensitive"] and check["backend"] == "litert"
    assert artifact.runner().input_dtype == np.float32 and np.dtype(artifact.runner().output["dtype"]) == np.float32
    with pytest.raises(ConfigError, match=r"export.float_layers: \['nope'\] match no layer"):
        exporter.export(model, str(tmp_path / "x.tflite"), calibration=images, float_layers=["nope"])


def test_the_converters_int8_keeps_float_layers_and_its_other_modes_refuse(sensitive, tmp_path):
    model, images = sensitive
    plain = get_exporter("int8").export(model, str(tmp_path / "plain.tflite"), calibration=images)
    assert not plain.verify(model, images)["passed"]  # `sensitive` in int8 breaks the model
    kept = get_exporter("int8").export(model, str(tmp_path / "m.tflite"), calibration=images,
                                       float_layers=["sens*", "head"])
    assert layer_precisions(kept.path, weighted_layers(model)) == {
        "early": "INT8", "sensitive": "FLOAT32", "late": "INT8", "head": "FLOAT32"}
    assert kept.verify(model, images)["passed"] and kept.runner().input_dtype == np.float32
    for mode in ("dynamic", "float16", "int16x8"):
        assert not get_exporter(mode).keeps_float_layers
        with pytest.raises(ConfigError, match="export.backend: litert"):
            get_exporter(mode).export(model, str(tmp_path / "x.tflite"), calibration=images, float_layers=["head"])


def test_int4_falls_back_per_layer_and_is_smaller_than_int8(tmp_path):
    from tfimgopt.export.litert_recipes import quantize_tflite
    from tfimgopt.models import create_model

    keras.utils.set_random_seed(0)
    model = create_model("small_cnn", (16, 16, 1), 10, width=8, dense=64)
    from tfimgopt.export import export_tflite

    float_blob = export_tflite(model, "float32")
    blockwise = quantize_tflite(float_blob, "dynamic_wi4b32_afp32")  # only `fc` (input 64... ) allows blocks of 32
    precisions = layer_precisions(blockwise, weighted_layers(model))
    assert set(precisions.values()) == {"INT4"} and len(precisions) == len(weighted_layers(model))
    int4 = get_exporter("int4").export(model, str(tmp_path / "a.tflite"))
    int8 = get_exporter("litert_dynamic").export(model, str(tmp_path / "b.tflite"))
    assert int4.sizes()["size_bytes"] < 0.6 * int8.sizes()["size_bytes"]


def test_backend_litert_swaps_the_converter_modes_and_a_missing_package_fails_before_training(monkeypatch):
    from tfimgopt.export import exporter_for_mode, litert_recipes

    assert exporter_for_mode("int8", "litert").name == "litert_int8"
    assert exporter_for_mode("int8", "converter").name == "int8"
    assert exporter_for_mode("float16", "litert").name == "float16"  # no LiteRT recipe: the converter's
    assert exporter_for_mode("int4", "converter").name == "int4"
    monkeypatch.setattr(litert_recipes, "available", lambda: False)
    with pytest.raises(ConfigError, match="pip install 'litert-quantizer"):
        exporter_for_mode("int4", "converter").check()


def test_a_run_refuses_float_layers_the_converter_cannot_keep_before_training(tmp_path):
    from tfimgopt.pipeline import load_config, run

    config = load_config(overrides=["data.image_size=8", "train.model=tiny_cnn", "train.epochs=1",
                                    f"out_dir={tmp_path / 'run'}", "export.float_layers=[classifier]",
                                    "export.modes=[float32,int8,dynamic]", "distill.enabled=false"])
    lines = []
    with pytest.raises(ConfigError, match="set export.backend: litert"):
        run(config, log=lines.append)
    assert not any(line.startswith("== stage baseline [") for line in lines)  # nothing trained


def test_the_precision_search_keeps_the_sensitive_layer_float_and_holds_the_budget(sensitive, tmp_path):
    from tfimgopt.export import open_artifact

    model, images = sensitive
    more = (np.random.RandomState(2).rand(96, 8, 8, 1) * 255).astype("float32")
    labels = model.predict(more, verbose=0).argmax(1)  # the float model is 100% right by construction
    artifact = get_exporter("mixed").export(model, str(tmp_path / "m.tflite"), validation=(more, labels),
                                            max_accuracy_drop=2.0, objective="size")
    search = artifact.search
    assert search["plan"]["sensitive"] == "float32"
    assert {search["plan"][name] for name in ("early", "late", "head")} <= {"int4", "int8"}
    assert search["accuracy_drop_points"] <= 2.0 and search["float_accuracy"] == 1.0
    sensitive_row = next(r for r in search["layers"] if r["layer"] == "sensitive")
    assert sensitive_row["candidates"]["int8"]["drop_points"] > 2.0  # measured, which is why it stayed float
    assert sensitive_row["refused"] == ["int4", "int8"]
    # The file is what the plan says, read back from the flatbuffer, and it holds the budget when re-measured.
    precisions = layer_precisions(artifact.path, weighted_layers(model))
    assert precisions["sensitive"] == "FLOAT32"
    assert all(precisions[k] == search["plan"][k].upper() for k in ("early", "late", "head"))
    got = open_artifact(artifact.path, "mixed").predict(more).argmax(1)
    assert 100 * (1 - (got == labels).mean()) <= 2.0
    check = artifact.verify(model, images)
    assert check["search"]["plan"] == search["plan"] and "blob" not in check["search"]


def test_a_run_with_the_litert_backend_int4_the_search_and_float_layers(tmp_path):
    import json

    from tfimgopt.pipeline import load_config, run
    from tfimgopt.pipeline.steps import verify_run

    out = tmp_path / "run"
    report = run(load_config(overrides=[
        "data.image_size=8", "train.model=tiny_cnn", "train.epochs=3", "train.learning_rate=0.01",
        "distill.enabled=false", "compress.enabled=false", "export.latency_runs=3", "export.num_calibration=32",
        "export.modes=[float32,int8,int4,mixed]", "export.backend=litert", "export.float_layers=[classifier]",
        f"out_dir={json.dumps(str(out))}"]), log=lambda _: None)
    rows = {r["variant"]: r for r in report["variants"]}
    failed = report["failed_variants"]
    assert {"baseline_float32", "baseline_int4", "baseline_mixed"} <= set(rows) | set(failed)
    assert "baseline_int8" in set(rows) | set(failed)
    assert report["verification"]["baseline_int8"]["backend"] == "litert"  # int8 made by LiteRT Quantizer
    for name in ("baseline_int8", "baseline_int4", "baseline_mixed"):
        q = report["quantization"][name]
        assert q["float_layers"] == ["classifier"]
        assert [r["layer"] for r in q["layer_errors"]] == ["conv1", "classifier"]
        assert layer_precisions(str(out / (rows.get(name) or {"path": f"tflite/{name}.tflite"})["path"]),
                                ["conv1", "classifier"])["classifier"] == "FLOAT32"
    assert report["verification"]["baseline_mixed"]["search"]["plan"]["classifier"] == "float32"
    md = (out / "report.md").read_text()
    assert "## Quantization debugger" in md and "| baseline_int4 |" in md
    assert verify_run(str(out))["rerun"] == len(rows)


def test_int4_stores_depthwise_convolutions_in_int8_and_says_so(tmp_path):
    from tfimgopt.models import create_model

    keras.utils.set_random_seed(0)
    model = create_model("mobilenet_v2", (32, 32, 3), 4, alpha=0.35)
    images = (np.random.RandomState(0).rand(8, 32, 32, 3) * 255).astype("float32")
    artifact = get_exporter("int4").export(model, str(tmp_path / "m.tflite"))
    precisions = layer_precisions(artifact.path, weighted_layers(model))
    depthwise = {layer.name for layer in model.layers if isinstance(layer, keras.layers.DepthwiseConv2D)}
    assert depthwise and {precisions[name] for name in depthwise} == {"INT8"}
    assert {t for n, t in precisions.items() if n not in depthwise} == {"INT4"}
    assert set(artifact.verify(model, images, num_samples=8)["fallback_layers"]) == depthwise


def test_the_search_can_give_a_layer_float16_weights(sensitive, tmp_path):
    model, images = sensitive
    more = (np.random.RandomState(3).rand(64, 8, 8, 1) * 255).astype("float32")
    labels = model.predict(more, verbose=0).argmax(1)
    artifact = get_exporter("mixed").export(model, str(tmp_path / "m.tflite"), validation=(more, labels),
                                            max_accuracy_drop=2.0, candidates=["float16", "int8", "int4"])
    plan = artifact.search["plan"]
    assert plan["sensitive"] == "float16"  # int8 and int4 break it, float16 holds it: the next-cheapest that fits
    assert layer_precisions(artifact.path, weighted_layers(model))["sensitive"] == "FLOAT16"
    with pytest.raises(ConfigError, match="candidates must be a non-empty list"):
        get_exporter("mixed").export(model, str(tmp_path / "x.tflite"), validation=(more, labels),
                                     candidates=["int16x8"])


def test_the_export_stage_reads_the_budget_only_when_the_search_runs():
    from tfimgopt.pipeline import load_config
    from tfimgopt.pipeline.stages import get_stage

    stage = get_stage("export")
    plain = load_config(overrides=["export.max_accuracy_drop=2"])
    assert "export.max_accuracy_drop" not in stage.inputs(plain)
    searched = load_config(overrides=["export.modes=[float32,mixed]", "export.max_accuracy_drop=2"])
    assert stage.inputs(searched)["export.max_accuracy_drop"] == 2.0
    assert stage.inputs(searched)["export.optimize_for"] == "size"
