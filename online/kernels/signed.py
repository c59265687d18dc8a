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

__all__ = ["signed_log_rows"]


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
