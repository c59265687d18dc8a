"""Segment learning on user snapshots taken at one time, the way users are assigned later.

Centroids learnt from a user's features at their own events see recency near 0 (a user who
just bought was seen just now), while a profile assigns every user at the present, where
most have lapsed: the learnt centroids then describe nobody (silhouette 0.12 vs 0.27 for a
batch k-means on a shop log in customer order; every centroid at recency 0). So the segments
learn from the same kind of snapshot they assign: a fixed sample of users (a stable hash of
the stored id keeps `share` of them, at most `max_users`), each with their newest stored row,
all evaluated at one time whenever event time enters a new period (a UTC day by default).
Lapsed users stay in the sample with their recency growing, as they would be assigned.

A period starts when the watermark (the running maximum of effective times, in log order)
enters it, at the event that moves it there; the snapshot is taken at the period's start from
the rows of the events before that one. So where a batch starts or ends has no effect and a
replay learns exactly what the live projector learnt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from online import catalogue as cat
from online import kernels

from .propensity import DAY_US
from .segments import UserSegments

__all__ = ["SegmentSnapshots"]


class SegmentSnapshots:
    """Feeds `UserSegments` one snapshot of sampled users per period of event time.

    Parameters
    ----------
    inputs
        The served features the segments read (catalogue names).
    share
        Share of users sampled (by a hash of the stored id, so a user is in or out for good).
    max_users
        Bound of the sample: users beyond it are not added.
    period_us
        A snapshot is learnt each time event time enters a new period of this length.
    refresh_every
        Also learn a snapshot (at the watermark) after this many updates of sampled users'
        rows without a new period: a log in customer order reaches the newest event time with
        its first customers, so periods alone would stop the learning there.
    """

    def __init__(self, inputs: Sequence[str], *, share: float = 0.2, max_users: int = 5_000,
                 period_us: int = DAY_US, refresh_every: int = 1_000) -> None:
        if not 0.0 < share <= 1.0 or max_users < 1 or period_us < 1:
            raise ValueError(f"need 0 < share <= 1, max_users >= 1, period_us >= 1; got "
                             f"{share}, {max_users}, {period_us}")
        self.inputs = tuple(inputs)
        self.share = share
        self.max_users = max_users
        self.period_us = period_us
        self.refresh_every = refresh_every
        needed = {"last_event_ts"}
        for name in self.inputs:
            f = cat.feature(name)
            needed.add(f.source if f.kind == "since" else name)
        self.stored_names = tuple(sorted(needed))
        self._rows: dict[str, tuple] = {}  # stored id -> its newest stored values
        self._in: dict[str, bool] = {}
        self._watermark = cat.NO_TS
        self._n_snapshots = 0
        self._updates = 0  # sampled rows updated since the last snapshot

    def _sampled(self, user: str) -> bool:
        known = self._in.get(user)
        if known is None:
            h = hashlib.blake2b(user.encode(), digest_size=8).digest()
            known = int.from_bytes(h, "big") < self.share * 2**64
            self._in[user] = known
        return known

    def observe_many(self, segments: UserSegments, users, eff_ts: np.ndarray,
                     rows: dict[str, np.ndarray]) -> int:
        """One batch in log order: keep sampled users' rows, learn at each new period.

        ``rows`` are the projector's per-event stored rows. Returns snapshots learnt.
        """
        users = np.asarray(users)
        eff = np.asarray(eff_ts, np.int64)
        if len(eff) == 0:
            return 0
        running = np.maximum.accumulate(np.maximum(eff, self._watermark))
        previous = np.r_[self._watermark, running[:-1]]
        period = self.period_us
        starts = np.flatnonzero((running // period > previous // period)
                                & (previous != cat.NO_TS))
        picked = [i for i, u in enumerate(users.tolist()) if self._sampled(u)]
        columns = [np.asarray(rows[n]) for n in self.stored_names]
        learnt, at = 0, 0
        for boundary in [*starts.tolist(), len(eff)]:
            while at < len(picked) and picked[at] < boundary:
                i = picked[at]
                self._keep(users[i], tuple(c[i] for c in columns))
                at += 1
                self._updates += 1
                if self._updates >= self.refresh_every:
                    self._learn(segments, int(running[i]))
                    learnt += 1
            if boundary < len(eff):
                self._learn(segments, int(running[boundary] // period * period))
                learnt += 1
        self._watermark = int(running[-1])
        return learnt

    def _keep(self, user: str, values: tuple) -> None:
        if user in self._rows or len(self._rows) < self.max_users:
            self._rows[user] = values

    def _learn(self, segments: UserSegments, t_us: int) -> None:
        if not self._rows:
            return
        # Users in a fixed order (by id), so the k-means sees the same sequence on replay.
        ordered = [self._rows[u] for u in sorted(self._rows)]
        stored = {n: np.array([r[j] for r in ordered])
                  for j, n in enumerate(self.stored_names)}
        served = kernels.evaluate_stored(stored, np.int64(t_us), names=self.inputs)
        X = np.column_stack([np.asarray(served[n], np.float64) for n in self.inputs])
        segments.learn_snapshot(X, self.inputs)
        self._n_snapshots += 1
        self._updates = 0

    def erase_user(self, user: str) -> bool:
        """Forget `user`'s row and sampling mark (erasure); whether they were sampled."""
        self._in.pop(user, None)
        return self._rows.pop(user, None) is not None

    def stats(self) -> dict:
        return {"sampled_users": len(self._rows), "snapshots": self._n_snapshots}
