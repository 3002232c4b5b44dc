"""TFLite export and measurement in the LiteRT interpreter."""

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
