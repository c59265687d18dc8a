"""Durable file writes: what every store of a data dir uses to survive a crash.

A file that readers must see whole or not at all is written to a temporary name in the same
directory, fsynced, renamed over the old one, and the directory fsynced (`replace_file`);
trees of files (checkpoints) are written into a temporary directory, fsynced as a whole
(`fsync_tree`) and renamed into place by their owner. Temporary names start with a dot and
are unique per call, so two processes never write the same temporary file and readers that
skip dot files never see a partial one.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> replace_file(d / "a.json", b"{}")
>>> replace_file(d / "a.json", b'{"x": 1}')
>>> (d / "a.json").read_bytes(), sorted(p.name for p in d.iterdir())
(b'{"x": 1}', ['a.json'])
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["fsync_dir", "fsync_tree", "replace_file", "start_writeback", "write_synced"]


def write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it (callers rename it into place afterwards)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def replace_file(path: str | Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically and durably: a reader (or a crash) sees the old
    bytes or the new ones, never a mix; the rename itself is fsynced."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def start_writeback(fd: int) -> None:
    """Start writing a file's dirty pages to disk now, without waiting for them.

    A long write (a replay's parquet, gigabytes) otherwise stays in the page cache until the
    kernel's flusher or the final fsync: the fsync then waits for all of it at once, with
    the CPU idle, and every process finishing at the same time waits together.  Started
    early, the disk writes while the writer computes and the final fsync finds little left.
    ``POSIX_FADV_DONTNEED`` starts that writeback on Linux (and drops the file's clean pages
    from the cache: a writer's output is not read back soon).  It changes no durability
    guarantee: the fsync stays where it was.  A no-op where the call does not exist."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        advise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def fsync_dir(path: Path) -> None:
    """fsync a directory so renames and new entries in it are durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(directory: Path) -> None:
    """fsync every file and directory below ``directory`` (before renaming it into place)."""
    for path in sorted(directory.rglob("*"), reverse=True):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        else:
            fsync_dir(path)
    fsync_dir(directory)
