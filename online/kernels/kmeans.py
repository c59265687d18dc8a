"""The Lloyd steps of `online.models.kmeans.lloyd` compiled: the same arithmetic in the same
order as its numpy form (bit for bit: a replay and a checkpoint see the same centres), without
the temporaries of a (rows x centres x dims) broadcast and a mask per centre per step.

numpy's orders, reproduced: a row's squared distance to a centre sums its dims' squares in
order; a centre's new position is its members' sum in row order (first row, then each next
one added: numpy's reduction over the outer axis) divided by their count; the first index
wins a tie of `argmin` / `argmax`. With one dim numpy sums the members pairwise instead, so
`online.models.kmeans.lloyd` only calls this for rows of 2 dims or more.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from online.kernels.jit import JIT


@njit(**JIT)
def sq_distances(Z, C):
    """(rows x centres) squared distances, summed as numpy's ``((Z - C) ** 2).sum(axis=2)``."""
    n, dims = Z.shape
    k = C.shape[0]
    d = np.empty((n, k))
    for i in range(n):
        for c in range(k):
            v = Z[i, 0] - C[c, 0]
            s = v * v
            for j in range(1, dims):
                v = Z[i, j] - C[c, j]
                s += v * v
            d[i, c] = s
    return d


@njit(**JIT)
def lloyd_steps(Z, C, iterations):
    """`online.models.kmeans.lloyd` on C in place: the number of re-seeded centres."""
    n, dims = Z.shape
    k = C.shape[0]
    nearest = np.zeros(n, np.int64)
    before = np.full(n, -1, np.int64)
    counts = np.zeros(k, np.int64)
    sums = np.zeros((k, dims))
    reseeded = 0
    for it in range(iterations):
        d = sq_distances(Z, C)
        for i in range(n):
            best, arg = d[i, 0], 0
            for c in range(1, k):
                if d[i, c] < best:
                    best, arg = d[i, c], c
            nearest[i] = arg
        if it > 0:
            same = True
            for i in range(n):
                if nearest[i] != before[i]:
                    same = False
                    break
            if same:
                break  # converged: no row changes centre
        before[:] = nearest
        counts[:] = 0
        for i in range(n):  # members' sums in row order, from the first member
            c = nearest[i]
            if counts[c] == 0:
                for j in range(dims):
                    sums[c, j] = Z[i, j]
            else:
                for j in range(dims):
                    sums[c, j] += Z[i, j]
            counts[c] += 1
        for c in range(k):
            if counts[c] > 0:
                for j in range(dims):
                    C[c, j] = sums[c, j] / counts[c]
            elif n > k:
                # the row worst served by the other centres; ties: the first
                far, worst = 0, d[0, nearest[0]]
                for i in range(1, n):
                    if d[i, nearest[i]] > worst:
                        far, worst = i, d[i, nearest[i]]
                for j in range(dims):
                    C[c, j] = Z[far, j]
                for c2 in range(k):
                    d[far, c2] = 0.0
                reseeded += 1
    return reseeded


@njit(**JIT)
def nearer(Z, c, d):
    """d = min(d, squared distance of each row of Z to row c of Z), in place, summed as
    `sq_distances` sums them: a k-means++ round's distances to the nearest centre so far."""
    n, dims = Z.shape
    for i in range(n):
        v = Z[i, 0] - Z[c, 0]
        s = v * v
        for j in range(1, dims):
            v = Z[i, j] - Z[c, j]
            s += v * v
        if s < d[i]:
            d[i] = s


@njit(**JIT)
def weighted_pick(d, total, u):
    """numpy's ``Generator.choice(len(d), p=d / total)`` given its uniform draw u: the first
    index whose normalised running sum exceeds u (the same sums in the same order)."""
    n = len(d)
    cdf = np.empty(n)
    acc = 0.0
    for i in range(n):
        acc += d[i] / total
        cdf[i] = acc
    last = cdf[n - 1]
    lo, hi = 0, n  # searchsorted(side="right") of u in cdf / last
    while lo < hi:
        mid = (lo + hi) // 2
        if u < cdf[mid] / last:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(**JIT)
def nearest_two(Z, C):
    """Per row, the squared distances to its nearest and second nearest centre (k >= 2)."""
    d = sq_distances(Z, C)
    n, k = d.shape
    a = np.empty(n)
    b = np.empty(n)
    for i in range(n):
        first, second = np.inf, np.inf
        for c in range(k):
            v = d[i, c]
            if v < first:
                first, second = v, first
            elif v < second:
                second = v
        a[i], b[i] = first, second
    return a, b
