"""Export (TFLite, by registered exporter) and measurement in the LiteRT interpreter."""

from tfimgopt.export.exporters import Exporter, TFLiteExporter, get_exporter, list_exporters, register_exporter
from tfimgopt.export.tflite import (
    FLOAT_TOLERANCE,
    INT8_MIN_AGREEMENT,
    IO_TYPES,
    MIN_AGREEMENT,
    MODES,
    TFLiteRunner,
    compare,
    detect_mode,
    evaluate_tflite,
    export_tflite,
    file_sizes,
    op_names,
    tensor_dtypes,
    verify_tflite,
)

__all__ = [
    "Exporter",
    "TFLiteExporter",
    "get_exporter",
    "list_exporters",
    "register_exporter",
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
    "op_names",
    "tensor_dtypes",
    "verify_tflite",
]
