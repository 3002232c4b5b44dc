"""Every notebook runs top to bottom on the CPU in its smoke size (TFIMGOPT_SMOKE=1)."""

import glob
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(
    glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")) + glob.glob(os.path.join(ROOT, "colab", "*.ipynb"))
)


def test_notebooks_exist_and_are_stored_without_outputs():
    import nbformat

    names = {os.path.relpath(p, ROOT) for p in NOTEBOOKS}
    assert len([n for n in names if n.startswith("notebooks")]) >= 6
    assert len([n for n in names if n.startswith("colab")]) >= 1
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path} has stored outputs"
    readme = open(os.path.join(ROOT, "README.md")).read()
    for name in names:
        assert name in readme, f"README does not link {name}"
    for path in glob.glob(os.path.join(ROOT, "colab", "*.ipynb")):
        assert "colab.research.google.com/assets/colab-badge.svg" in open(path).read()


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: os.path.relpath(p, ROOT))
def test_notebook_runs(path, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    env_before = os.environ.get("TFIMGOPT_SMOKE")
    os.environ["TFIMGOPT_SMOKE"] = "1"  # the kernel inherits it
    try:
        client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
        client.execute()
    finally:
        if env_before is None:
            os.environ.pop("TFIMGOPT_SMOKE", None)
        else:
            os.environ["TFIMGOPT_SMOKE"] = env_before
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
