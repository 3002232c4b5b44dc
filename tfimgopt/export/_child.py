"""Runs an artifact in a child process, so a corrupt one cannot take the caller down.

`python -m tfimgopt.export._child MODULE:CLASS PATH MODE INPUTS.npy OUTPUTS.npy [PLUGIN...]` is the child.
"""

from __future__ import annotations

import importlib
import os
import sys

import numpy as np


def run_in_child(artifact, images: np.ndarray, plugins: tuple[str, ...] = (), timeout: float = 300.0) -> np.ndarray:
    """`artifact.predict(images)` in a child process (which loads `plugins` first).

    Raises:
        DataError: when the artifact does not load there, or crashes or hangs the child
            (the signal or exit status is named).
    """
    from tfimgopt._litert import predict_in_child

    cls = type(artifact)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
    return predict_in_child("tfimgopt.export._child", [f"{cls.__module__}:{cls.__qualname__}", artifact.path,
                                                       artifact.mode], list(plugins), images, artifact.path,
                            timeout=timeout, env=env, failed=f"The {artifact.mode} artifact failed to run",
                            late=f"The {artifact.mode} artifact did not finish running")


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
