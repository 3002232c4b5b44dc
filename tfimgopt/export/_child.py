"""Runs an artifact in a child process, so a corrupt one cannot take the caller down.

`python -m tfimgopt.export._child MODULE:CLASS PATH MODE INPUTS.npy OUTPUTS.npy [PLUGIN...]` is the child.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import tempfile

import numpy as np

from tfimgopt.errors import DataError, received


def run_in_child(artifact, images: np.ndarray, plugins: tuple[str, ...] = (), timeout: float = 300.0) -> np.ndarray:
    """`artifact.predict(images)` in a child process (which loads `plugins` first).

    Raises:
        DataError: when the artifact does not load there, or crashes or hangs the child
            (the signal or exit status is named).
    """
    cls = type(artifact)
    where = f"{cls.__module__}:{cls.__qualname__}"
    with tempfile.TemporaryDirectory(prefix="tfimgopt-child-") as tmp:
        inputs, outputs = os.path.join(tmp, "in.npy"), os.path.join(tmp, "out.npy")
        np.save(inputs, np.asarray(images, np.float32))
        command = [sys.executable, "-m", "tfimgopt.export._child", where, artifact.path, artifact.mode, inputs,
                   outputs, *plugins]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
        try:
            child = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise DataError(f"The {artifact.mode} artifact did not finish running within {timeout:.0f} s. "
                            f"{received('path', artifact.path)}") from None
        if child.returncode != 0:
            status = (f"killed by {signal.Signals(-child.returncode).name}" if child.returncode < 0
                      else f"exit status {child.returncode}")
            last = (child.stderr.strip().splitlines() or [""])[-1]
            raise DataError(f"The {artifact.mode} artifact failed to run ({status}{': ' + last if last else ''}). "
                            f"{received('path', artifact.path)}")
        return np.load(outputs)


def _main(argv: list[str]) -> int:
    where, path, mode, inputs, outputs, *plugins = argv
    from tfimgopt._plugins import load_plugin

    try:
        for plugin in plugins:
            load_plugin(plugin)
        module, _, name = where.partition(":")
        cls = importlib.import_module(module)
        for part in name.split("."):
            cls = getattr(cls, part)
        result = cls(path, mode).predict(np.load(inputs))
    except Exception as err:  # noqa: BLE001  (the parent reports the child's last line)
        print(f"{type(err).__name__}: {' '.join(str(err).split())[:500]}", file=sys.stderr)
        return 3
    np.save(outputs, np.asarray(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
