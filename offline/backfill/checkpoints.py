"""The replay's state checkpoints: whole, or in parts of disjoint users.

A checkpoint at offset ``o`` lives in ``<replay>/checkpoints/<o:012d>/`` and holds the
feature state after the log's offsets ``[0, o)`` plus each user's newest applied offset:

- whole: ``UserState.write_into`` plus ``last_offset.npy`` in the directory itself (what the
  local replay writes at a chunk boundary);
- in parts: ``parts.json`` naming sub-directories, each a whole checkpoint of its own users
  (disjoint: one Ray task's partition group each).  A Ray replay's tasks write their states
  where they run; the driver only renames them into place.  Gathering them into one state
  (loading ~2 KB a user from every task, re-coding, writing it again) made the driver a
  serial step after the parallel ones, a twentieth of a two-worker run on 100,000 users,
  and it could not hold a cluster's users at all.  A parts checkpoint is merged when it is
  read (``load_checkpoint``: the local engine extending the snapshot, ``replay_state``),
  into exactly the state a merge at commit wrote (users in part order).

Erasure (``state_dirs``) reaches every state directory: whole checkpoints, parts, and the
group states of an unfinished Ray run.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from online.durable import fsync_dir, fsync_tree, replace_file
from online.state import CodeMap, UserState

if TYPE_CHECKING:
    from offline.backfill.files import Manifest

__all__ = ["adopt_checkpoint", "adopt_parts", "load_checkpoint", "merge_states",
           "save_checkpoint", "state_dirs"]

PARTS = "parts.json"


def save_checkpoint(man: Manifest, offset: int, state: UserState, last_offset: np.ndarray,
                    ) -> None:
    """Write the state at chunk boundary ``offset`` (atomically) and record it."""
    target = man.checkpoint_dir(offset)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state.write_into(tmp)
    np.save(tmp / "last_offset.npy", last_offset[: state.n_users])
    adopt_checkpoint(man, offset, tmp)


def adopt_checkpoint(man: Manifest, offset: int, directory: Path) -> None:
    """Make ``directory`` (``UserState.write_into`` plus ``last_offset.npy``, or a parts
    directory, on the same file system) the checkpoint at ``offset`` by renaming it: no copy
    of the state.  A repeat after a crash that came after the rename finds it in place."""
    target = man.checkpoint_dir(offset)
    if directory.exists():
        fsync_tree(directory)  # durable before the manifest names it
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        os.replace(directory, target)
        fsync_dir(target.parent)
    elif not target.exists():
        raise FileNotFoundError(f"checkpoint state {directory} is missing")
    if offset not in man.checkpoints:
        man.checkpoints = sorted([*man.checkpoints, offset])


def adopt_parts(man: Manifest, offset: int, parts: list[Path]) -> None:
    """Make the whole-checkpoint directories ``parts`` (disjoint users, in this order) the
    checkpoint at ``offset``, by renaming each into it: nothing is loaded or written again.

    Repeatable: a commit that died half-way (some parts moved, or all of them and the
    directory renamed) is finished by calling it again with the same ``parts``."""
    if len(parts) == 1:
        adopt_checkpoint(man, offset, parts[0])
        return
    target = man.checkpoint_dir(offset)
    tmp = target.with_name(f".{target.name}.parts")
    names = [f"p{k:04d}" for k in range(len(parts))]
    if not tmp.exists() and not any(p.exists() for p in parts):
        adopt_checkpoint(man, offset, tmp)  # renamed into place already (else: missing)
        return
    tmp.mkdir(parents=True, exist_ok=True)
    for name, part in zip(names, parts, strict=True):
        if part.exists():
            shutil.rmtree(tmp / name, ignore_errors=True)
            os.replace(part, tmp / name)
        elif not (tmp / name).exists():
            raise FileNotFoundError(f"checkpoint part {part} is missing")
    replace_file(tmp / PARTS, json.dumps({"parts": names}).encode())
    adopt_checkpoint(man, offset, tmp)


def load_checkpoint(man: Manifest, offset: int) -> tuple[UserState, np.ndarray]:
    """The state and per-user newest offsets at ``offset`` (0: empty)."""
    if offset == 0:
        return UserState(), np.zeros(0, np.int64)
    return _load(man.checkpoint_dir(offset))


def _load(path: Path) -> tuple[UserState, np.ndarray]:
    if (path / PARTS).exists():
        names = json.loads((path / PARTS).read_text("utf-8"))["parts"]
        return merge_states([_load(path / name) for name in names])
    return UserState.load(path), np.load(path / "last_offset.npy")


def state_dirs(replay_dir: Path) -> list[Path]:
    """Every directory holding a ``UserState`` under the replay's bookkeeping (sorted)."""
    found = [*replay_dir.glob("checkpoints/*"), *replay_dir.glob("checkpoints/*/*"),
             *replay_dir.glob("ray/*/state")]
    return sorted(p for p in found if p.is_dir() and (p / "codes.json").exists())


def merge_states(parts: list[tuple[UserState, np.ndarray]]) -> tuple[UserState, np.ndarray]:
    """One state holding the disjoint users of ``parts`` (each with its per-user offsets).

    Users are concatenated in order; item and category codes are re-coded into the merged
    maps (``recent`` and ``cat_code`` hold codes; HyperLogLog registers use the items'
    stable hashes and need nothing).
    """
    total = sum(s.n_users for s, _ in parts)
    merged = UserState(capacity=max(total, 1))
    users: list[str | None] = []
    offsets = []
    at = 0
    for state, last in parts:
        n = state.n_users
        if not n:
            continue
        for name, arr in state.arrays().items():
            getattr(merged, name)[at: at + n] = arr
        items = _recode(merged.encode_items, state.items.values)
        cats = _recode(merged.encode_categories, state.categories.values)
        recent, codes = merged.recent[at: at + n], merged.cat_code[at: at + n]
        recent[...] = np.where(recent >= 0, items[np.maximum(recent, 0)], -1)
        codes[...] = np.where(codes >= 0, cats[np.maximum(codes, 0)], -1)
        users += state.users.values
        offsets.append(np.asarray(last[:n], np.int64))
        at += n
    merged.users = CodeMap(users)
    merged.n_users = total
    return merged, np.concatenate(offsets) if offsets else np.zeros(0, np.int64)


def _recode(encode: Callable[[np.ndarray], np.ndarray], values: list) -> np.ndarray:
    """Merged codes of a part's code map values (index: the part's code)."""
    if not values:
        return np.zeros(1, np.int32)
    return np.asarray(encode(np.array(values, dtype=object)), np.int32)
