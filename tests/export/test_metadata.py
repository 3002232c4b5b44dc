"""TFLite metadata (label names, input normalization, name, version), written and read back
with flatbuffers alone (no MediaPipe), and the file loaded by MediaPipe Tasks' ImageClassifier.

The ImageClassifier test needs MediaPipe, which tfimgopt no longer installs: it runs where
MediaPipe is installed (`.ci/run` installs it with --no-deps after checking `pip check`, to run
this interop test); everything else runs everywhere.
"""

import importlib.util
import sys

import numpy as np
import pytest

from tfimgopt.compat import keras
from tfimgopt.errors import ConfigError
from tfimgopt.export import TFLiteRunner, export_tflite
from tfimgopt.export import metadata as md

LABELS = ("cat", "dog", "bird")


@pytest.fixture(scope="module")
def rgb_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(x))
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def images():
    return np.random.RandomState(0).randint(0, 256, (24, 8, 8, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def plain(rgb_model):
    return export_tflite(rgb_model, "float32")


def test_plain_export_has_no_metadata_and_non_tflite_is_refused(plain):
    assert not md.has_metadata(plain)
    with pytest.raises(ConfigError, match="Not a TFLite model"):
        md.has_metadata(b"PK\x03\x04 a zip, not a model")


@pytest.mark.parametrize("kwargs, match", [
    ({"labels": ()}, r"at least one class\. Received: labels=\(\)"),
    ({"labels": ("a", "two\nlines")}, r"single-line names .* Received: label='two\\nlines'"),
    *[({"labels": ("a", f"x{brk}y")}, r"no line breaks of any kind.*Received: label='x.*y'")
      for brk in ("\r", "\v", "\f", "\x1c", "\x85", "\u2028", "\u2029")],
    ({"labels": ("a", " ")}, "non-empty"),
    ({"labels": ("a", "caf\udce9")}, r"UTF-8 can encode.*Received: label='caf\\udce9'"),
    ({"labels": ("a", "b"), "name": "caf\udce9"}, r"name must be text that UTF-8 can encode"),
    ({"labels": ("a", "b"), "mean": (0.0, 0.0), "std": (1.0,)}, "same number of values"),
    ({"labels": ("a", "b"), "std": (0.0,)}, "std no zero"),
])
def test_bad_metadata_is_refused_naming_the_value(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        md.ModelMetadata(**kwargs)


def _without_mediapipe(monkeypatch):
    for name in [n for n in sys.modules if n == "mediapipe" or n.startswith("mediapipe.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # as if not installed


def test_metadata_needs_no_mediapipe(monkeypatch, rgb_model):
    _without_mediapipe(monkeypatch)
    blob = export_tflite(rgb_model, "float32", metadata=md.ModelMetadata(LABELS))
    assert md.read_metadata(blob)["labels"] == list(LABELS)
    assert "mediapipe" not in {n.split(".")[0] for n in sys.modules if sys.modules[n] is not None}


def test_labels_with_any_line_break_round_trip_or_are_refused():
    """Every label that is accepted reads back as exactly one line: splitlines() on the packed
    file gives the same names (what apps do with labels.txt)."""
    names = ("naïve tab\tinside", "emoji 🐱", "comma, and 'quotes'")
    plain = export_tflite(keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]))
    blob = md.add_metadata(plain, md.ModelMetadata(names, grayscale=True))
    assert md.read_metadata(blob)["labels"] == list(names)


def test_metadata_setting_is_validated():
    from tfimgopt.pipeline import load_config

    # Unquoted YAML on/off/yes/no are booleans: they mean the words.
    assert [load_config(overrides=[f"export.metadata={v}"]).export.metadata for v in ("on", "off", "yes", "auto")] \
        == ["on", "off", "on", "auto"]
    with pytest.raises(ConfigError, match="export.metadata.*one of \\('auto', 'on', 'off'\\)"):
        load_config(overrides=["export.metadata=sometimes"])


@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_metadata_round_trip_and_outputs_unchanged(rgb_model, images, plain, mode, tmp_path):
    info = md.ModelMetadata(LABELS, name="pets", version="2026.11", description="three pets", author="tfimgopt",
                            license="Apache-2.0")
    path = tmp_path / f"pets_{mode}.tflite"
    bare = export_tflite(rgb_model, mode, images) if mode == "int8" else plain
    blob = export_tflite(rgb_model, mode, images, path=str(path), metadata=info)
    assert path.read_bytes() == blob and md.has_metadata(blob) and not md.has_metadata(bare)
    got = md.read_metadata(str(path))
    assert got["labels"] == list(LABELS)
    assert (got["name"], got["version"], got["description"], got["author"], got["license"]) == \
        ("pets", "2026.11", "three pets", "tfimgopt", "Apache-2.0")
    assert (got["mean"], got["std"], got["color_space"]) == ([0.0], [1.0], "RGB")
    assert got["min_parser_version"] == "1.0.0"  # labels and normalization only: the first schema
    # The graph is untouched: LiteRT gives bit-identical outputs with and without metadata.
    np.testing.assert_array_equal(TFLiteRunner(blob).predict(images), TFLiteRunner(bare).predict(images))
    # The same input gives the same bytes (fixed zip timestamps): artifact hashes are reproducible.
    assert export_tflite(rgb_model, mode, images, metadata=info) == blob


def test_add_metadata_checks_the_model(plain):
    once = md.add_metadata(plain, md.ModelMetadata(LABELS, version="1"))
    with pytest.raises(ConfigError, match="carries TFLite metadata already"):
        md.add_metadata(once, md.ModelMetadata(("x", "y", "z"), version="2"))
    with pytest.raises(ConfigError, match="outputs 3 classes but 2 labels"):
        md.add_metadata(plain, md.ModelMetadata(("a", "b")))
    with pytest.raises(ConfigError, match="takes 3-channel images: mean and std need 1 or 3"):
        md.add_metadata(plain, md.ModelMetadata(LABELS, mean=(0.0, 0.0), std=(1.0, 1.0)))


def _mediapipe_tasks() -> bool:
    try:
        return importlib.util.find_spec("mediapipe") is not None and \
            importlib.util.find_spec("mediapipe.tasks.python.vision") is not None
    except ImportError:  # MediaPipe's package imports OpenCV when it loads
        return False


@pytest.mark.skipif(not _mediapipe_tasks(), reason="interop test: needs MediaPipe Tasks installed (`.ci/run` "
                                                   "installs it with --no-deps)")
@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_mediapipe_image_classifier_loads_the_file_and_agrees_with_litert(rgb_model, images, mode):
    import mediapipe as mp
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    blob = export_tflite(rgb_model, mode, images, metadata=md.ModelMetadata(LABELS))
    logits = TFLiteRunner(blob).predict(images[:4])
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_buffer=blob), max_results=3)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for image, row in zip(images[:4].astype(np.uint8), logits, strict=True):
            result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=image))
            categories = result.classifications[0].categories
            # MediaPipe normalized 0..255 pixels with the metadata's (0, 1) and named the classes.
            assert [c.category_name for c in categories] == [LABELS[i] for i in np.argsort(-row)]
            np.testing.assert_allclose([c.score for c in categories], np.sort(row)[::-1], rtol=1e-5, atol=1e-5)


def test_parser_version_follows_mediapipes_rules():
    """`_parser_version` computes what MediaPipe's compiled GetMinimumMetadataParserVersion
    does; the versions are those of metadata_version.cc."""
    import flatbuffers

    from tfimgopt.export import _metadata_schema as fb

    def version(edit):
        meta, graph, tensor = fb.ModelMetadataT(), fb.SubGraphMetadataT(), fb.TensorMetadataT()
        graph.inputTensorMetadata, graph.outputTensorMetadata = [tensor], [fb.TensorMetadataT()]
        meta.subgraphMetadata = [graph]
        edit(meta, graph, tensor)
        builder = flatbuffers.Builder(0)
        builder.Finish(meta.Pack(builder), b"M001")
        return md._parser_version(bytes(builder.Output()))

    def file(kind, file_version=None):
        f = fb.AssociatedFileT()
        f.name, f.type, f.version = "f.txt", kind, file_version
        return f

    def unit(kind, options):
        u = fb.ProcessUnitT()
        u.optionsType, u.options = kind, options
        return u

    def content(kind, properties):
        c = fb.ContentT()
        c.contentPropertiesType, c.contentProperties = kind, properties
        return c

    T = fb.AssociatedFileType
    cases = {
        "1.0.0": lambda m, g, t: setattr(t, "associatedFiles", [file(T.TENSOR_AXIS_LABELS)]),
        "1.0.1": lambda m, g, t: setattr(t, "associatedFiles", [file(T.VOCABULARY)]),
        "1.1.0": lambda m, g, t: setattr(g, "inputProcessUnits", []),
        "1.2.0": lambda m, g, t: setattr(g, "outputTensorGroups", [fb.TensorGroupT()]),
        "1.2.1": lambda m, g, t: setattr(t, "processUnits", [unit(fb.ProcessUnitOptions.RegexTokenizerOptions,
                                                                  fb.RegexTokenizerOptionsT())]),
        "1.3.0": lambda m, g, t: setattr(t, "content", content(fb.ContentProperties.AudioProperties,
                                                               fb.AudioPropertiesT())),
        "1.4.0": lambda m, g, t: setattr(m, "associatedFiles", [file(T.SCANN_INDEX_FILE)]),
        "1.4.1": lambda m, g, t: setattr(t, "associatedFiles", [file(T.TENSOR_AXIS_LABELS, "2")]),
        "1.5.0": lambda m, g, t: setattr(g, "customMetadata", [fb.CustomMetadataT()]),
    }
    assert {want: version(edit) for want, edit in cases.items()} == {want: want for want in cases}
    # The newest field wins.
    assert version(lambda m, g, t: (cases["1.2.1"](m, g, t), cases["1.0.1"](m, g, t))) == "1.2.1"


def test_export_command_writes_dataset_labels(tmp_path):
    from tfimgopt.models import create_model
    from tfimgopt.pipeline import load_config
    from tfimgopt.pipeline.steps import export_step

    path = tmp_path / "digits_rgb.keras"
    create_model("tiny_cnn", (8, 8, 3), 10).save(path)
    config = load_config(overrides=["data.image_size=8", "data.channels=3", "export.metadata=on",
                                    "export.model_version='3'", "export.license=MIT"])
    result = export_step(config, str(path), str(tmp_path / "digits_rgb.tflite"), "int8")
    assert result["metadata"] and result["verify"]["passed"]
    got = md.read_metadata(str(tmp_path / "digits_rgb.tflite"))
    assert got["labels"] == [str(d) for d in range(10)]
    assert (got["name"], got["version"], got["license"], got["color_space"]) == \
        ("digits_rgb (digits)", "3", "MIT", "RGB")
