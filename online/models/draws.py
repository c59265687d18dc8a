"""Uniform draws from a counter (splitmix64): the questions' reservoir draws, replayable
with no global random state."""

from __future__ import annotations

import numpy as np

__all__ = ["unit"]


def unit(n: int) -> float:
    """A uniform draw in [0, 1) from the counter n (splitmix64): replayable, no global RNG.

    Counters come in sequence (one per draw), so the draws are made 1,024 at a time by
    numpy (uint64 arithmetic wraps as the masks below do: the same bits) and read from the
    block; a counter outside the block in hand makes its own."""
    global _BLOCK
    start, block = _BLOCK  # one read: a thread never sees one block's start with another's
    i = n - start
    if 0 <= i < _BLOCK_SIZE:
        return block[i]
    if 0 <= n < 2**63 - _BLOCK_SIZE:
        made = _unit_block(n)
        _BLOCK = n, made
        return made[0]
    z = (n * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return ((z ^ (z >> 31)) >> 11) * (1.0 / 9007199254740992.0)


def _unit_block(start: int) -> list[float]:
    """`unit` of the counters start, start + 1, ... (`_BLOCK_SIZE` of them)."""
    with np.errstate(over="ignore"):
        z = np.arange(start, start + _BLOCK_SIZE, dtype=np.uint64)
        z = z * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = (z ^ (z >> np.uint64(31))) >> np.uint64(11)
    return (z.astype(np.float64) * (1.0 / 9007199254740992.0)).tolist()


_BLOCK_SIZE = 1024
_BLOCK: tuple[int, list[float]] = (-(2**63), [0.0])  # (first counter, its draws)
