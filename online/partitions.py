"""Log partitions: which partition a stored user id belongs to, stable across processes.

A user's events all live in one partition, so every per-user invariant (replay determinism,
no leakage, the effective-time rule) holds per partition, and partitions are the unit of
parallel work (replays and training sets on Ray). The hash is the first 8 bytes of
BLAKE2b of the stored (possibly pseudonymized) id, little-endian, modulo P: the same on every
machine and Python process (Python's ``hash()`` is salted per process).

>>> partition_of("u1", 16), partition_of("u1", 16) == partition_of("u1", 16)
(2, True)
>>> groups(5, 2)
[[0, 2, 4], [1, 3]]
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

__all__ = ["DEFAULT_PARTITIONS", "MAX_PARTITIONS", "check_partitions", "groups", "partition_of",
           "partitions_of"]

DEFAULT_PARTITIONS = 16
MAX_PARTITIONS = 65_536


def partition_of(stored_user_id: str, partitions: int) -> int:
    """The partition (0 .. partitions-1) of a stored user id."""
    digest = hashlib.blake2b(stored_user_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % partitions


def partitions_of(stored_user_ids: Iterable[str], partitions: int) -> np.ndarray:
    """``partition_of`` for many ids (hashed once per distinct id), as an int64 array."""
    ids = list(stored_user_ids)
    known = {u: partition_of(u, partitions) for u in set(ids)}
    return np.fromiter((known[u] for u in ids), dtype=np.int64, count=len(ids))


def check_partitions(partitions: int) -> int:
    """``partitions`` if it is a valid partition count, else a ValueError naming the rule."""
    if isinstance(partitions, bool) or not isinstance(partitions, int | np.integer) or not (
            1 <= partitions <= MAX_PARTITIONS):
        raise ValueError(f"partitions: expected an integer in [1, {MAX_PARTITIONS}], "
                         f"got {partitions!r}")
    return int(partitions)


def groups(partitions: int, n_groups: int) -> list[list[int]]:
    """Partitions dealt round-robin into ``min(n_groups, partitions)`` non-empty groups."""
    n = max(1, min(int(n_groups), int(partitions)))
    return [list(range(g, partitions, n)) for g in range(n)]
