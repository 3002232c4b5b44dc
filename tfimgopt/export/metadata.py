"""TFLite metadata, so an exported classifier deploys as-is: label names, input
normalization, model name and version, as MediaPipe Tasks' `ImageClassifier` and the TFLite
Task Library read them.

Written and read here with `flatbuffers` alone (a TensorFlow dependency) and the TFLite
metadata schema (`tfimgopt.export._metadata_schema`, generated code vendored from MediaPipe):
the metadata table goes into a `TFLITE_METADATA` buffer of the model's flatbuffer, and the label
file is appended as a zip archive (stored, fixed timestamps: the same input gives the same
bytes), exactly the layout MediaPipe's and tflite-support's populators write. MediaPipe is not
needed: its wheels declare pins pip cannot resolve beside TFMOT (absl-py~=2.3 against ~=1.2)
and bring their own OpenCV. The minimum parser version is computed by `_parser_version`, from
the rules of MediaPipe's `metadata_version.cc`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile
from collections.abc import Sequence
from typing import Any

from tfimgopt import _io
from tfimgopt.errors import ConfigError, received

# The file name of the label list packed into the model (what Model Maker writes).
LABELS_FILE = "labels.txt"
# The identifier TFLite gives the metadata buffer inside a model, and the metadata's file identifier.
METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
# Characters that end a line for str.splitlines(), so for every label-file reader: refused in labels.
LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"


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
        check_labels(labels)
        for key in ("name", "version", "description", "author", "license"):
            if not _utf8(getattr(self, key)):
                raise ConfigError(f"{key} must be text that UTF-8 can encode (no lone surrogates). "
                                  f"{received(key, getattr(self, key))}")
        object.__setattr__(self, "labels", labels)
        mean, std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)
        if len(mean) != len(std) or not mean or any(s == 0 for s in std):
            raise ConfigError("mean and std need the same number of values (1, or one per channel), and std "
                              f"no zero. Received: mean={self.mean!r}, std={self.std!r}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, as os.listdir gives undecodable bytes
        return False
    return True


def check_labels(labels: Sequence[str], what: str = "labels") -> None:
    """Refuses label names a label file cannot carry one per line: empty ones, ones holding any
    line break `str.splitlines()` knows (a reader would split one class into two), ones UTF-8
    cannot encode.

    Raises:
        ConfigError: naming the first bad label.
    """
    if not labels:
        raise ConfigError(f"{what} must name at least one class. {received(what, labels)}")
    for label in labels:
        if not label.strip() or any(c in LINE_BREAKS for c in label) or not _utf8(label):
            raise ConfigError(
                f"{what} must be non-empty, single-line names that UTF-8 can encode (no line breaks of any kind: "
                f"\\n, \\r, \\v, \\f, \\x85, \\u2028...), one per class: rename that class. "
                f"Received: label={label!r}")


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
        ConfigError: the model carries metadata already, or it is not a classifier with
            one image input and one output of `len(info.labels)` classes, or its channels
            do not match `mean`/`std`.

    Example:
        >>> from tfimgopt.export import export_tflite
        >>> from tfimgopt.export.metadata import ModelMetadata, add_metadata
        >>> blob = export_tflite(model)  # a grayscale digits classifier
        >>> blob = add_metadata(blob, ModelMetadata(tuple("0123456789"), grayscale=True, version="2"))
    """
    blob = _read(model)
    if has_metadata(blob):
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
    out = _with_associated_file(_with_metadata_buffer(blob, _metadata_buffer(info, shape, classes)),
                                LABELS_FILE, "\n".join(info.labels).encode("utf-8"))
    if path is not None:
        _io.write_bytes(os.fspath(path), out)
    return out


def _metadata_buffer(info: ModelMetadata, shape: Sequence[int], classes: int) -> bytes:
    """The `ModelMetadata` flatbuffer of an image classifier (what MediaPipe's ImageClassifier
    writer makes: image input with normalization and value range, scores with the label file)."""
    import flatbuffers

    from tfimgopt.export import _metadata_schema as fb

    channels = shape[-1]
    image = fb.TensorMetadataT()
    image.name = "image"
    image.description = (f"{shape[1]}x{shape[2]} {'grayscale' if channels == 1 else 'RGB'} image, pixels 0..255 "
                         "normalized as (pixel - mean) / std.")
    image.content = fb.ContentT()
    image.content.contentPropertiesType = fb.ContentProperties.ImageProperties
    image.content.contentProperties = fb.ImagePropertiesT()
    image.content.contentProperties.colorSpace = (fb.ColorSpaceType.GRAYSCALE if channels == 1
                                                  else fb.ColorSpaceType.RGB)
    norm = fb.NormalizationOptionsT()
    norm.mean, norm.std = list(info.mean), list(info.std)
    unit = fb.ProcessUnitT()
    unit.optionsType, unit.options = fb.ProcessUnitOptions.NormalizationOptions, norm
    image.processUnits = [unit]
    image.stats = fb.StatsT()
    image.stats.max = [(255.0 - m) / s for m, s in zip(info.mean, info.std, strict=True)]
    image.stats.min = [(0.0 - m) / s for m, s in zip(info.mean, info.std, strict=True)]
    scores = fb.TensorMetadataT()
    scores.name = "logits"
    scores.description = f"One score per class ({classes}): logits (apply softmax for probabilities)."
    scores.content = fb.ContentT()
    scores.content.contentPropertiesType = fb.ContentProperties.FeatureProperties
    scores.content.contentProperties = fb.FeaturePropertiesT()
    scores.stats = fb.StatsT()
    scores.stats.max, scores.stats.min = [1.0], [0.0]
    labels = fb.AssociatedFileT()
    labels.name, labels.type = LABELS_FILE, fb.AssociatedFileType.TENSOR_AXIS_LABELS
    labels.description = "Labels for categories that the model can recognize."
    scores.associatedFiles = [labels]
    graph = fb.SubGraphMetadataT()
    graph.inputTensorMetadata, graph.outputTensorMetadata = [image], [scores]
    meta = fb.ModelMetadataT()
    meta.name, meta.version = info.name, info.version
    meta.description = info.description or None
    meta.author, meta.license = info.author or None, info.license or None
    meta.subgraphMetadata = [graph]

    def pack() -> bytes:
        builder = flatbuffers.Builder(0)
        builder.Finish(meta.Pack(builder), METADATA_IDENTIFIER)
        return bytes(builder.Output())

    meta.minParserVersion = _parser_version(pack())
    return pack()


def _with_metadata_buffer(blob: bytes, metadata: bytes) -> bytes:
    """The model flatbuffer with `metadata` as a new buffer named `TFLITE_METADATA`."""
    import flatbuffers
    import numpy as np

    schema = _model_schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(blob, 0))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata, dtype=np.uint8)
    model.buffers = [*(model.buffers or []), buffer]
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    builder = flatbuffers.Builder(max(1024, len(blob) + len(metadata)))
    builder.Finish(model.Pack(builder), b"TFL3")
    return bytes(builder.Output())


def _with_associated_file(blob: bytes, name: str, data: bytes) -> bytes:
    """`blob` with a zip archive holding `name` appended (stored, fixed timestamp), as TFLite
    metadata packs its associated files: zip readers find the archive from the end."""
    stream = io.BytesIO(blob)
    stream.seek(0, io.SEEK_END)
    with zipfile.ZipFile(stream, "a", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return stream.getvalue()


def read_metadata(model: bytes | str | os.PathLike) -> dict[str, Any] | None:
    """The metadata of a TFLite file, or None if it has none.

    Returns:
        `name`, `version`, `description`, `author`, `license`, `labels` (from the packed
        label file), `mean`, `std`, `color_space`, `min_parser_version` and `json` (the
        fields above as JSON).
    """
    from tfimgopt.export import _metadata_schema as fb

    blob = _read(model)
    buffer = _metadata_bytes(blob)
    if buffer is None:
        return None
    meta = fb.ModelMetadataT.InitFromObj(fb.ModelMetadata.GetRootAs(buffer, 0))
    graph = meta.subgraphMetadata[0]
    image, scores = graph.inputTensorMetadata[0], graph.outputTensorMetadata[0]
    norm = next((u.options for u in image.processUnits or ()
                 if u.optionsType == fb.ProcessUnitOptions.NormalizationOptions), None)
    files = [f.name.decode() for f in scores.associatedFiles or ()
             if f.type == fb.AssociatedFileType.TENSOR_AXIS_LABELS]
    labels = []
    if files:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            labels = archive.read(files[0]).decode("utf-8").splitlines()
    spaces = {v: k for k, v in vars(fb.ColorSpaceType).items() if not k.startswith("_")}
    props = image.content.contentProperties if image.content is not None else None

    def text(value):
        return value.decode("utf-8") if isinstance(value, bytes) else value

    result = {
        "name": text(meta.name), "version": text(meta.version), "description": text(meta.description),
        "author": text(meta.author), "license": text(meta.license), "labels": labels,
        "mean": [float(v) for v in norm.mean] if norm is not None else None,
        "std": [float(v) for v in norm.std] if norm is not None else None,
        "color_space": spaces.get(getattr(props, "colorSpace", None)),
        "min_parser_version": text(meta.minParserVersion),
    }
    return {**result, "json": json.dumps(result, indent=2)}


def _metadata_bytes(blob: bytes) -> bytes | None:
    model = _flatbuffer_model(blob)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name().decode() == METADATA_NAME:
            return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    return None


def has_metadata(model: bytes | str | os.PathLike) -> bool:
    """True when the file carries a TFLite metadata buffer (needs no MediaPipe)."""
    return METADATA_NAME in _model_metadata_names(_read(model))


def _read(model: bytes | str | os.PathLike) -> bytes:
    if isinstance(model, bytes | bytearray):
        return bytes(model)
    with open(model, "rb") as f:
        return f.read()


def _model_schema():
    """The TFLite model schema's generated code, as LiteRT ships it (no TensorFlow import)."""
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _flatbuffer_model(blob: bytes):
    if len(blob) < 8 or blob[4:8] != b"TFL3":
        raise ConfigError(f"Not a TFLite model (no TFL3 identifier in its first bytes; {len(blob)} bytes).")
    return _model_schema().Model.GetRootAs(blob, 0)


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


# The metadata schema fields added after 1.0.0, and the parser version that reads them
# (MediaPipe's metadata_version.cc, GetMemberVersion).
_VOCABULARY, _SCANN_INDEX, _FILE_VERSION = (1, 0, 1), (1, 4, 0), (1, 4, 1)
_PROCESS_UNITS, _BERT, _SENTENCE_PIECE, _REGEX = (1, 1, 0), (1, 1, 0), (1, 1, 0), (1, 2, 1)
_TENSOR_GROUPS, _AUDIO, _CUSTOM = (1, 2, 0), (1, 3, 0), (1, 5, 0)


def _parser_version(buffer: bytes) -> str:
    """The lowest metadata parser version that understands every field of a metadata
    flatbuffer (`ModelMetadata`): the newest version among the fields it uses."""
    from tfimgopt.export import _metadata_schema as fb

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
