"""sign(x) log1p(|x|), the transform the propensity's learners read, and the logistic sigmoid.

Counts, spends and durations span orders of magnitude; on raw values one large user moves
every weight. These are the per-value forms the per-event paths call (`math`, not numpy: a
few values at a time, and the same rounding on every machine).
"""

from __future__ import annotations

import math

__all__ = ["sigmoid", "signed_log1p", "signed_log_or_zero", "signed_logs"]


def signed_log1p(v: float) -> float:
    return math.copysign(math.log1p(abs(v)), v)


def signed_logs(values) -> list | None:
    """sign(v) log1p(|v|) of each value; None if one is None or not finite (the slow path)."""
    log1p = math.log1p
    try:
        zs = [log1p(v) if v >= 0 else -log1p(-v) for v in values]
    except TypeError:
        return None
    return zs if math.isfinite(sum(zs)) else None


def signed_log_or_zero(v) -> float:
    if v is None or v != v or v in (math.inf, -math.inf):
        return 0.0
    return math.log1p(v) if v >= 0 else -math.log1p(-v)


def sigmoid(a: float) -> float:
    if a >= 0:
        return 1.0 / (1.0 + math.exp(-a))
    e = math.exp(a)
    return e / (1.0 + e)
