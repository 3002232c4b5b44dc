"""Atomic writes (an artifact is either absent or complete, never half-written) and run-folder ownership."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any


def _storage_error(path: str, err: OSError):
    from tfimgopt.errors import StorageError

    reason = os.strerror(err.errno) if err.errno else str(err)
    return StorageError(err.errno or 0, f"Cannot write {path}: {reason}. Free some space or choose a writable "
                                        f"folder; nothing already written was changed. Received: path={path!r}")


# The temporary name is `.{stem}.tmp-` + 8 random characters + the extension.
_TMP_EXTRA = len(".") + len(".tmp-") + 8


def check_writable(path: str | os.PathLike) -> str:
    """Makes `path`'s folder and checks a file can be written there under `path`'s name (and
    its temporary name) before any work is done; returns the folder.

    Raises:
        StorageError: a folder that cannot be made or written to.
        ConfigError: a name too long for the file system once the temporary suffix is added.
    """
    from tfimgopt.errors import ConfigError, received

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise _storage_error(path, err) from None
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    name = len(os.fsencode(os.path.basename(path)))
    if name + _TMP_EXTRA > limit:
        raise ConfigError(f"The file name is {name} bytes; this file system takes {limit}, and writing it safely "
                          f"needs {_TMP_EXTRA} more for a temporary name. Choose a shorter name. "
                          f"{received('path', path)}")
    if not os.access(folder, os.W_OK):
        raise _storage_error(path, PermissionError(13, "Permission denied"))
    return folder


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary path beside `path`; moves it into place only on success.

    The temporary name keeps the file's extension, since Keras and TFLite pick the
    format from it. A crash leaves at most a stray `.tmp-*` file, never a torn artifact.
    """
    path = os.fspath(path)
    folder = check_writable(path)
    stem, ext = os.path.splitext(os.path.basename(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}.tmp-", suffix=ext, dir=folder)
    except OSError as err:
        raise _storage_error(path, err) from None
    os.close(fd)
    os.remove(tmp)  # writers such as Keras refuse to overwrite or want to create it
    try:
        try:
            yield tmp
        except OSError as err:  # disk full or a folder gone read-only mid-write
            raise _storage_error(path, err) from None
        if os.path.isdir(tmp):
            if os.path.isdir(path):
                shutil.rmtree(path)
        else:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        try:
            os.replace(tmp, path)
        except OSError as err:
            raise _storage_error(path, err) from None
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_tree(path: str | os.PathLike) -> str:
    """SHA-256 of a file, or of a folder's files (their relative paths and contents, in order)."""
    import hashlib

    if not os.path.isdir(path):
        return sha256_file(path)
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(folder, name)
            digest.update(f"{os.path.relpath(full, path)}\0{sha256_file(full)}\n".encode())
    return digest.hexdigest()


def tree_bytes(path: str | os.PathLike) -> int:
    """Size of a file, or the total size of a folder's files."""
    if not os.path.isdir(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(folder, n)) for folder, _, names in os.walk(path) for n in names)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes `text` (UTF-8) to `path` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Writes `obj` as indented JSON to `path` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_with(path: str | os.PathLike, writer: Callable[[str], None]) -> None:
    """Calls `writer(tmp_path)` and moves the result to `path` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def safe_join(root: str | os.PathLike, name: str) -> str:
    """`root/name`, refusing names that would escape `root` (absolute paths, `..`).

    Names of artifacts can come from configs or class names; a write must never land
    outside the run folder.

    Raises:
        ConfigError: naming the offending name.
    """
    from tfimgopt.errors import ConfigError, received

    if not isinstance(name, str) or not name or os.path.isabs(name) or "\x00" in name:
        raise ConfigError(f"An artifact name must be a relative path inside the run folder. {received('name', name)}")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise ConfigError(f"An artifact name may not contain '..'. {received('name', name)}")
    root_real = os.path.realpath(root)
    joined = os.path.realpath(os.path.join(root_real, name))
    if os.path.commonpath([root_real, joined]) != root_real:
        raise ConfigError(f"An artifact name must stay inside the run folder. {received('name', name)}")
    return os.path.join(os.fspath(root), name)


# The folders a run writes into; only these (and the run folder's own top level) are swept.
RUN_SUBFOLDERS = ("models", "tflite", "exports", "plots", "stages", "work")
RUN_MARKER = ".tfimgopt-run"
_LOCK = ".tfimgopt.lock"


def remove_stale_temporaries(root: str | os.PathLike) -> int:
    """Deletes `.name.tmp-*` leftovers of writes killed mid-way (e.g. SIGKILL); returns the count.

    Only the run folder's top level and its own subfolders are looked at, never a user's files elsewhere.
    """
    removed = 0
    places = [(str(root), False)] + [(os.path.join(root, sub), True) for sub in RUN_SUBFOLDERS]
    for top, recursive in places:
        if not os.path.isdir(top) or os.path.islink(top):
            continue
        walk = os.walk(top) if recursive else [(top, [], os.listdir(top))]
        for folder, dirs, files in walk:
            for name in [*files, *dirs]:
                if name.startswith(".") and ".tmp-" in name:
                    path = os.path.join(folder, name)
                    shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
                    removed += 1
    return removed


def refuse_links(root: str | os.PathLike) -> None:
    """Refuses a run folder that is, or holds, a symbolic link anywhere in the places a run
    reads or writes: a resumed run folder is untrusted input, and nothing may be read or
    written through a link that could lead out of it.

    Raises:
        ConfigError: naming the link and where it points.
    """
    from tfimgopt.errors import ConfigError, received

    root = os.fspath(root)
    found: list[str] = []  # the folder itself may be a link the user chose; what is inside may not
    if os.path.isdir(root):
        for name in os.listdir(root):
            path = os.path.join(root, name)
            if os.path.islink(path):
                found.append(path)
            elif name in RUN_SUBFOLDERS and os.path.isdir(path):
                for folder, dirs, files in os.walk(path):  # os.walk does not follow links
                    found += [p for p in (os.path.join(folder, n) for n in [*dirs, *files]) if os.path.islink(p)]
    if found:
        raise ConfigError(
            f"The run folder holds a symbolic link ({found[0]} -> {os.readlink(found[0])!r}"
            + (f", and {len(found) - 1} more" if len(found) > 1 else "") + "). A run never reads or writes through "
            f"links, which could lead out of the folder: remove it, or use a new --out. {received('out_dir', root)}")


@contextlib.contextmanager
def claim_run_folder(out: str | os.PathLike) -> Iterator[None]:
    """Opens a run folder for one run: refuses a file, a foreign non-empty folder, or a folder in use.

    A folder is ours when it holds the marker file; any other non-empty folder is refused
    untouched, even one that looks like a run (config.json, stages/): a folder from a
    tfimgopt older than the marker is adopted only by creating the marker. An OS lock
    (`flock`) on `.tfimgopt.lock` is held for the whole
    run; it is released by the OS even when the process is killed.

    Raises:
        ConfigError: naming the folder, and for a folder in use the process holding it.
    """
    import fcntl
    import socket
    import time

    from tfimgopt.errors import ConfigError, received

    out = os.fspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"The run folder must be a folder; this path is a file. {received('out_dir', out)}")
    marker = os.path.join(out, RUN_MARKER)
    try:
        entries = os.listdir(out) if os.path.isdir(out) else []
    except OSError as err:
        raise _storage_error(out, err) from None
    if entries and not (os.path.isfile(marker) and not os.path.islink(marker)):
        # Only the marker makes a folder ours: a folder of the user's that merely looks like a run
        # (config.json, stages/) is never adopted, so nothing of theirs is overwritten or deleted.
        hint = (" If it is a run folder from a tfimgopt older than the marker file, adopt it yourself: "
                f"touch {os.path.join(out, RUN_MARKER)}") if {"config.json", "stages"} <= set(entries) else ""
        raise ConfigError(
            "The folder is not a tfimgopt run folder (no .tfimgopt-run marker) and is not empty, so nothing in it is "
            f"touched: choose a new or empty folder (--out).{hint} {received('out_dir', out)}")
    refuse_links(out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise _storage_error(out, err) from None
    lock = os.path.join(out, _LOCK)
    if os.path.lexists(lock) and (os.path.islink(lock) or not os.path.isfile(lock)):
        raise ConfigError(f"The run folder's lock file {lock} is not a regular file (a FIFO, device or folder): "
                          f"remove it and run again. {received('out_dir', out)}")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as err:
        raise _storage_error(out, err) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
            raise ConfigError(f"The run folder is in use by {holder}: wait for that run to end, or use another "
                              f"--out. {received('out_dir', out)}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
                  .encode(), 0)
        if not os.path.isfile(marker):
            write_text(marker, "A tfimgopt run folder (tfimgopt run --out).\n")
        yield
    finally:
        os.close(fd)  # closing releases the lock
