"""What is installed and which known-bad combinations it forms, found without importing TensorFlow.

`compat` asks this module before TensorFlow loads (a too-new libtpu aborts the import,
a TPU build on a host without a TPU makes it wait), and `tfimgopt doctor` prints it.
"""

from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import os
import re
import sys
from dataclasses import dataclass

from tfimgopt.errors import EnvironmentProblem

# The distributions `tfimgopt doctor` reports, in the order it prints them.
REPORTED = (
    "tensorflow",
    "tensorflow-tpu",
    "tf-keras",
    "keras",
    "tensorflow-model-optimization",
    "protobuf",
    "tensorflow-metadata",
    "tensorflow-datasets",
    "libtpu",
    "ai-edge-litert",
    "numpy",
    "mediapipe",  # reads our TFLite metadata (ImageClassifier); not needed to write it
)

# OpenCV's wheels: each installs the same `cv2` package, so with two or more the last one
# installed silently wins (Colab ships three of them).
OPENCV = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")

SUPPORTED_PYTHON = ((3, 11), (3, 13))
SUPPORTED_TF = ("2.20", "2.21")

# tensorflow-tpu minor -> libtpu versions that export every symbol that build loads. Measured
# 2026-11 (import on a host without TPU, Python 3.13): 0.0.14, 0.0.21.1, 0.0.27, 0.0.29-0.0.31
# load and then wait for TPU workers; 0.0.32 and 0.0.38/0.0.41 abort ("TpuExecutable_Free
# MaybeOwningDeviceMemoryArray not available"), 0.0.43.2 ("TpuCompile_CompileAndBuild"),
# 0.0.44+ ("ConfigureDistributedTpuOp_DoWork"). pip alone picks the newest, which aborts.
LIBTPU_RANGES = {"2.20": ("0.0.14", "0.0.32")}
LIBTPU_TF_INDEX = "https://storage.googleapis.com/libtpu-tf-releases/index.html"

# Environment variables through which runtimes announce a TPU.
TPU_ENV_VARS = ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ADDRESS", "KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS")


@dataclass(frozen=True)
class Finding:
    """One known-bad combination: what is wrong, and the command or step that fixes it.

    `fatal` findings stop `import tfimgopt` before TensorFlow loads (it would abort or hang).
    """

    problem: str
    fix: str
    fatal: bool = False

    def __str__(self) -> str:
        return f"{self.problem} Fix: {self.fix}"


def version_tuple(version: str) -> tuple[int, ...]:
    """`"0.0.43.2"` -> `(0, 0, 43, 2)`; pre-release and local suffixes are dropped."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:4])


def minor(version: str | None) -> str | None:
    """`"2.20.1"` -> `"2.20"`."""
    return ".".join(version.split(".")[:2]) if version else None


def installed_versions(names: tuple[str, ...] = REPORTED) -> dict[str, str | None]:
    """Installed version of each distribution (None where absent), read from package metadata."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def tpu_hints(tpu: str | None = None) -> list[str]:
    """Where a TPU might come from, found without touching the network or TensorFlow."""
    hints = [f"tpu={tpu!r}"] if tpu else []
    hints += [f"${name}" for name in TPU_ENV_VARS if os.environ.get(name)]
    if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"):
        hints.append("TPU VM devices (/dev/accel* or /dev/vfio)")
    return hints


def protobuf_gencode_needed() -> str | None:
    """The protobuf version tensorflow-metadata's generated code was made with (TFDS imports it).

    Read from the generated file's header, so it stays right for metadata releases to come.
    """
    spec = importlib.util.find_spec("tensorflow_metadata")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "proto", "v0", "schema_pb2.py")
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(2048)
    except OSError:
        return None
    match = re.search(r"Protobuf Python Version: ([\d.]+)", head)
    return match.group(1) if match else None


def tf_version(versions: dict[str, str | None]) -> str | None:
    """The TensorFlow that `import tensorflow` gets: the TPU build when both are installed."""
    return versions.get("tensorflow-tpu") or versions.get("tensorflow")


def find_problems(
    versions: dict[str, str | None],
    *,
    python: tuple[int, int] | None = None,
    tpu_visible: bool | None = None,
    gencode: str | None = None,
) -> list[Finding]:
    """Every known-bad combination among the given versions (a pure function, for tests).

    Args:
        versions: Installed distributions, as from `installed_versions()`.
        python: (major, minor) of the interpreter; default: this one.
        tpu_visible: Whether this host shows a TPU; default: `bool(tpu_hints())`.
        gencode: The protobuf version tensorflow-metadata needs; default: read it.

    Returns:
        A list of `Finding`s, empty when nothing known is wrong.
    """
    python = python or sys.version_info[:2]
    tpu_visible = bool(tpu_hints()) if tpu_visible is None else tpu_visible
    gencode = protobuf_gencode_needed() if gencode is None else gencode
    found = []
    low, high = SUPPORTED_PYTHON
    if not low <= python <= high:
        found.append(Finding(
            f"Python {python[0]}.{python[1]} is outside the supported {low[0]}.{low[1]}-{high[0]}.{high[1]}.",
            "use Python 3.11, 3.12 or 3.13 (Colab runs 3.13).",
        ))
    tf_ver = tf_version(versions)
    if tf_ver is None:
        found.append(Finding("TensorFlow is not installed.", "pip install 'tensorflow>=2.20,<2.22'", fatal=True))
    elif minor(tf_ver) not in SUPPORTED_TF:
        found.append(Finding(
            f"TensorFlow {tf_ver} is outside the supported {' and '.join(SUPPORTED_TF)}.",
            "pip install 'tensorflow>=2.20,<2.22' (or tensorflow-tpu 2.20 on TPU hosts).",
        ))
    tfk = versions.get("tf-keras")
    if tf_ver and tfk is None:
        found.append(Finding(
            "tf-keras (Keras 2, which TFMOT needs) is not installed.", f"pip install 'tf-keras~={minor(tf_ver)}.0'",
            fatal=True,
        ))
    elif tf_ver and minor(tfk) != minor(tf_ver):
        found.append(Finding(
            f"tf-keras {tfk} does not match TensorFlow {tf_ver}: each tf-keras release is built for one "
            "TensorFlow minor version.",
            f"pip install 'tf-keras~={minor(tf_ver)}.0'",
        ))
    libtpu = versions.get("libtpu")
    tpu_build = versions.get("tensorflow-tpu")
    if tpu_build and libtpu and minor(tpu_build) in LIBTPU_RANGES:
        lo, hi = LIBTPU_RANGES[minor(tpu_build)]
        if not version_tuple(lo) <= version_tuple(libtpu) < version_tuple(hi):
            found.append(Finding(
                f"libtpu {libtpu} does not work with tensorflow-tpu {tpu_build} (it needs libtpu >={lo},<{hi}; "
                "newer libtpu lacks symbols that build loads, and `import tensorflow` aborts).",
                f"pip install 'libtpu>={lo},<{hi}' -f {LIBTPU_TF_INDEX}",
                fatal=tpu_visible,
            ))
    if (tpu_build or libtpu) and not tpu_visible:
        what = f"tensorflow-tpu {tpu_build}" if tpu_build else f"libtpu {libtpu}"
        found.append(Finding(
            f"{what} is installed but this host shows no TPU; loading libtpu here would wait for TPU workers, "
            "so tfimgopt sets TPU_LOAD_LIBRARY=0 and TensorFlow runs on CPU/GPU.",
            f"pip uninstall -y tensorflow-tpu libtpu && pip install --force-reinstall 'tensorflow=={tf_ver}'"
            if tpu_build else "pip uninstall -y libtpu (or run on a TPU host).",
        ))
    protobuf = versions.get("protobuf")
    if gencode and protobuf and version_tuple(protobuf) < version_tuple(gencode):
        found.append(Finding(
            f"protobuf {protobuf} is older than the {gencode} that tensorflow-metadata "
            f"{versions.get('tensorflow-metadata')} was generated with: `import tensorflow_datasets` fails "
            "(gencode/runtime VersionError).",
            # Not a newer protobuf: Colab's Google clients pin protobuf < 6. Metadata 1.17 is
            # generated with 4.25 gencode and runs on protobuf 5 and 6/7.
            "pip install 'tensorflow-metadata<1.18' (generated for older protobuf; leaves protobuf, which other "
            "packages pin, as it is)",
        ))
    opencv = [f"{name} {versions[name]}" for name in OPENCV if versions.get(name)]
    if len(opencv) > 1:
        found.append(Finding(
            f"{len(opencv)} OpenCV distributions are installed ({', '.join(opencv)}): each installs the same cv2 "
            "package, so the one installed last silently overwrote the others' files.",
            "keep one: pip uninstall -y " + " ".join(n.split()[0] for n in opencv[1:])
            + f" && pip install --force-reinstall {opencv[0].replace(' ', '==')}",
        ))
    return found


def keras_backend_problem(environ=None) -> Finding | None:
    """A `KERAS_BACKEND` whose package is not installed: Keras 3, which `tf.keras` and TFMOT
    load, then cannot import at all (fatal: the run could not even start)."""
    environ = os.environ if environ is None else environ
    backend = (environ.get("KERAS_BACKEND") or "").strip().lower()
    if not backend or backend == "tensorflow":
        return None
    module = {"jax": "jax", "torch": "torch", "numpy": "numpy", "openvino": "openvino"}.get(backend)
    if module is not None and importlib.util.find_spec(module) is not None:
        return None
    return Finding(
        f"KERAS_BACKEND={backend} is set, but " + (f"{module} is not installed" if module else "Keras has no such "
                                                    "backend") + ": Keras 3 (which TensorFlow's tf.keras and TFMOT "
        "load) cannot be imported.",
        "unset KERAS_BACKEND (or set KERAS_BACKEND=tensorflow); tfimgopt trains with TensorFlow"
        + (f", or pip install {module}" if module else ""), fatal=True)


def pip_conflicts(names: tuple[str, ...], timeout: float = 120.0) -> list[str]:
    """The lines of `pip check` that involve one of `names` (either side of the conflict)."""
    import subprocess

    try:
        done = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    except (OSError, subprocess.TimeoutExpired):
        return []
    ours = {_canonical(n) for n in names}
    lines = []
    for line in done.stdout.splitlines():
        words = {_canonical(w.strip(",.")) for w in re.split(r"[\s,<>=!~]+", line) if w}
        if words & ours:
            lines.append(line.strip())
    return lines


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# Variables `prepare_environment` set only for TensorFlow's own start-up; `restore_environment`
# takes them back once TensorFlow is imported, so child processes inherit nothing of ours.
_STARTUP_ONLY: list[str] = []


def prepare_environment() -> None:
    """Runs at `import tfimgopt`, before TensorFlow loads; cheap (package metadata only), never raises.

    The process-wide changes are the minimum: nothing about Keras (tfimgopt imports Keras 2
    from `tf_keras` itself, so `tf.keras` keeps meaning what the project chose, Keras 3 by
    default); `TF_CPP_MIN_LOG_LEVEL=2` (if unset) only while TensorFlow starts, taken back
    afterwards; and, only on a host with a TPU build of TensorFlow but no TPU in sight,
    `TPU_LOAD_LIBRARY=0`, which stays (a child process importing TensorFlow there would
    otherwise wait for TPU workers or abort).
    """
    if "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
        _STARTUP_ONLY.append("TF_CPP_MIN_LOG_LEVEL")
    versions = installed_versions(("tensorflow-tpu", "libtpu"))
    if (versions["tensorflow-tpu"] or versions["libtpu"]) and not tpu_hints():
        os.environ.setdefault("TPU_LOAD_LIBRARY", "0")


def restore_environment() -> None:
    """Takes back the start-up-only variables once TensorFlow is imported (`compat` calls it)."""
    while _STARTUP_ONLY:
        os.environ.pop(_STARTUP_ONLY.pop(), None)


def check_before_tensorflow_import() -> list[Finding]:
    """Runs in `compat` just before `import tensorflow` (after `prepare_environment`, which
    `import tfimgopt` ran).

    Returns:
        The non-fatal findings about the TensorFlow stack (compat warns about them once).

    Raises:
        EnvironmentProblem: for a combination with which `import tensorflow` would abort.
    """
    versions = installed_versions(("tensorflow", "tensorflow-tpu", "tf-keras", "libtpu"))
    visible = bool(tpu_hints())
    if os.environ.get("TPU_LOAD_LIBRARY") == "0":
        visible = False  # libtpu will not be loaded, so its version cannot abort the import
    found = find_problems(versions, tpu_visible=visible, gencode="")
    backend = keras_backend_problem()
    if backend is not None:
        found.append(backend)
    fatal = [f for f in found if f.fatal]
    if fatal:
        raise EnvironmentProblem(" ".join(str(f) for f in fatal) + " (`tfimgopt doctor` lists every check.)")
    return found
