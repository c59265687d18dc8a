"""The propensity's prior before anything is learnt: the share of questions answered yes
within the horizon, from questions whose windows are still running (Kaplan-Meier)."""

from __future__ import annotations

import math

import numpy as np

from online.kernels.survival import km_pass

__all__ = ["kaplan_meier"]


def kaplan_meier(answered: list[int], censored: list[int], horizon: int) -> float:
    """P(answer within `horizon`) from ages at a yes (`answered`) and ages still waiting
    (`censored`), shrunk towards 1/2 by one question.

    Kaplan-Meier's survival S(a) up to the age tau where a quarter of the questions are
    still at risk; from tau to the horizon, the hazard seen between tau/2 and tau goes on:
    a hazard that falls with age (a shop's customers who come back within minutes or not
    for weeks) is carried at its late value, not its early one. That late hazard is the
    posterior mean under a Gamma prior worth about one question watched for most of a
    horizon, centred where the horizon's answer reads 1/2 (hazard ln 2 / H): with nothing
    seen the estimate is 1/2, and the shop's own questions outweigh the prior within hours.

    >>> kaplan_meier([], [], 10)
    0.5
    >>> round(kaplan_meier([1, 2], [10, 10], 10), 3)  # S = (3/4)(2/3) = 1/2, F = 1/2
    0.5
    >>> round(kaplan_meier([], [0, 0, 0], 10), 3)  # all just asked: the prior, 1/2
    0.5
    """
    n = len(answered) + len(censored)
    if n == 0:
        return 0.5
    # events before censorings at the same age (the usual convention); ages past the
    # horizon count as the horizon; tau: the age where a quarter are still at risk
    yes, waiting = _ints(answered), _ints(censored)
    if yes is not None and waiting is not None and type(horizon) is int and horizon < _BOUND:
        survival, late_answers, late_exposure, tau = km_pass(yes, waiting, horizon)
    else:
        survival, late_answers, late_exposure, tau = _km_pass(answered, censored, horizon)
    if tau < horizon:
        hazard = (late_answers + _PRIOR_ANSWERS) / (late_exposure + _PRIOR_EXPOSURE * horizon)
        survival *= math.exp(-hazard * (horizon - tau))
    return ((1.0 - survival) * n + 0.5) / (n + 1.0)


def _ints(ages) -> np.ndarray | None:
    """`ages` as int64 when they are all ints the compiled pass takes exactly (|age| below
    2^61: doubled, they still fit); None otherwise (floats, huge ints)."""
    try:
        a = np.asarray(ages)
    except OverflowError:
        return None
    if len(a) == 0:
        return np.zeros(0, np.int64)
    if a.dtype != np.int64 or a.ndim != 1 or max(-int(a.min()), int(a.max())) >= _BOUND:
        return None
    return a


_BOUND = 2**61


def _km_pass(answered, censored, horizon) -> tuple[float, int, float, float]:
    """`online.kernels.survival.km_pass` for any real ages (floats, huge ints)."""
    n = len(answered) + len(censored)
    ages = sorted([(min(a, horizon), 0) for a in answered]
                  + [(min(c, horizon), 1) for c in censored])
    tau = ages[max(0, (3 * n) // 4 - 1)][0] if ages[-1][0] < horizon else horizon
    survival, at_risk = 1.0, n
    late_answers, late_exposure = 0, 0.0
    for age, censor in ages:
        if age > tau / 2:  # exposure inside (tau/2, tau] of every question still at risk
            late_exposure += min(age, tau) - tau / 2
            late_answers += not censor and age <= tau
        if age > tau:
            continue
        if not censor:
            survival *= 1.0 - 1.0 / at_risk
        at_risk -= 1
    return survival, late_answers, late_exposure, tau


# the late hazard's Gamma prior: half an answer over 0.5 / ln 2 of a horizon of exposure, so
# that with no data the horizon's answer is 1 - exp(-ln 2) = 1/2
_PRIOR_ANSWERS = 0.5
_PRIOR_EXPOSURE = 0.5 / math.log(2.0)
