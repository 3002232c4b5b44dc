"""What an export is once written: an `Artifact` (a file or a folder) that runs, verifies,
measures and hashes itself, whatever its format.

The run, `tfimgopt verify`, `tfimgopt evaluate` and the report only talk to artifacts, so
a new format (SavedModel, `.keras`, ONNX) is an `Exporter` that returns one.
"""

from __future__ import annotations

import abc
import gzip
import io
import os
import statistics
import tarfile
import time
from typing import Any, Protocol

import numpy as np

from tfimgopt import _io
from tfimgopt._arrays import images_labels
from tfimgopt.errors import DataError, received

# An input whose two largest reference logits differ by less than this fraction of
# max(1, largest |logit|) is a near-tie: which of the two wins is float noise, so it does not
# count for or against top-1 agreement (an untrained or collapsed model is all near-ties).
TIE_MARGIN = 0.01


class Runner(Protocol):
    """A loaded artifact: `predict` a batch of float images to float logits, `invoke` one image."""

    def predict(self, images: np.ndarray) -> np.ndarray: ...

    def invoke(self, image: np.ndarray) -> np.ndarray: ...


def top1_agreement(got: np.ndarray, want: np.ndarray) -> tuple[float, int]:
    """Share of inputs where `got` and `want` (logits, one row per input) pick the same class,
    over the inputs that are not near-ties in `want` (see `TIE_MARGIN`); and how many were."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if want.ndim != 2 or want.shape[1] < 2:
        return 1.0, 0
    top_two = np.sort(want, axis=1)[:, -2:]
    decided = top_two[:, 1] - top_two[:, 0] >= TIE_MARGIN * max(1.0, float(np.abs(want).max()))
    if not decided.any():
        return 1.0, int(len(want))
    same = got.argmax(1) == want.argmax(1)
    return float(same[decided].mean()), int((~decided).sum())


def check_outputs(got: np.ndarray, want: np.ndarray, *, tolerance: float | None, min_agreement: float,
                  mode: str) -> dict[str, Any]:
    """The verification verdict of outputs `got` against reference logits `want`.

    With a `tolerance`, the max abs difference divided by max(1, largest |logit|) must stay
    within it; the top-1 agreement (near-ties left out) must reach `min_agreement`. With
    `tolerance=None` (integer outputs, whose logits are quantized) agreement is the only test.
    """
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    if got.shape != want.shape:
        return {"mode": mode, "passed": False, "num_samples": int(len(want)),
                "error": f"outputs of shape {got.shape}, the Keras model gives {want.shape}",
                "criterion": "outputs of the Keras model's shape"}
    diff = float(np.abs(got - want).max()) if got.size else 0.0
    relative = diff / max(1.0, float(np.abs(want).max()) if want.size else 1.0)
    agreement, near_ties = top1_agreement(got, want)
    passed = agreement >= min_agreement and (tolerance is None or relative <= tolerance)
    parts = ([f"max abs diff / max(1, max |logit|) <= {tolerance}"] if tolerance is not None else [])
    parts += [f"top-1 agreement >= {min_agreement}"] if min_agreement or tolerance is None else []
    return {"mode": mode, "max_abs_diff": diff, "relative_diff": relative, "top1_agreement": agreement,
            "near_ties": near_ties, "num_samples": int(len(want)), "passed": bool(passed),
            "criterion": " and ".join(parts)}


class Artifact(abc.ABC):
    """A written export (a file or a folder) of one exporter.

    Subclasses implement `runner`; everything else (verify against the Keras model, measure
    accuracy, size and latency, hash) works from it.

    Attributes:
        path: The file or folder.
        mode: The exporter's name.
        untrusted_parser: True when a corrupt artifact could crash the process that loads it
            (LiteRT's flatbuffer reader, TensorFlow's protobuf reader): `predict_isolated`
            then runs it in a child process.
        tolerance: Verification bound on the relative logit difference (None: compare top-1
            decisions only, for quantized outputs).
        min_agreement: Verification's minimum top-1 agreement with the Keras model.
    """

    untrusted_parser: bool = True
    tolerance: float | None = 1e-4
    min_agreement: float = 0.0

    def __init__(self, path: str | os.PathLike, mode: str):
        self.path = os.fspath(path)
        self.mode = mode

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, mode={self.mode!r})"

    @abc.abstractmethod
    def runner(self, num_threads: int = 1) -> Runner:
        """Loads the artifact for inference (`num_threads` where the runtime takes it)."""

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Float logits of a batch of float images, in this process."""
        return self.runner().predict(np.asarray(images, np.float32))

    def predict_isolated(self, images: np.ndarray, plugins: tuple[str, ...] = ()) -> np.ndarray:
        """`predict` in a child process when the format's parser is untrusted.

        Raises:
            DataError: when the artifact does not load, or crashes or hangs the child.
        """
        if not self.untrusted_parser:
            return self.predict(images)
        from tfimgopt.export._child import run_in_child

        return run_in_child(self, images, plugins)

    def verify(self, model: Any, images: Any, *, num_samples: int = 64) -> dict[str, Any]:
        """Compares the artifact with the Keras `model` it came from, on `images`.

        Returns:
            `{"mode", "max_abs_diff", "relative_diff", "top1_agreement", "near_ties",
            "num_samples", "passed", "criterion"}`.
        """
        x, _ = images_labels(images, num_samples)
        x = x.astype(np.float32)
        got = self.predict(x)
        want = model.predict(x, verbose=0)
        return check_outputs(got, want, tolerance=self.tolerance, min_agreement=self.min_agreement,
                             mode=self.mode)

    def layer_errors(self, model: Any, images: np.ndarray, reference: bytes | None = None
                     ) -> list[dict[str, Any]] | None:
        """Per-layer error against the float model (the quantization debugger), or None for
        a format that does not quantize. See `tfimgopt.export.debugger.layer_errors`."""
        return None

    def measure(self, dataset: Any, *, num_threads: int = 1, latency_runs: int = 100, warmup: int = 10
                ) -> dict[str, Any]:
        """Accuracy on labelled `(images, labels)` batches, single-image latency, and size.

        Returns:
            `{"accuracy", "num_examples", "latency_ms_median", "latency_ms_p90",
            "num_threads", "size_bytes", "gzip_bytes"}`.
        """
        images, labels = images_labels(dataset)
        if labels is None:
            raise DataError("Measuring accuracy needs a labelled dataset of (images, labels).")
        if len(images) == 0:
            raise DataError("Measuring accuracy needs test images. Received: 0 examples")
        images = images.astype(np.float32)
        runner = self.runner(num_threads)
        predictions = runner.predict(images).argmax(1)
        for i in range(warmup):
            runner.invoke(images[i % len(images)])
        times = []
        for i in range(latency_runs):
            image = images[i % len(images)]
            start = time.perf_counter()
            runner.invoke(image)
            times.append((time.perf_counter() - start) * 1000.0)
        return {"accuracy": float((predictions == labels).mean()), "num_examples": int(len(images)),
                "latency_ms_median": statistics.median(times) if times else float("nan"),
                "latency_ms_p90": float(np.percentile(times, 90)) if times else float("nan"),
                "num_threads": num_threads, **self.sizes()}

    def files(self) -> list[str]:
        """Every file of the artifact (itself, for a one-file artifact), in a fixed order."""
        if not os.path.isdir(self.path):
            return [self.path]
        found = []
        for folder, dirs, names in os.walk(self.path):
            dirs.sort()
            found += [os.path.join(folder, n) for n in sorted(names)]
        return found

    def sizes(self) -> dict[str, int]:
        """`size_bytes` (all its files) and `gzip_bytes` (what a download costs: the file
        gzipped, or a folder as a gzipped tar with fixed timestamps)."""
        return artifact_sizes(self.path)

    def sha256(self) -> str:
        """SHA-256 of the file, or of the folder's relative paths and file contents."""
        return _io.sha256_tree(self.path)


def artifact_sizes(path: str | bytes) -> dict[str, int]:
    """Size in bytes of a model file (or its bytes) or folder, raw and gzip-compressed."""
    if isinstance(path, bytes | bytearray):
        return {"size_bytes": len(path), "gzip_bytes": len(gzip.compress(bytes(path), compresslevel=9, mtime=0))}
    if not os.path.exists(path):
        raise DataError(f"Artifact not found. {received('path', path)}")
    if not os.path.isdir(path):
        with open(path, "rb") as f:
            return artifact_sizes(f.read())
    buffer = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for folder, dirs, names in os.walk(path):
            dirs.sort()
            for name in sorted(names):
                full = os.path.join(folder, name)
                info = tar.gettarinfo(full, arcname=os.path.relpath(full, path))
                info.mtime = info.uid = info.gid = 0
                info.uname = info.gname = ""
                total += info.size
                with open(full, "rb") as f:
                    tar.addfile(info, f)
    return {"size_bytes": total, "gzip_bytes": len(gzip.compress(buffer.getvalue(), compresslevel=9, mtime=0))}
