"""Export by registered exporter (TFLite modes, SavedModel, the Keras file), each artifact
verified against the Keras model and measured (LiteRT for TFLite)."""

from tfimgopt.export.artifact import Artifact, artifact_sizes, check_outputs
from tfimgopt.export.exporters import (
    Exporter,
    exporter_for_mode,
    get_exporter,
    list_exporters,
    open_artifact,
    register_exporter,
)
from tfimgopt.export.keras_file import KerasArtifact, KerasExporter
from tfimgopt.export.layers import layer_precisions
from tfimgopt.export.litert_recipes import LiteRTArtifact, LiteRTExporter
from tfimgopt.export.metadata import ModelMetadata, add_metadata, has_metadata, read_metadata
from tfimgopt.export.mixed_precision import MixedPrecisionExporter
from tfimgopt.export.savedmodel import SavedModelArtifact, SavedModelExporter
from tfimgopt.export.tflite import (
    FLOAT_TOLERANCE,
    INT8_MIN_AGREEMENT,
    IO_TYPES,
    MIN_AGREEMENT,
    MODES,
    TFLiteArtifact,
    TFLiteExporter,
    TFLiteRunner,
    compare,
    detect_mode,
    evaluate_tflite,
    export_tflite,
    file_sizes,
    is_sparse,
    kernel_zeros,
    op_names,
    tensor_dtypes,
    verify_tflite,
)

__all__ = [
    "Artifact",
    "Exporter",
    "KerasArtifact",
    "KerasExporter",
    "LiteRTArtifact",
    "LiteRTExporter",
    "MixedPrecisionExporter",
    "layer_precisions",
    "SavedModelArtifact",
    "SavedModelExporter",
    "TFLiteArtifact",
    "TFLiteExporter",
    "artifact_sizes",
    "check_outputs",
    "open_artifact",
    "exporter_for_mode",
    "get_exporter",
    "list_exporters",
    "register_exporter",
    "ModelMetadata",
    "add_metadata",
    "has_metadata",
    "read_metadata",
    "FLOAT_TOLERANCE",
    "INT8_MIN_AGREEMENT",
    "MIN_AGREEMENT",
    "IO_TYPES",
    "MODES",
    "TFLiteRunner",
    "compare",
    "detect_mode",
    "evaluate_tflite",
    "export_tflite",
    "file_sizes",
    "is_sparse",
    "kernel_zeros",
    "op_names",
    "tensor_dtypes",
    "verify_tflite",
]
