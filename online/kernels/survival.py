"""The Kaplan-Meier pass of the propensity's prior (`online.models.survival.kaplan_meier`),
compiled: the same sorted ages, the same products and sums in the same order (bit for bit)."""

from __future__ import annotations

import numpy as np
from numba import njit

from online.kernels.jit import JIT

__all__ = ["km_pass"]


@njit(**JIT)
def km_pass(answered, censored, horizon):
    """(survival up to tau, answers in (tau/2, tau], exposure in (tau/2, tau], tau) from ages
    at a yes and ages still waiting (int64 arrays), each capped at `horizon`; ages sort
    answers before censorings at the same age. Needs at least one age."""
    n = len(answered) + len(censored)
    keys = np.empty(n, np.int64)  # age * 2 + (1 for a censoring): one sort orders both
    for i in range(len(answered)):
        keys[i] = min(answered[i], horizon) * 2
    for i in range(len(censored)):
        keys[len(answered) + i] = min(censored[i], horizon) * 2 + 1
    keys.sort()
    last = keys[n - 1] >> 1
    tau = (keys[max(0, (3 * n) // 4 - 1)] >> 1) if last < horizon else horizon
    half = tau / 2
    survival, at_risk = 1.0, n
    late_answers, late_exposure = 0, 0.0
    for i in range(n):
        age, censor = keys[i] >> 1, keys[i] & 1
        if age > half:
            late_exposure += min(age, tau) - half
            if censor == 0 and age <= tau:
                late_answers += 1
        if age > tau:
            continue
        if censor == 0:
            survival *= 1.0 - 1.0 / at_risk
        at_risk -= 1
    return survival, late_answers, late_exposure, tau
