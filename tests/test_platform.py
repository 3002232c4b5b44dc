"""Known-bad installs are found before TensorFlow loads; a TPU build on a host without a TPU never hangs."""

import os
import subprocess
import sys
import time

import pytest

from tests.helpers import run_python
from tfimgopt._platform import LIBTPU_RANGES, find_problems, version_tuple

GOOD = {
    "tensorflow": "2.20.0", "tensorflow-tpu": None, "tf-keras": "2.20.1", "libtpu": None,
    "protobuf": "6.33.0", "tensorflow-metadata": "1.21.0",
}


def problems(**changes):
    versions = {**GOOD, **{k.replace("_", "-"): v for k, v in changes.items() if k not in ("tpu", "gencode")}}
    return find_problems(versions, python=(3, 13), tpu_visible=changes.get("tpu", False),
                         gencode=changes.get("gencode", "6.31.1"))


def test_a_good_colab_like_stack_has_no_findings():
    assert problems() == []
    assert problems(tensorflow="2.21.0", tf_keras="2.21.0") == []


def test_libtpu_too_new_is_fatal_only_where_a_tpu_would_load_it():
    lo, hi = LIBTPU_RANGES["2.20"]
    on_tpu = problems(tensorflow_tpu="2.20.0", libtpu="0.0.52", tpu=True)
    assert [f.fatal for f in on_tpu] == [True]
    assert "libtpu 0.0.52 does not work with tensorflow-tpu 2.20.0" in on_tpu[0].problem
    assert f"libtpu>={lo},<{hi}" in on_tpu[0].fix and "libtpu-tf-releases" in on_tpu[0].fix
    ok_version = ".".join(map(str, version_tuple(hi)[:2] + (version_tuple(hi)[2] - 1,)))
    assert problems(tensorflow_tpu="2.20.0", libtpu=ok_version, tpu=True) == []
    off_tpu = problems(tensorflow_tpu="2.20.0", libtpu="0.0.52", tpu=False)
    assert not any(f.fatal for f in off_tpu)
    assert any("shows no TPU" in f.problem and "TPU_LOAD_LIBRARY=0" in f.problem for f in off_tpu)
    assert any("pip uninstall -y tensorflow-tpu libtpu" in f.fix for f in off_tpu)


def test_protobuf_older_than_tfds_metadata_gencode_is_named_with_the_fix():
    (finding,) = problems(protobuf="5.29.6", gencode="6.31.1")
    assert "protobuf 5.29.6 is older than the 6.31.1" in finding.problem
    assert "tensorflow_datasets" in finding.problem and "pip install 'tensorflow-metadata<1.18'" in finding.fix
    assert "protobuf>=" not in finding.fix  # Colab's Google clients pin protobuf < 6: never upgrade it


def test_several_opencv_distributions_are_named():
    (finding,) = problems(opencv_python="5.0.0.93", opencv_python_headless="5.0.0.93",
                          opencv_contrib_python="4.14.0.94")
    assert "3 OpenCV distributions are installed (opencv-python 5.0.0.93, opencv-python-headless 5.0.0.93, " \
           "opencv-contrib-python 4.14.0.94)" in finding.problem
    assert finding.fix.startswith("keep one: pip uninstall -y opencv-python-headless opencv-contrib-python")
    assert problems(opencv_python_headless="4.10.0.84") == []


def test_pip_check_conflicts_involving_our_dependencies_are_picked(monkeypatch):
    import subprocess

    from tfimgopt import _platform

    out = ("grpcio-status 1.71.2 has requirement protobuf<6.0dev,>=5.26.1, but you have protobuf 7.36.2.\n"
           "somepkg 1.0 requires otherpkg, which is not installed.\n")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 1, stdout=out, stderr=""))
    assert _platform.pip_conflicts(("protobuf", "tensorflow")) == [out.splitlines()[0]]


def test_mismatched_tf_keras_python_and_keras3_env_are_named():
    assert "tf-keras 2.21.0 does not match TensorFlow 2.20.0" in problems(tf_keras="2.21.0")[0].problem
    versions = dict(GOOD)
    found = find_problems(versions, python=(3, 10), tpu_visible=False, gencode="")
    text = " ".join(map(str, found))
    assert "Python 3.10 is outside the supported 3.11-3.13" in text
    assert "TF_USE_LEGACY_KERAS" not in text  # Keras 3 in tf.keras is fine: Keras 2 comes from tf_keras
    assert "TensorFlow is not installed" in str(find_problems({}, python=(3, 12), tpu_visible=False, gencode=""))


def fake_distributions(tmp_path, **dists):
    """A folder whose *.dist-info entries make importlib.metadata see these versions."""
    for name, version in dists.items():
        info = tmp_path / f"{name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n")
    return {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}


NO_TPU = {name: "" for name in ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ADDRESS", "KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS",
                                 "TPU_LOAD_LIBRARY")}


@pytest.mark.slow
def test_tpu_build_on_a_host_without_tpu_answers_within_seconds(tmp_path):
    env = {**NO_TPU, **fake_distributions(tmp_path, tensorflow_tpu="2.20.0", libtpu="0.0.52")}
    env.pop("TPU_LOAD_LIBRARY")
    start = time.monotonic()
    proc = run_python(
        "import os, warnings\n"
        "os.environ.pop('TPU_LOAD_LIBRARY', None)\n"
        "import tfimgopt\n"
        "assert os.environ['TPU_LOAD_LIBRARY'] == '0'\n"
        "from tfimgopt.distribute import create_strategy\n"
        "s = create_strategy('auto')\n"
        "print('STRATEGY', type(s).__name__)\n",
        env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert time.monotonic() - start < 60
    assert "tensorflow-tpu 2.20.0 is installed but this host shows no TPU" in proc.stderr
    assert "libtpu was not loaded (TPU_LOAD_LIBRARY=0)" in proc.stdout
    assert "STRATEGY _DefaultDistributionStrategy" in proc.stdout


def test_libtpu_too_new_on_a_tpu_host_stops_before_tensorflow_aborts(tmp_path):
    env = {**NO_TPU, "TPU_NAME": "grpc://10.0.0.2:8470",
           **fake_distributions(tmp_path, tensorflow_tpu="2.20.0", libtpu="0.0.52")}
    proc = run_python(
        "import sys, tfimgopt\n"
        "assert 'tensorflow' not in sys.modules  # import tfimgopt stays cheap\n"
        "from tfimgopt.compat import tf\n",
        env=env, timeout=60,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]  # a Python error, not SIGABRT from inside TensorFlow
    assert "EnvironmentProblem: libtpu 0.0.52 does not work with tensorflow-tpu 2.20.0" in proc.stderr
    assert "Fix: pip install 'libtpu>=" in proc.stderr


@pytest.mark.slow
def test_doctor_reports_versions_devices_strategy_and_precision():
    proc = subprocess.run([sys.executable, "-m", "tfimgopt", "doctor"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **NO_TPU})
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    out = proc.stdout
    for row in ("python", "tensorflow", "tf-keras", "keras", "tensorflow-model-optimization", "protobuf", "libtpu"):
        assert any(line.split()[0] == row for line in out.splitlines() if line.strip()), row
    assert "CPU:0" in out and "_DefaultDistributionStrategy on CPU, 1 replica(s)" in out
    assert "precision (auto)" in out and "float32" in out and "no known problems" in out


def test_doctor_names_a_fatal_install_without_importing_tensorflow(tmp_path):
    env = {**os.environ, **NO_TPU, "TPU_NAME": "local",
           **fake_distributions(tmp_path, tensorflow_tpu="2.20.0", libtpu="0.0.52")}
    proc = subprocess.run([sys.executable, "-m", "tfimgopt", "doctor"], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 1
    assert "libtpu 0.0.52 does not work with tensorflow-tpu 2.20.0" in proc.stdout
    assert "TensorFlow was not imported" in proc.stdout
    assert "devices" in proc.stdout and "(TensorFlow not imported)" in proc.stdout


@pytest.mark.slow
def test_doctor_in_a_process_where_keras3_was_bound_first_is_fine():
    proc = run_python(
        "import os\n"
        "import tensorflow as tf\n"
        "tf.keras.layers.Dense  # binds tf.keras to Keras 3\n"
        "from tfimgopt.doctor import doctor\n"
        "raise SystemExit(doctor())\n",
        env={**NO_TPU, "TF_USE_LEGACY_KERAS": None},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "KerasVersionError" not in proc.stdout
