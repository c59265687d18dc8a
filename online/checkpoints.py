"""The projector's checkpoint directory: which checkpoint is current, and clean-up.

``<state_dir>/CURRENT`` names the live ``ckpt-<offset>-<random>`` directory. It is replaced by
renaming a uniquely named temporary file over it, so two writers never share a temporary
name and a reader always sees a whole name. A writer removes only the checkpoint that was
current before its own (and crashed writers' leftovers), never one another writer may be
filling or has just made current.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from online.state import fsync_dir

__all__ = ["STALE_CHECKPOINT_S", "current_checkpoint", "point_current",
           "remove_stale_checkpoints"]

_CURRENT = "CURRENT"
STALE_CHECKPOINT_S = 3600.0  # a non-current checkpoint older than this is a crash leftover


def current_checkpoint(state_dir: Path) -> str | None:
    """The name of the checkpoint ``CURRENT`` points at (None before the first one)."""
    try:
        return (Path(state_dir) / _CURRENT).read_text("utf-8").strip() or None
    except FileNotFoundError:
        return None


def point_current(state_dir: Path, name: str) -> None:
    """Make checkpoint ``name`` current: a uniquely named pointer file renamed over CURRENT."""
    state_dir = Path(state_dir)
    fd, tmp = tempfile.mkstemp(prefix=f".{_CURRENT}.", suffix=".tmp", dir=state_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(name.encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, state_dir / _CURRENT)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(state_dir)


def remove_stale_checkpoints(state_dir: Path, previous: str | None, *,
                             superseded: str | None = None) -> int:
    """Remove ``previous`` (unless it is current again) and crashed writers' leftovers.

    ``superseded``: the caller's own new checkpoint, removed too when another writer has
    already made its own current (nobody points back at it). A leftover is a checkpoint
    directory other than the current one untouched for ``STALE_CHECKPOINT_S``: no live
    writer takes that long between two files. Returns the number removed.
    """
    state_dir = Path(state_dir)
    now = time.time()
    current = current_checkpoint(state_dir)
    removed = 0
    for entry in state_dir.glob("ckpt-*"):
        if entry.name == current:
            continue
        try:
            stale = now - entry.stat().st_mtime > STALE_CHECKPOINT_S
        except FileNotFoundError:
            continue
        if entry.name in (previous, superseded) or stale:
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    for entry in state_dir.glob(f".{_CURRENT}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            if now - entry.stat().st_mtime > STALE_CHECKPOINT_S:
                entry.unlink()
    return removed
