"""The projector's checkpoint directory: which checkpoint is current, clean-up, erasure.

``<state_dir>/CURRENT`` names the live ``ckpt-<offset>-<random>`` directory. It is replaced by
renaming a uniquely named temporary file over it, so two writers never share a temporary
name and a reader always sees a whole name. A writer removes only the checkpoint that was
current before its own (and crashed writers' leftovers), never one another writer may be
filling or has just made current.

A checkpoint holds the state (``UserState.write_into``), ``meta.json`` (format, offset,
watermark) and one sub-directory per contributor. `erase_user` removes one user from it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from online.state import UserState, fsync_dir, fsync_tree, write_synced

if TYPE_CHECKING:
    from online.projector import ProfileContributor, Projector

__all__ = ["STALE_CHECKPOINT_S", "current_checkpoint", "erase_user", "files_with",
           "point_current", "remove_other_checkpoints", "remove_stale_checkpoints"]

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


def remove_other_checkpoints(state_dir: Path, keep: str) -> int:
    """Remove every checkpoint but ``keep`` (erasure, retraining: no older copy may stay)."""
    removed = 0
    for old in Path(state_dir).glob("ckpt-*"):
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)
            removed += 1
    return removed


# -- erasure ---------------------------------------------------------------------------------


def erase_user(state_dir: Path, stored_id: str, *, projector: Projector | None = None,
               contributors: Iterable[ProfileContributor] = ()) -> dict[str, Any]:
    """Remove a user (the stored id) from the projector state; what was removed.

    ``projector``: the live one (the server's): its rows and contributors forget the user,
    then a new checkpoint is written.  Without it the current checkpoint on disk is copied
    without the user and made current; ``contributors`` (by ``name``) scrub their own
    sub-directories, any other sub-directory is copied as it is.  Every other checkpoint is
    then deleted, and the watermark is recomputed from the remaining users.

    Returns ``state_rows`` (0/1), ``checkpoints_removed`` and ``residue``: the checkpoint
    files that still mention the user (a part no contributor here could scrub).
    """
    state_dir = Path(state_dir)
    if projector is not None:
        rows = int(projector.state.erase(stored_id))
        dropped = 0
        for c in projector.contributors:
            dropped += sum(v for v in c.erase_user(stored_id).values() if isinstance(v, int))
        if rows:
            projector.watermark_us = projector.state.newest_event_us()
        current = current_checkpoint(state_dir)
        # a new checkpoint only when the user was in memory or is on disk: an unknown
        # user's erasure (a DELETE of a typo) writes nothing and costs no full checkpoint
        if rows or dropped or current is None or files_with(state_dir, stored_id):
            current = projector.checkpoint().name
    else:
        if current_checkpoint(state_dir) is None:
            return {"state_rows": 0, "checkpoints_removed": 0}
        rows, current = _rewrite_current(state_dir, stored_id, list(contributors))
    removed = remove_other_checkpoints(state_dir, current)
    residue = [p.relative_to(state_dir).as_posix() for p in files_with(state_dir, stored_id)]
    return {"state_rows": rows, "checkpoints_removed": removed, "residue": residue}


def _rewrite_current(state_dir: Path, stored_id: str,
                     contributors: list[ProfileContributor]) -> tuple[int, str]:
    """The current checkpoint copied without the user, made current; (rows, its name)."""
    source = state_dir / str(current_checkpoint(state_dir))
    meta = json.loads((source / "meta.json").read_text("utf-8"))
    state = UserState.load(source)
    rows = int(state.erase(stored_id))
    if rows:
        meta["watermark_us"] = state.newest_event_us()
    target = Path(tempfile.mkdtemp(prefix=f"ckpt-{int(meta['offset']):020d}-", dir=state_dir))
    try:
        state.write_into(target)
        written = set(os.listdir(target))
        by_name = {c.name: c for c in contributors}
        for entry in source.iterdir():
            if entry.name in written or entry.name == "meta.json":
                continue
            dest = target / entry.name
            c = by_name.get(entry.name)
            if entry.is_dir() and c is not None:  # a contributor that can scrub itself
                c.load(entry)
                c.erase_user(stored_id)
                dest.mkdir()
                c.save(dest)
            elif entry.is_dir():
                shutil.copytree(entry, dest)
            else:
                shutil.copy2(entry, dest)
        write_synced(target / "meta.json", json.dumps(meta).encode())
        fsync_tree(target)
        fsync_dir(state_dir)
        point_current(state_dir, target.name)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return rows, target.name


def files_with(directory: Path, stored_id: str) -> list[Path]:
    """Files under ``directory`` that still hold ``stored_id`` (numeric .npy arrays skipped).

    A long id (a pseudonym) is searched as bytes anywhere; a short raw id only as a whole
    JSON string or a pickled str, so that erasing "u1" does not flag "u10".
    """
    data = stored_id.encode("utf-8")
    if len(data) >= 16:
        needles = [data]
    else:
        needles = [json.dumps(stored_id).encode(), b"\x8c" + bytes([len(data)]) + data,
                   b"X" + struct.pack("<I", len(data)) + data]
    return [p for p in sorted(Path(directory).rglob("*"))
            if p.is_file() and p.suffix != ".npy"
            and any(n in p.read_bytes() for n in needles)]
