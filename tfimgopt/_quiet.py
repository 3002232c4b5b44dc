"""Quiet native output: what TensorFlow's C++ start-up, the TFLite converter and LiteRT write
straight to the process's stderr (file descriptor 2), which Python's logging cannot filter.

Off by default (a library does not hide output it did not write); the command line turns it
on unless `--verbose`. While on, each wrapped block's native output is kept in a temporary
file and shown only when the block raises, so an error's explanation is never lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

_quiet = False


def set_quiet(on: bool) -> None:
    """Hide (True) or show (False) native start-up, converter and LiteRT output from now on."""
    global _quiet
    _quiet = bool(on)


def is_quiet() -> bool:
    return _quiet


@contextlib.contextmanager
def quiet(on: bool = True) -> Iterator[None]:
    """`set_quiet(on)` for the block, then back to what it was."""
    before = _quiet
    set_quiet(on)
    try:
        yield
    finally:
        set_quiet(before)


@contextlib.contextmanager
def native_output() -> Iterator[None]:
    """Within the block, stderr output of native code is held back (when quiet is on); it is
    written out after all if the block raises."""
    if not _quiet:
        yield
        return
    tf_logger = logging.getLogger("tensorflow")  # "INFO:tensorflow:Assets written to: ..." while converting
    level = tf_logger.level
    tf_logger.setLevel(max(level, logging.ERROR))
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tf_logger.setLevel(level)
            if failed:
                held.seek(0)
                sys.stderr.write(held.read().decode("utf-8", "replace"))
                sys.stderr.flush()


def start_tensorflow() -> None:
    """Imports TensorFlow and lets it find its devices, with its start-up noise held back
    (oneDNN and CUDA-driver lines, `failed call to cuInit` on a machine without a GPU)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3" if _quiet else "0")
    with native_output():
        from tfimgopt.compat import tf

        tf.config.list_physical_devices()
