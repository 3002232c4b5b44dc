"""Helpers shared by tests."""

import os
import subprocess
import sys


def run_python(code: str, *, env: dict | None = None, timeout: int = 300, cwd: str | None = None):
    """Runs `code` in a fresh Python process; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
        env=full_env, cwd=cwd,
    )


PYTHON_OPS = ("PyFunc", "EagerPyFunc", "PyFuncStateless")


def dataset_graph_ops(dataset) -> set[str]:
    """Names of every op in a dataset's serialized graph, including its functions."""
    from tfimgopt.compat import tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(dataset._as_serialized_graph().numpy())
    ops = {node.op for node in graph_def.node}
    for fn in graph_def.library.function:
        ops.update(node.op for node in fn.node_def)
    return ops
