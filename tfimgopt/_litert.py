"""The LiteRT interpreter without TensorFlow: run a `.tflite` file in this process, or in a
child process when the file is untrusted (a corrupt flatbuffer can crash LiteRT itself).

`python -m tfimgopt._litert MODEL INPUTS.npy OUTPUTS.npy` is the child.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from tfimgopt._quiet import native_output
from tfimgopt.errors import DataError, received


def _interpreter(model: bytes | str, num_threads: int = 1):
    from ai_edge_litert.interpreter import Interpreter

    if not isinstance(model, bytes | bytearray) and not os.path.isfile(model):
        raise DataError(f"TFLite file not found. {received('path', model)}")
    with native_output():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
        if isinstance(model, bytes | bytearray):
            interpreter = Interpreter(model_content=bytes(model), num_threads=num_threads)
        else:
            interpreter = Interpreter(model_path=model, num_threads=num_threads)
        interpreter.allocate_tensors()
    return interpreter


class TFLiteRunner:
    """Runs a TFLite model in the LiteRT interpreter on float images, one at a time.

    Quantizes inputs and dequantizes outputs for integer-I/O models, so callers always
    pass images in the model's input range and get float logits back.
    """

    def __init__(self, model: bytes | str, num_threads: int = 1):
        try:
            self.interpreter = _interpreter(model, num_threads)
        except (ValueError, RuntimeError) as err:
            raise DataError(f"Not a valid TFLite model: {err}") from None
        try:  # XNNPACK prepares its nodes on the first invoke: a layout it refuses fails here, not later
            with native_output():
                self.interpreter.invoke()
        except RuntimeError as err:
            raise DataError(f"LiteRT cannot run this model: {' '.join(str(err).split())}") from None
        self.num_threads = num_threads
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self.input["dtype"])

    def _quantize(self, images: np.ndarray) -> np.ndarray:
        dtype = self.input_dtype
        if dtype == np.float32:
            return images.astype(np.float32)
        scale, zero = self.input["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(images / scale + zero), info.min, info.max).astype(dtype)

    def invoke(self, image: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input["index"], self._quantize(image[None]))
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self.output["index"])[0]
        if out.dtype != np.float32:
            scale, zero = self.output["quantization"]
            out = (out.astype(np.float32) - zero) * scale
        return out

    def predict(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        want = tuple(int(d) for d in self.input["shape"][1:])
        if images.ndim != len(want) + 1 or tuple(images.shape[1:]) != want:
            raise DataError(f"The model takes images of shape {want}; these are {tuple(images.shape[1:])}. Use the "
                            f"image size and channels it was exported for. Received: images.shape={images.shape}")
        return np.stack([self.invoke(image) for image in images])




def run_isolated(path: str, images: np.ndarray, timeout: float = 300.0) -> np.ndarray:
    """`TFLiteRunner(path).predict(images)` in a child process, for files that may be corrupt.

    Raises:
        DataError: when the file does not load, or crashes or hangs the interpreter (the
            child's signal or exit status is named), instead of taking this process down.
    """
    return predict_in_child("tfimgopt._litert", [os.fspath(path)], [], images, path, timeout=timeout,
                            failed="LiteRT failed on the file", late="LiteRT did not finish running the file")


def predict_in_child(module: str, before: list[str], after: list[str], images: np.ndarray, path: str, *,
                     timeout: float, failed: str, late: str, env: dict | None = None) -> np.ndarray:
    """Runs `python -m MODULE *before INPUTS.npy OUTPUTS.npy *after` on `images` and returns
    what the child saved; a crash, a hang or a non-zero exit becomes a `DataError` that says
    `failed` (with the signal or exit status and the child's last line) or `late`."""
    import signal
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tfimgopt-child-") as tmp:
        inputs, outputs = os.path.join(tmp, "in.npy"), os.path.join(tmp, "out.npy")
        np.save(inputs, np.asarray(images, np.float32))
        try:
            child = subprocess.run([sys.executable, "-m", module, *before, inputs, outputs, *after],
                                   capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise DataError(f"{late} within {timeout:.0f} s. {received('path', path)}") from None
        if child.returncode != 0:
            status = (f"killed by {signal.Signals(-child.returncode).name}" if child.returncode < 0
                      else f"exit status {child.returncode}")
            last = (child.stderr.strip().splitlines() or [""])[-1]
            raise DataError(f"{failed} ({status}{': ' + last if last else ''}). {received('path', path)}")
        return np.load(outputs)


if __name__ == "__main__":
    model_path, inputs_path, outputs_path = sys.argv[1:4]
    try:
        result = TFLiteRunner(model_path).predict(np.load(inputs_path))
    except DataError as err:
        print(err, file=sys.stderr)
        sys.exit(3)
    np.save(outputs_path, result)
