"""sign(x) log1p(|x|) of a batch of feature rows: the propensity learner's input units.

`online.models.signed.signed_logs` computes the same per value in Python (``math.log1p``, the
C library's function, which the compiled ``math.log1p`` calls too: a test holds them equal);
this takes a whole batch's rows in one call instead of one list per event.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from online.kernels.jit import JIT

__all__ = ["row_logits", "signed_log_rows"]


@njit(**JIT)
def signed_log_rows(X, fill):
    """sign(v) log1p(|v|) of every value of the 2-D float array X, a non-finite value (NaN,
    inf) read as `fill` (finite) first."""
    n, m = X.shape
    out = np.empty((n, m))
    for i in range(n):
        for j in range(m):
            v = X[i, j]
            if not np.isfinite(v):
                v = fill
            out[i, j] = math.log1p(v) if v >= 0 else -math.log1p(-v)
    return out


@njit(**JIT)
def row_logits(Z, slopes, offset, start):
    """``offset + sum_k slopes[k] * Z[i, k]`` for the rows i >= `start` of Z (0.0 before it):
    the sum Python's ``offset + sum(map(operator.mul, slopes, z))`` makes, term by term in
    k order from the first product (no fused multiply-add), so the same bits."""
    n, m = Z.shape
    out = np.zeros(n)
    for i in range(start, n):
        if m == 0:
            out[i] = offset
            continue
        s = slopes[0] * Z[i, 0]
        for k in range(1, m):
            s += slopes[k] * Z[i, k]
        out[i] = offset + s
    return out
