"""Kernels of point-in-time lookups: rows indexed by user and time, then binary searches.

Rows are grouped by user with a counting sort, each user's rows sorted by (event time,
created) with an insertion sort (they arrive almost sorted: files by date, rows in log
order); a lookup finds the user's newest row at or before T.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from online.kernels.features import checked
from online.kernels.jit import JIT


@njit(**JIT)
def _index(codes, ts, created, n_users):
    """Row order grouped by user code, by (ts, created) within; and the users' segments."""
    n = codes.shape[0]
    seg = np.zeros(n_users + 1, np.int64)
    for i in range(n):
        seg[codes[i] + 1] += 1
    for u in range(n_users):
        seg[u + 1] += seg[u]
    fill = seg[:-1].copy()
    order = np.empty(n, np.int64)
    for i in range(n):
        order[fill[codes[i]]] = i
        fill[codes[i]] += 1
    for u in range(n_users):  # insertion sort: segments arrive nearly sorted
        for k in range(seg[u] + 1, seg[u + 1]):
            r = order[k]
            j = k - 1
            while j >= seg[u] and (ts[order[j]] > ts[r] or
                                   (ts[order[j]] == ts[r] and created[order[j]] > created[r])):
                order[j + 1] = order[j]
                j -= 1
            order[j + 1] = r
    return order, seg


@njit(**JIT)
def _lookup(ucode, t, seg, order, ts):
    """Per query, the row of the user's newest entry with ts <= t (-1: none)."""
    out = np.full(ucode.shape[0], -1, np.int64)
    for q in range(ucode.shape[0]):
        u = ucode[q]
        if u < 0:
            continue
        lo, hi = seg[u], seg[u + 1]  # find the first position with ts > t
        while lo < hi:
            mid = (lo + hi) // 2
            if ts[order[mid]] <= t[q]:
                lo = mid + 1
            else:
                hi = mid
        if lo > seg[u]:
            out[q] = order[lo - 1]
    return out


def index_by_user(codes, ts, created, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Row order grouped by user code (sorted by (ts, created) within) and the segments.

    User u's rows are ``order[seg[u]:seg[u + 1]]``; ``codes`` must lie in [0, n_users).
    """
    n = len(np.asarray(codes))
    codes = checked("codes", codes, np.int64, n)
    if n and (codes.min() < 0 or codes.max() >= n_users):
        raise ValueError(f"codes: expected values in [0, {n_users}), got "
                         f"[{codes.min()}, {codes.max()}]")
    return _index(codes, checked("ts", ts, np.int64, n), checked("created", created, np.int64, n),
                  n_users)


def lookup(ucode, t_us, seg, order, ts) -> np.ndarray:
    """Per query (user code, T), the row of the user's newest entry with ts <= T (-1: none)."""
    n = len(np.asarray(ucode))
    seg = checked("seg", seg, np.int64)
    ucode = checked("ucode", ucode, np.int64, n)
    if n and ucode.max() >= len(seg) - 1:
        raise ValueError(f"ucode: expected codes below {len(seg) - 1}, got {ucode.max()}")
    return _lookup(ucode, checked("t_us", t_us, np.int64, n), seg,
                   checked("order", order, np.int64), checked("ts", ts, np.int64))
