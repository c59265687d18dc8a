"""Differentially private segment aggregates: sizes and mean features per customer segment.

What is protected: one user, i.e. everything the log holds for one (pseudonymized) user id.
Two data dirs are neighbours when one has an extra user; a release is epsilon-DP under that
add/remove relation (OpenDP's ``symmetric_distance`` of 1).  A person with several user ids
counts as several users.

How (all mechanisms and sensitivities are OpenDP's, ``opendp==0.16``):

- Segments come from a fixed, public rule on the user's *own* features (`SegmentRule`: order
  count and days since the last purchase), not from the learned k-means segments: a learned
  model lets one user move other users between segments, which no per-user bound covers.
  Every segment in `SEGMENTS` is always reported, empty or not, so the list itself leaks
  nothing.  Segments are disjoint, so one user touches one segment (parallel composition).
- Each user's contribution is clamped to public bounds (`BOUNDS`): spend_total to
  [0, 5,000] currency units, order_count to [0, 50] orders, rfm_recency_days to [0, 365]
  days (users without a purchase have no recency; it is not reported for "browsers").
- The query's epsilon is split evenly (`SPLIT`, sequential composition) between the sizes
  and the three feature sums: 1/4 each.  Sizes get the geometric (discrete Laplace)
  mechanism with scale 1 / eps_size; each sum a clamp -> sum -> Laplace chain whose scale
  OpenDP finds by binary search so that its privacy map gives exactly eps_feature (about
  bound / eps_feature; OpenDP accounts for float rounding).  Means are noisy sum / noisy
  size, clamped to the bounds: post-processing, free.
- Noise is drawn by OpenDP from the OS's CSPRNG: releases cannot be seeded or replayed.

The values are the served features at the projector's watermark (deterministic), for every
user still in the state (erased users are gone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from online import catalogue as cat
from online.extras import require

from .budget import PrivacyBudget

__all__ = ["BOUNDS", "SEGMENTS", "SPLIT", "SegmentInputs", "SegmentRule", "release_segments",
           "segment_inputs"]

SEGMENTS = {
    "browsers": "no order yet",
    "new": "one order, within the active window",
    "one_time_lapsed": "one order, longer ago than the active window",
    "repeat_active": "two or more orders, the last within the active window",
    "repeat_lapsed": "two or more orders, the last longer ago than the active window",
}
BOUNDS = {"spend_total": 5_000.0, "order_count": 50.0, "rfm_recency_days": 365.0}
SPLIT = {"size": 0.25, "spend_total": 0.25, "order_count": 0.25, "rfm_recency_days": 0.25}
_NOT_APPLICABLE = {"rfm_recency_days": {"browsers"}}  # no purchase: no recency
_EVAL_CHUNK = 50_000  # users evaluated at once (bounds the object arrays evaluate builds)


@dataclass(frozen=True)
class SegmentRule:
    """The public segmentation: a user's order count and days since their last purchase."""

    active_days: float = 90.0

    def assign(self, orders: np.ndarray, recency_days: np.ndarray) -> np.ndarray:
        """Segment code (index into `SEGMENTS`) per user."""
        active = (recency_days >= 0) & (recency_days <= self.active_days)
        code = np.where(orders >= 2, np.where(active, 3, 4), np.where(active, 1, 2))
        return np.where(orders <= 0, 0, code).astype(np.int8)


@dataclass(frozen=True)
class SegmentInputs:
    """Per-user segment codes and feature values at one time (the data a release reads)."""

    as_of_us: int
    offset: int
    segment: np.ndarray  # int8 code per user
    values: dict[str, np.ndarray] = field(repr=False)  # float64 per user, unclamped

    @property
    def n_users(self) -> int:
        return len(self.segment)


def segment_inputs(state, t_us: int, offset: int, *, rule: SegmentRule | None = None
                   ) -> SegmentInputs:
    """The served values of every user in ``state`` at ``t_us`` (erased rows skipped).

    Call it under the projector's read lock; the release itself needs no lock.
    """
    from online import kernels

    rows = np.fromiter((i for i, u in enumerate(state.users.values) if u is not None),
                       dtype=np.int64)
    cols: dict[str, list[np.ndarray]] = {name: [] for name in BOUNDS}
    if t_us != cat.NO_TS:
        for start in range(0, len(rows), _EVAL_CHUNK):
            served = kernels.evaluate(state, rows[start : start + _EVAL_CHUNK], t_us)
            for name in BOUNDS:
                cols[name].append(np.asarray(served[name], dtype=np.float64))
    else:
        rows = rows[:0]
    values = {n: np.nan_to_num(np.concatenate(c)) if c else np.zeros(0) for n, c in cols.items()}
    segment = (rule or SegmentRule()).assign(values["order_count"], values["rfm_recency_days"])
    return SegmentInputs(int(t_us), int(offset), segment, values)


def release_segments(inputs: SegmentInputs, epsilon: float, *, budget: PrivacyBudget,
                     bounds: dict[str, float] | None = None,
                     split: dict[str, float] | None = None) -> dict[str, Any]:
    """Charge ``epsilon`` to ``budget``, then release noisy sizes and means per segment.

    Raises `BudgetExhausted` (nothing released, nothing spent) when the budget is short.
    """
    bounds = dict(BOUNDS if bounds is None else bounds)
    split = dict(SPLIT if split is None else split)
    if set(split) != {"size", *bounds} or abs(sum(split.values()) - 1.0) > 1e-9:
        raise ValueError(f"split: expected shares of 'size' and {sorted(bounds)} summing to 1, "
                         f"got {split}")
    mechanisms = _Mechanisms(float(epsilon), bounds, split)  # validates before charging
    spent = budget.charge(epsilon, "segments")
    segments = []
    for code, (name, description) in enumerate(SEGMENTS.items()):
        mask = inputs.segment == code
        size = max(mechanisms.size(inputs.values["order_count"][mask]), 0)
        sums: dict[str, float | None] = {}
        means: dict[str, float | None] = {}
        for feature, upper in bounds.items():
            if name in _NOT_APPLICABLE.get(feature, ()):
                sums[feature] = means[feature] = None
                continue
            noisy = mechanisms.sum(feature, inputs.values[feature][mask])
            sums[feature] = noisy
            means[feature] = min(max(noisy / max(size, 1), 0.0), upper)
        segments.append({"segment": name, "description": description, "size": size,
                         "mean": means, "sum": sums})
    return {
        "as_of": cat.iso_utc(inputs.as_of_us) if inputs.as_of_us != cat.NO_TS else None,
        "offset": inputs.offset,
        "epsilon": float(epsilon),
        "segments": segments,
        "privacy": mechanisms.describe() | {"budget": spent},
    }


class _Mechanisms:
    """The OpenDP measurements of one release: sizes and one clamped sum per feature."""

    def __init__(self, epsilon: float, bounds: dict[str, float], split: dict[str, float]) -> None:
        if not np.isfinite(epsilon) or epsilon <= 0:
            raise ValueError(f"epsilon: expected a finite number > 0, got {epsilon!r}")
        smallest = epsilon * min(split.values())
        if smallest <= 0 or not np.isfinite(1.0 / smallest):  # e.g. a denormal epsilon
            raise ValueError(f"epsilon: {epsilon!r} is too small to split over "
                             f"{sorted(split)}")
        self.epsilon, self.bounds, self.split = epsilon, bounds, split
        self.size_epsilon = epsilon * split["size"]
        self.size_scale = 1.0 / self.size_epsilon
        self._size = _size_measurement(self.size_scale)
        self.scales: dict[str, float] = {}
        self._sums = {}
        for feature, upper in bounds.items():
            scale = _sum_scale(float(upper), epsilon * split[feature])
            self.scales[feature] = scale
            self._sums[feature] = _sum_chain(float(upper), scale)
        # OpenDP's own privacy maps, not our arithmetic, vouch for the split
        losses = {"size": self._size.map(1)} | {f: m.map(1) for f, m in self._sums.items()}
        over = {k: v for k, v in losses.items() if v > epsilon * split[k] * (1 + 1e-9)}
        if over:
            raise RuntimeError(f"privacy loss above its share of epsilon={epsilon}: {over}")

    def size(self, values: np.ndarray) -> int:
        """The noisy count of ``values`` (one per user)."""
        return int(self._size(np.ascontiguousarray(values, dtype=np.float64)))

    def sum(self, feature: str, values: np.ndarray) -> float:
        """The noisy sum of ``values`` clamped to the feature's bounds."""
        return float(self._sums[feature](np.ascontiguousarray(values, dtype=np.float64)))

    def describe(self) -> dict[str, Any]:
        return {
            "unit": "user (add or remove one user's events)",
            "composition": "sequential over sizes and feature sums, parallel over segments",
            "size": {"epsilon": self.size_epsilon, "mechanism": "geometric (discrete Laplace)",
                     "sensitivity": 1, "scale": self.size_scale},
            "features": {
                f: {"epsilon": self.epsilon * self.split[f], "mechanism": "Laplace",
                    "bounds": [0.0, self.bounds[f]], "scale": self.scales[f]}
                for f in self.bounds
            },
        }


def _need_opendp() -> None:
    require("opendp", extra="dp", purpose="differentially private aggregates")


def _space():
    _need_opendp()
    from opendp import domains, metrics, mod

    mod.enable_features("contrib")
    return (domains.vector_domain(domains.atom_domain(T=float, nan=False)),
            metrics.symmetric_distance())


@lru_cache(maxsize=256)
def _size_measurement(scale: float):
    """Count the users, add geometric (discrete Laplace) noise of ``scale``."""
    _need_opendp()
    from opendp import measurements as dpm
    from opendp import transformations as dpt

    return _space() >> dpt.then_count() >> dpm.then_geometric(scale=scale)


@lru_cache(maxsize=256)  # measurements are immutable and hold no data: safe to share
def _sum_chain(upper: float, scale: float):
    """Clamp each user's value to [0, upper], sum, add Laplace(scale) noise."""
    _need_opendp()
    from opendp import measurements as dpm
    from opendp import transformations as dpt

    return _space() >> dpt.then_clamp((0.0, upper)) >> dpt.then_sum() >> dpm.then_laplace(
        scale=scale)


@lru_cache(maxsize=256)
def _sum_scale(upper: float, epsilon: float) -> float:
    """The smallest Laplace scale whose clamped sum is ``epsilon``-DP (OpenDP's search)."""
    _need_opendp()
    from opendp import mod

    return mod.binary_search_param(lambda s: _sum_chain(upper, s), d_in=1, d_out=epsilon)
