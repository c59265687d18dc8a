"""User-level differential privacy of a federation: Gaussian noise and its accountant (OpenDP).

Each round a tenant releases one vector whose dependence on any single user is bounded in L2
norm by a sensitivity ``C`` (round 0: the moments, later rounds: the clipped sum of per-user
gradients).  The tenant adds Gaussian noise of standard deviation ``z * C`` itself, through
OpenDP's Gaussian mechanism, before anything leaves its data dir, so no party (the
coordinator included) sees an un-noised vector.  Each release is ``1 / (2 z^2)``-zCDP in that
user; the releases compose (zCDP adds up), converted to ``(epsilon, delta)``-DP by OpenDP's
conversion (Canonne, Kamath and Steinke, 2020).  The multipliers are the smallest that keep
the whole run within the requested ``(epsilon, delta)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def _dp():
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


def _release(dp, dim: int, scale: float):
    space = (dp.vector_domain(dp.atom_domain(T=float, nan=False), size=dim),
             dp.l2_distance(T=float))
    return dp.m.make_gaussian(*space, scale=scale)


@dataclass(frozen=True)
class GaussianAccountant:
    """Noise multipliers of a run's releases and the privacy they spend together.

    Release 0 (the moments) gets ``first_share`` of the zCDP budget and the ``rounds``
    updates share the rest equally: the moments are one release that every later step
    depends on, the updates are many.

    >>> acc = GaussianAccountant.for_budget(epsilon=4.0, delta=1e-5, rounds=10)
    >>> round(acc.epsilon(), 6) <= 4.0, acc.multipliers[1] > acc.multipliers[0] > 1.0
    (True, True)
    """

    multipliers: tuple[float, ...]  # noise std per unit of sensitivity, per release
    delta: float

    @classmethod
    def for_budget(cls, epsilon: float, delta: float, rounds: int, *,
                   first_share: float = 0.5) -> GaussianAccountant:
        """Multipliers for ``1 + rounds`` releases composing to at most ``(epsilon, delta)``."""
        if not (math.isfinite(epsilon) and epsilon > 0):
            raise ValueError(f"epsilon: expected a finite number > 0, got {epsilon!r}")
        if not (0 < delta < 1):
            raise ValueError(f"delta: expected a number in (0, 1), got {delta!r}")
        if rounds < 1:
            raise ValueError(f"rounds: expected at least 1, got {rounds}")
        if not (0 < first_share < 1):
            raise ValueError(f"first_share: expected a number in (0, 1), got {first_share!r}")

        def run(rho: float) -> GaussianAccountant:
            # zCDP of a Gaussian release with sensitivity 1 and std z is 1 / (2 z^2)
            z0 = math.sqrt(1.0 / (2.0 * first_share * rho))
            z = math.sqrt(rounds / (2.0 * (1.0 - first_share) * rho))
            return cls((z0, *([z] * rounds)), delta)

        lo, hi = 1e-12, 1.0
        while run(hi).epsilon() < epsilon:
            lo, hi = hi, hi * 2.0
            if hi > 1e9:
                raise ValueError(f"epsilon {epsilon} needs no noise at delta {delta}")
        for _ in range(80):  # bisection on the total zCDP: epsilon grows with it
            mid = 0.5 * (lo + hi)
            if run(mid).epsilon() > epsilon:
                hi = mid
            else:
                lo = mid
        return run(lo)

    @property
    def releases(self) -> int:
        return len(self.multipliers)

    def _composed(self):
        dp = _dp()
        return dp, dp.c.make_composition([_release(dp, 1, z) for z in self.multipliers])

    def rho(self) -> float:
        """zCDP of the whole run, composed by OpenDP."""
        _, run = self._composed()
        return float(run.map(1.0))

    def epsilon(self) -> float:
        """The run's epsilon at ``delta`` (OpenDP's zCDP to approximate-DP conversion)."""
        dp, run = self._composed()
        return float(dp.c.make_zCDP_to_approxDP(run).map(1.0).epsilon(self.delta))

    def noised(self, vector: np.ndarray, sensitivity: float, release: int) -> np.ndarray:
        """``vector`` plus Gaussian noise of std ``multipliers[release] * sensitivity``."""
        dp = _dp()
        vector = np.asarray(vector, np.float64)
        mech = _release(dp, len(vector), self.multipliers[release] * sensitivity)
        return np.asarray(mech(vector.tolist()), np.float64)

    def noise_std(self, sensitivity: float, release: int) -> float:
        return self.multipliers[release] * sensitivity
