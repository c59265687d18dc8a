"""The coordinator of a federation: averages parameter vectors, never sees an event.

Federated averaging (McMahan et al., 2017): each round the coordinator sends the global
parameters to every shop, each shop answers with an update and its weight, and the
coordinator moves the parameters by the weighted mean update.  Round 0 agrees on the input
standardisation from the shops' summed moments.  With a privacy budget the shops' answers are
clipped per user and noised before they leave (DP-FedAvg, McMahan et al., 2018): the
coordinator then divides noised sums by the noised user count of round 0 and applies the L2
penalty itself.  A shop whose call fails is left out of that round and the run goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from offline.federation import model as fm
from offline.federation.privacy import GaussianAccountant
from offline.federation.tenant import Update


@dataclass
class FederationResult:
    """The federated model and what the run cost."""

    theta: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    rounds: int
    epsilon: float | None
    delta: float | None
    epsilon_spent: float | None
    noise_multiplier: float | None
    bytes_per_round: int
    participants: dict[int, list[str]] = field(default_factory=dict)
    dropped: dict[int, dict[str, str]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)

    def model(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.theta, self.mean, self.scale


def federate(tenants, *, rounds: int = 30, epsilon: float | None = None, delta: float = 1e-5,
             local_steps: int = 10, lr: float = 1.0, l2: float = 1e-2, clip: float = 1.0,
             progress=None) -> FederationResult:
    """Train one model across ``tenants`` (``offline.federation.engines``) for ``rounds``.

    ``epsilon``: None trains without noise; a number gives every shop's users
    ``(epsilon, delta)`` user-level DP over the whole run (the moments and every round).
    ``progress(round, rounds)`` is called after each round.
    """
    if rounds < 1:
        raise ValueError(f"rounds: expected at least 1, got {rounds}")
    accountant = None
    names = tenants.names
    refused: dict[str, str] = {}
    if epsilon is not None:
        accountant = GaussianAccountant.for_budget(epsilon, delta, rounds)
        charged = tenants.map("charge", {"accountant": accountant,
                                         "purpose": f"federate rounds={rounds}"})
        refused = {n: _reason(r) for n, r in charged.items() if isinstance(r, Exception)}
        names = [n for n in names if n not in refused]
        if not names:
            raise RuntimeError(f"every shop refused the run: {refused}")
    dropped: dict[int, dict[str, str]] = {}
    participants: dict[int, list[str]] = {}

    answers = tenants.map("moments", {"accountant": accountant}, names)
    ok = _received(answers, 0, dropped, participants)
    if not ok:
        raise RuntimeError(f"no shop answered round 0: {dropped.get(0)}")
    total = np.sum([u.vector for u in ok.values()], axis=0)
    d = (len(total) - 1) // 2
    # Under DP the noise of the summed moments is known: variances are floored at twice its
    # standard deviation, so noise cannot make a feature's scale vanish (and its inputs explode)
    floor = 0.0
    if accountant is not None:
        floor = 2.0 * accountant.noise_std(fm.moments_sensitivity(d), 0) * np.sqrt(len(ok)) \
            / max(float(total[2 * d]), 1.0)
    std = fm.Standardiser.from_moments(total, d, var_floor=floor)
    users = max(float(total[2 * d]), 1.0)  # noised under DP: a release of round 0
    theta = np.zeros(d + 1)
    up_bytes = [sum(u.nbytes for u in ok.values())]

    for r in range(1, rounds + 1):
        kwargs: dict[str, Any] = {
            "theta": theta, "mean": std.mean, "scale": std.scale, "accountant": accountant,
            "release": r, "local_steps": local_steps, "lr": lr, "l2": l2, "clip": clip}
        ok = _received(tenants.map("update", kwargs, names), r, dropped, participants)
        up_bytes.append(sum(u.nbytes for u in ok.values()))
        if not ok:
            continue
        if accountant is None:
            weight = sum(u.weight for u in ok.values())
            theta = theta + sum(u.weight * u.vector for u in ok.values()) / max(weight, 1.0)
        else:
            grad = sum(u.vector for u in ok.values()) / users
            grad[:-1] += l2 * theta[:-1]
            theta = theta - lr * grad
        if progress is not None:
            progress(r, rounds)

    down = theta.nbytes + std.mean.nbytes + std.scale.nbytes
    per_round = int(np.mean(up_bytes[1:]) if len(up_bytes) > 1 else up_bytes[0]) + \
        down * len(names)
    return FederationResult(
        theta=theta, mean=std.mean, scale=std.scale, rounds=rounds,
        epsilon=epsilon, delta=delta if epsilon is not None else None,
        epsilon_spent=accountant.epsilon() if accountant is not None else None,
        noise_multiplier=accountant.multipliers[-1] if accountant is not None else None,
        bytes_per_round=per_round, participants=participants, dropped=dropped,
        refused=refused)


def _received(answers: dict[str, Any], r: int, dropped: dict, participants: dict,
              ) -> dict[str, Update]:
    """The round's valid updates; every other answer is recorded as a drop with its reason."""
    ok: dict[str, Update] = {}
    for name, a in answers.items():
        if isinstance(a, Update) and np.all(np.isfinite(a.vector)):
            ok[name] = a
        else:
            dropped.setdefault(r, {})[name] = _reason(a)
    participants[r] = sorted(ok)
    return ok


def _reason(answer: Any) -> str:
    if isinstance(answer, Exception):
        return f"{type(answer).__name__}: {str(answer).splitlines()[0] if str(answer) else ''}"
    return f"not a finite parameter vector ({type(answer).__name__})"
