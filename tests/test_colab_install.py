"""The Colab notebooks' install cell: source check, TPU branch, restart advice.

Here pip is replaced by a recorder (a `pip` package earlier on PYTHONPATH), so the cell's
decisions are checked without changing this environment; `.ci/colab_leg` runs the same cell
for real in a Colab-like Python 3.13 environment.
"""

import configparser
import glob
import json
import os
import subprocess
import sys

import pytest

from tfimgopt._platform import LIBTPU_RANGES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLAB = sorted(glob.glob(os.path.join(ROOT, "colab", "*.ipynb")))


def install_cell(path: str) -> str:
    """The source of the notebook's install cell (the first code cell)."""
    with open(path, encoding="utf-8") as f:
        cells = json.load(f)["cells"]
    return "".join(next(c for c in cells if c["cell_type"] == "code")["source"])


def test_every_colab_notebook_has_the_same_install_cell_with_one_marked_source():
    cells = {path: install_cell(path) for path in COLAB}
    assert len(set(cells.values())) == 1, "the Colab install cells differ"
    cell = next(iter(cells.values()))
    lines = cell.splitlines()
    assert lines[1].startswith("# >>> Where tfimgopt comes from") and lines[2].startswith("TFIMGOPT_SOURCE = ")
    assert "import tensorflow" not in cell and "from tensorflow" not in cell


def test_install_cell_pins_match_the_package_metadata():
    cell = install_cell(COLAB[0])
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    tpu_extra = cfg["options.extras_require"]["tpu"]
    lo, hi = LIBTPU_RANGES["2.20"]
    assert f"libtpu>={lo},<{hi}" in tpu_extra and f'LIBTPU = "libtpu>={lo},<{hi}"' in cell
    assert 'TF_TPU = "2.20.0"' in cell and "tensorflow-tpu>=2.20,<2.21" in tpu_extra
    assert "libtpu-tf-releases/index.html" in cell  # TensorFlow's index, not JAX's


@pytest.fixture
def fake_pip(tmp_path):
    """A `pip` module that records its arguments instead of installing."""
    pkg = tmp_path / "fakepip" / "pip"
    pkg.mkdir(parents=True)
    log = tmp_path / "pip_calls.jsonl"
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(
        "import json, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    return pkg.parent, log


def run_cell(tmp_path, env_extra, fake_pip=None, preamble=""):
    """Runs the install cell in a fresh process; `preamble` stands for what the kernel imported before."""
    env = {k: v for k, v in os.environ.items() if k not in ("TPU_ACCELERATOR_TYPE", "TFIMGOPT_FORCE_COLAB")}
    env.update(env_extra)
    if fake_pip is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(fake_pip), ROOT])
    script = tmp_path / "cell.py"
    script.write_text(preamble + install_cell(COLAB[0]))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180, env=env,
                          cwd=tmp_path)


def calls(log):
    """The pip calls that change something (the doctor's read-only `pip check` left out)."""
    found = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [call for call in found if call[:1] != ["check"]]


@pytest.mark.slow
def test_outside_colab_the_cell_installs_nothing(tmp_path, fake_pip):
    proc = run_cell(tmp_path, {}, fake_pip[0])
    assert proc.returncode == 0, proc.stderr
    assert "Not running in Colab: nothing installed" in proc.stdout
    assert calls(fake_pip[1]) == []


def test_an_unreachable_source_is_said_in_plain_words(tmp_path, fake_pip):
    missing = str(tmp_path / "no-such-checkout")
    proc = run_cell(tmp_path, {"TFIMGOPT_FORCE_COLAB": "1", "TFIMGOPT_SOURCE": missing}, fake_pip[0])
    assert proc.returncode == 1
    assert f"Cannot reach the tfimgopt source {missing!r} (there is no file or folder {missing})" in proc.stderr
    assert "Set TFIMGOPT_SOURCE at the top of this cell" in proc.stderr and "Nothing was installed" in proc.stderr
    assert calls(fake_pip[1]) == []


@pytest.mark.slow
def test_on_a_cpu_runtime_only_tfimgopt_is_installed_and_no_restart_is_asked(tmp_path, fake_pip):
    proc = run_cell(tmp_path, {"TFIMGOPT_FORCE_COLAB": "1", "TFIMGOPT_SOURCE": ROOT}, fake_pip[0])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert calls(fake_pip[1]) == [["install", "-q", f"tfimgopt @ file://{ROOT}"]]
    assert "No TPU on this runtime: skipping TensorFlow's TPU build" in proc.stdout
    assert "Installed or updated: nothing" in proc.stdout and "No restart needed." in proc.stdout
    assert "strategy (auto)" in proc.stdout  # the doctor ran after the install


@pytest.mark.slow
def test_on_a_tpu_runtime_the_cell_follows_googles_two_step_recipe(tmp_path, fake_pip):
    env = {"TFIMGOPT_FORCE_COLAB": "1", "TFIMGOPT_SOURCE": ROOT, "TPU_ACCELERATOR_TYPE": "v5litepod-1"}
    proc = run_cell(tmp_path, env, fake_pip[0])
    assert proc.returncode == 0, proc.stderr[-2000:]
    lo, hi = LIBTPU_RANGES["2.20"]
    assert calls(fake_pip[1]) == [
        ["install", "-q", "tensorflow==2.20.0", "tf-keras~=2.20.0"],
        ["install", "-q", "tensorflow-tpu==2.20.0", f"libtpu>={lo},<{hi}", "-f",
         "https://storage.googleapis.com/libtpu-tf-releases/index.html"],
        ["install", "-q", f"tfimgopt[tpu] @ file://{ROOT}"],
    ]
    assert "TPU devices present: True" in proc.stdout


@pytest.mark.slow
def test_restart_is_asked_only_when_an_already_imported_package_changed(tmp_path, fake_pip):
    folder, _ = fake_pip
    for module in ("kernel_module.py", "fresh_module.py"):  # real files: importlib.metadata skips missing ones
        (folder / module).write_text("")
    installs = {"kernel_package-1.0": "kernel_module.py", "fresh_package-2.0": "fresh_module.py"}
    writes = "".join(
        f"d = {str(folder / (name + '.dist-info'))!r}; os.makedirs(d, exist_ok=True)\n"
        f"open(os.path.join(d, 'METADATA'), 'w').write('Metadata-Version: 2.1\\nName: {name.split('-')[0]}\\n"
        f"Version: {name.split('-')[1]}\\n')\n"
        f"open(os.path.join(d, 'RECORD'), 'w').write({record + ',,' + chr(10)!r})\n"
        for name, record in installs.items()
    )
    (folder / "pip" / "__main__.py").write_text("import os\n" + writes)
    proc = run_cell(tmp_path, {"TFIMGOPT_FORCE_COLAB": "1", "TFIMGOPT_SOURCE": ROOT}, folder,
                    preamble="import kernel_module  # imported by the notebook before this cell\n")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Installed or updated: fresh-package, kernel-package" in proc.stdout
    assert "Restart the runtime once (Runtime > Restart session), then run all: ['kernel_package']" in proc.stdout
