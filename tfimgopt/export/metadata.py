"""TFLite metadata, so an exported classifier deploys as-is: label names, input
normalization, model name and version, as MediaPipe Tasks' `ImageClassifier` and the TFLite
Task Library read them.

Written and read with MediaPipe's metadata writers, the maintained successor of
tflite-support's (which has no wheels past Python 3.11). Install them with `INSTALL`:
MediaPipe declares absl-py~=2.3 and TFMOT 0.8.1 absl-py~=1.2, so pip cannot resolve them
together, while the writers and MediaPipe's ImageClassifier need neither absl 2 nor
MediaPipe's own OpenCV wheel (any cv2 will do; it is imported when MediaPipe loads).
MediaPipe's wheels since 0.10.30 ship those writers without the compiled helper that stamps
the minimum metadata parser version into the file (`mediapipe.tasks.cc.metadata.python.
_pywrap_metadata_version`), so importing them fails. `_parser_version` below computes the
same value from the same rules (MediaPipe's `metadata_version.cc`) and stands in for the
helper only where it is missing.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys
import types
from collections.abc import Sequence
from typing import Any

from tfimgopt import _io
from tfimgopt.errors import ConfigError, EnvironmentProblem, received

# The file name of the label list packed into the model (what Model Maker writes).
LABELS_FILE = "labels.txt"
# The identifier TFLite gives the metadata buffer inside a model.
METADATA_NAME = "TFLITE_METADATA"
_HELPER = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"
# MediaPipe imports OpenCV when it loads (any cv2 wheel; the headless one needs no display libraries).
INSTALL = 'pip install opencv-python-headless && pip install --no-deps "mediapipe>=0.10.30,<2"'


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
    """What an exported classifier tells the app that loads it.

    Attributes:
        labels: One name per class, in output order.
        name: Model name.
        version: Model version (a string: `"1"`, `"2026.11.28"`...).
        description: What the model does.
        author: Who made it.
        license: Its license.
        mean, std: Input normalization, per channel or one value for all: the app feeds
            `(pixel - mean) / std` with pixels in 0..255. tfimgopt's models rescale inside
            the model, so the default is the identity (0, 1).
        grayscale: The model takes one-channel images (the app converts colour images).
    """

    labels: tuple[str, ...]
    name: str = "tfimgopt image classifier"
    version: str = "1"
    description: str = ""
    author: str = ""
    license: str = ""
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    grayscale: bool = False

    def __post_init__(self):
        labels = tuple(str(label) for label in self.labels)
        if not labels or any(not label.strip() or "\n" in label for label in labels):
            raise ConfigError("labels must be one non-empty, single-line name per class. "
                              f"{received('labels', self.labels)}")
        object.__setattr__(self, "labels", labels)
        mean, std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)
        if len(mean) != len(std) or not mean or any(s == 0 for s in std):
            raise ConfigError("mean and std need the same number of values (1, or one per channel), and std "
                              f"no zero. Received: mean={self.mean!r}, std={self.std!r}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)


def available() -> bool:
    """True when MediaPipe's metadata writers can be imported (see `INSTALL`)."""
    try:
        require()
    except EnvironmentProblem:
        return False
    return True


def require() -> None:
    """Raises `EnvironmentProblem` (saying what to install) unless the writers import."""
    _writers()


def add_metadata(model: bytes | str | os.PathLike, info: ModelMetadata, path: str | os.PathLike | None = None
                 ) -> bytes:
    """Packs `info` (and the label file) into a TFLite classifier.

    Args:
        model: The `.tflite` bytes or file, as converted (without metadata).
        info: What to write.
        path: Where to write the result atomically; nothing is written if None.

    Returns:
        The model bytes with metadata. The graph and weights are unchanged: LiteRT gives
        the same outputs.

    Raises:
        EnvironmentProblem: MediaPipe is not installed (see `INSTALL`).
        ConfigError: the model carries metadata already, or it is not a classifier with
            one image input and one output of `len(info.labels)` classes, or its channels
            do not match `mean`/`std`.

    Example:
        >>> from tfimgopt.export import export_tflite
        >>> from tfimgopt.export.metadata import ModelMetadata, add_metadata, available
        >>> blob = export_tflite(model)  # a grayscale digits classifier
        >>> if available():  # MediaPipe installed
        ...     blob = add_metadata(blob, ModelMetadata(tuple("0123456789"), grayscale=True, version="2"))
    """
    metadata_writer, metadata_info, metadata_fb = _writers()
    blob = _read(model)
    if has_metadata(blob):
        # MediaPipe's populator appends the label file after the flatbuffer and cannot take it out.
        raise ConfigError("This model carries TFLite metadata already; add metadata to the file as converted "
                          "(export_tflite(..., metadata=...) or tfimgopt export --metadata on).")
    shape, classes = _classifier_shapes(blob)
    channels = shape[-1]
    if len(info.labels) != classes:
        raise ConfigError(f"The model outputs {classes} classes but {len(info.labels)} labels were given. "
                          f"{received('labels', info.labels)}")
    if len(info.mean) not in (1, channels):
        raise ConfigError(f"The model takes {channels}-channel images: mean and std need 1 or {channels} values. "
                          f"Received: mean={info.mean!r}")
    if info.grayscale != (channels == 1):
        raise ConfigError(f"grayscale={info.grayscale} but the model takes {channels}-channel images.")
    writer = metadata_writer.MetadataWriter.create(bytearray(blob))
    # add_general_info() sets only name and description; the writer keeps the whole table here.
    writer._general_md = metadata_info.GeneralMd(name=info.name, version=info.version,
                                                 description=info.description or None,
                                                 author=info.author or None, licenses=info.license or None)
    space = metadata_fb.ColorSpaceType.GRAYSCALE if channels == 1 else metadata_fb.ColorSpaceType.RGB
    writer.add_image_input(list(info.mean), list(info.std), color_space_type=space,
                           description=f"{shape[1]}x{shape[2]} {'grayscale' if channels == 1 else 'RGB'} image, "
                                       "pixels 0..255 normalized as (pixel - mean) / std.")
    writer.add_classification_output(
        metadata_writer.Labels().add(list(info.labels)), name="logits",
        description=f"One score per class ({classes}): logits (apply softmax for probabilities).")
    out = bytes(writer.populate()[0])
    del writer  # its __del__ removes a temporary folder: now, not at interpreter exit
    if path is not None:
        _io.write_bytes(os.fspath(path), out)
    return out


def read_metadata(model: bytes | str | os.PathLike) -> dict[str, Any] | None:
    """The metadata of a TFLite file as MediaPipe's reader sees it, or None if it has none.

    Returns:
        `name`, `version`, `description`, `author`, `license`, `labels` (from the packed
        label file), `mean`, `std`, `color_space`, `min_parser_version` and `json` (the
        whole metadata as MediaPipe's displayer writes it).
    """
    import json

    _writers()
    from mediapipe.tasks.python.metadata import metadata

    blob = _read(model)
    if not has_metadata(blob):
        return None
    displayer = metadata.MetadataDisplayer.with_model_buffer(blob)
    text = displayer.get_metadata_json()
    meta = json.loads(text)
    graph = meta["subgraph_metadata"][0]
    image, scores = graph["input_tensor_metadata"][0], graph["output_tensor_metadata"][0]
    norm = next((u["options"] for u in image.get("process_units", [])
                 if u.get("options_type") == "NormalizationOptions"), {})
    files = [f["name"] for f in scores.get("associated_files", []) if f.get("type") == "TENSOR_AXIS_LABELS"]
    labels = displayer.get_associated_file_buffer(files[0]).decode().splitlines() if files else []
    return {
        "name": meta.get("name"), "version": meta.get("version"), "description": meta.get("description"),
        "author": meta.get("author"), "license": meta.get("license"), "labels": labels,
        "mean": norm.get("mean"), "std": norm.get("std"),
        "color_space": image.get("content", {}).get("content_properties", {}).get("color_space"),
        "min_parser_version": meta.get("min_parser_version"), "json": text,
    }


def has_metadata(model: bytes | str | os.PathLike) -> bool:
    """True when the file carries a TFLite metadata buffer (needs no MediaPipe)."""
    return METADATA_NAME in _model_metadata_names(_read(model))


def _read(model: bytes | str | os.PathLike) -> bytes:
    if isinstance(model, bytes | bytearray):
        return bytes(model)
    with open(model, "rb") as f:
        return f.read()


def _flatbuffer_model(blob: bytes):
    from tensorflow.lite.python import schema_py_generated as schema

    if len(blob) < 8 or blob[4:8] != b"TFL3":
        raise ConfigError(f"Not a TFLite model (no TFL3 identifier in its first bytes; {len(blob)} bytes).")
    return schema.Model.GetRootAs(blob, 0)


def _model_metadata_names(blob: bytes) -> list[str]:
    model = _flatbuffer_model(blob)
    return [model.Metadata(i).Name().decode() for i in range(model.MetadataLength())]


def _classifier_shapes(blob: bytes) -> tuple[tuple[int, ...], int]:
    """(input shape, number of classes) of a one-image-in, one-vector-out model."""
    model = _flatbuffer_model(blob)
    graph = model.Subgraphs(0)
    ins = [graph.Tensors(graph.Inputs(i)).ShapeAsNumpy().tolist() for i in range(graph.InputsLength())]
    outs = [graph.Tensors(graph.Outputs(i)).ShapeAsNumpy().tolist() for i in range(graph.OutputsLength())]
    if len(ins) != 1 or len(ins[0]) != 4 or ins[0][-1] not in (1, 3) or len(outs) != 1 or len(outs[0]) != 2:
        raise ConfigError("Metadata is written for image classifiers: one (batch, height, width, 1 or 3) input "
                          f"and one (batch, classes) output. Received: inputs={ins}, outputs={outs}")
    return tuple(ins[0]), int(outs[0][-1])


def _writers():
    """MediaPipe's metadata_writer, metadata_info and metadata schema modules."""
    def broken(err: ImportError) -> EnvironmentProblem:
        return EnvironmentProblem(f"MediaPipe is installed but does not import ({err}). It imports OpenCV when it "
                                  f"loads: {INSTALL}. Or export without metadata (export.metadata: off).")

    try:
        importlib.import_module(_HELPER)
    except ImportError as err:
        if importlib.util.find_spec("mediapipe") is None:
            raise EnvironmentProblem(
                f"TFLite metadata needs MediaPipe's metadata writers: {INSTALL} (--no-deps: MediaPipe's declared "
                "absl-py~=2.3 conflicts with TFMOT's absl-py~=1.2, and the writers need neither). Or export "
                "without metadata (export.metadata: off).") from None
        if not isinstance(err, ModuleNotFoundError) or not (err.name or "").startswith("mediapipe.tasks.cc"):
            raise broken(err) from None
        _install_parser_version_helper()
    try:
        from mediapipe.tasks.metadata import metadata_schema_py_generated as metadata_fb
        from mediapipe.tasks.python.metadata.metadata_writers import metadata_info, metadata_writer
    except ImportError as err:
        raise broken(err) from None
    return metadata_writer, metadata_info, metadata_fb


def _install_parser_version_helper() -> None:
    """Registers `_HELPER` (and its missing parent packages) as a module whose one function
    is `_parser_version`."""
    parts = _HELPER.split(".")
    for depth in range(3, len(parts) + 1):
        name = ".".join(parts[:depth])
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
            continue
        except ModuleNotFoundError:
            pass
        module = types.ModuleType(name, "Stands in for a compiled MediaPipe helper missing from its wheel "
                                        "(tfimgopt.export.metadata).")
        if depth < len(parts):
            module.__path__ = []
        else:
            module.GetMinimumMetadataParserVersion = _parser_version
        sys.modules[name] = module
        setattr(sys.modules[".".join(parts[:depth - 1])], parts[depth - 1], module)


# The metadata schema fields added after 1.0.0, and the parser version that reads them
# (MediaPipe's metadata_version.cc, GetMemberVersion).
_VOCABULARY, _SCANN_INDEX, _FILE_VERSION = (1, 0, 1), (1, 4, 0), (1, 4, 1)
_PROCESS_UNITS, _BERT, _SENTENCE_PIECE, _REGEX = (1, 1, 0), (1, 1, 0), (1, 1, 0), (1, 2, 1)
_TENSOR_GROUPS, _AUDIO, _CUSTOM = (1, 2, 0), (1, 3, 0), (1, 5, 0)


def _parser_version(buffer: bytes) -> str:
    """The lowest metadata parser version that understands every field of a metadata
    flatbuffer (`ModelMetadata`): the newest version among the fields it uses."""
    from mediapipe.tasks.metadata import metadata_schema_py_generated as fb

    root = fb.ModelMetadata.GetRootAs(bytes(buffer), 0)
    meta = fb.ModelMetadataT.InitFromObj(root)
    needed = [(1, 0, 0)]

    def files(items: Sequence[Any] | None) -> None:
        for item in items or ():
            if item.type == fb.AssociatedFileType.VOCABULARY:
                needed.append(_VOCABULARY)
            if item.type == fb.AssociatedFileType.SCANN_INDEX_FILE:
                needed.append(_SCANN_INDEX)
            if item.version is not None:
                needed.append(_FILE_VERSION)

    def units(items: Sequence[Any] | None) -> None:
        tokenizers = {fb.ProcessUnitOptions.BertTokenizerOptions: _BERT,
                      fb.ProcessUnitOptions.SentencePieceTokenizerOptions: _SENTENCE_PIECE,
                      fb.ProcessUnitOptions.RegexTokenizerOptions: _REGEX}
        needed.extend(tokenizers[u.optionsType] for u in items or () if u.optionsType in tokenizers)

    for graph in meta.subgraphMetadata or ():
        for tensor in [*(graph.inputTensorMetadata or ()), *(graph.outputTensorMetadata or ())]:
            files(tensor.associatedFiles)
            units(tensor.processUnits)
            if tensor.content is not None and \
                    tensor.content.contentPropertiesType == fb.ContentProperties.AudioProperties:
                needed.append(_AUDIO)
        files(graph.associatedFiles)
        for present, version in ((graph.inputProcessUnits, _PROCESS_UNITS), (graph.outputProcessUnits, _PROCESS_UNITS),
                                 (graph.inputTensorGroups, _TENSOR_GROUPS), (graph.outputTensorGroups, _TENSOR_GROUPS),
                                 (graph.customMetadata, _CUSTOM)):
            if present is not None:
                needed.append(version)
        units(graph.inputProcessUnits)
        units(graph.outputProcessUnits)
    files(meta.associatedFiles)
    return ".".join(str(v) for v in max(needed))
