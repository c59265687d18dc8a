"""Compilation flags of every kernel and the guard that keeps numba's cache honest."""

from __future__ import annotations

import hashlib
from pathlib import Path

# No fastmath: served values must stay reproducible bit for bit (replay == live projector).
JIT = {"cache": True, "nogil": True, "error_model": "numpy"}

_HERE = Path(__file__).resolve().parent


def guard_cache(dispatchers) -> None:
    """Drop the kernels' numba cache when any source they depend on has changed.

    numba keys a cached function on its own file only; kernels here call kernels of sibling
    modules and freeze constants of ``online.state``, ``online.catalogue``, ``online.clock``
    and ``online.events`` into their code, so a change there would otherwise run a stale copy.
    The digest of all those sources is stamped beside the cache; a different digest flushes
    every dispatcher's cache.
    """
    from online import catalogue, clock, events, state

    files = sorted(_HERE.glob("*.py")) + [Path(m.__file__)
                                         for m in (state, catalogue, clock, events)]
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()
    stamp = Path(dispatchers[0]._cache.cache_path) / "online-kernels.depends"
    try:
        if stamp.read_text() == digest:
            return
    except OSError:
        pass
    for d in dispatchers:
        d._cache.flush()
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(digest)
    except OSError:  # a read-only install: numba then caches elsewhere or not at all
        pass
