"""The propensity's prior before anything is learnt: the share of questions answered yes
within the horizon, from questions whose windows are still running (Kaplan-Meier)."""

from __future__ import annotations

__all__ = ["kaplan_meier"]


def kaplan_meier(answered: list[int], censored: list[int], horizon: int) -> float:
    """P(answer within `horizon`) from ages at a yes (`answered`) and ages still waiting
    (`censored`), shrunk towards 1/2 by one question.

    Kaplan-Meier's survival S(a) up to the age tau where a quarter of the questions are
    still at risk; from tau to the horizon, the hazard seen between tau/2 and tau goes on
    (a hazard that falls with age, as a shop's customers who come back within minutes or
    not for weeks, is carried at its late value, not its early one), weighed against 1/2 by
    the share of the horizon not yet seen: with nothing seen it reads 1/2.

    >>> kaplan_meier([], [], 10)
    0.5
    >>> round(kaplan_meier([1, 2], [10, 10], 10), 3)  # S = (3/4)(2/3) = 1/2, F = 1/2
    0.5
    """
    n = len(answered) + len(censored)
    if n == 0:
        return 0.5
    # events before censorings at the same age (the usual convention); ages past the
    # horizon count as the horizon
    ages = sorted([(min(a, horizon), 0) for a in answered]
                  + [(min(c, horizon), 1) for c in censored])
    # tau: the age where a quarter of the questions are still at risk
    tau = ages[max(0, (3 * n) // 4 - 1)][0] if ages[-1][0] < horizon else horizon
    survival, at_risk, half = 1.0, n, None
    for age, censor in ages:
        if age > tau:
            break
        if half is None and age > tau / 2:
            half = survival
        if not censor:
            survival *= 1.0 - 1.0 / at_risk
        at_risk -= 1
    if tau < horizon:
        # the rest of the window: the late hazard carried on, S(tau) (S(tau) / S(tau/2)) **
        # ((H - tau) / (tau / 2)), trusted in proportion to how much of the window was seen
        # (what was not seen reads 1/2)
        rest = 1.0
        if tau > 0 and half is not None and 0.0 < survival <= half:
            rest = (survival / half) ** ((horizon - tau) / (tau / 2))
        unseen = (horizon - tau) / horizon
        survival *= (1.0 - unseen) * rest + unseen * 0.5
    return ((1.0 - survival) * n + 0.5) / (n + 1.0)
