"""Segment learning on user snapshots taken at one time, the way users are assigned later.

Centroids learnt from a user's features at their own events see recency near 0 (a user who
just bought was seen just now), while a profile assigns every user at the present, where
most have lapsed: the learnt centroids then describe nobody (silhouette 0.12 vs 0.27 for a
batch k-means on a shop log in customer order; every centroid at recency 0). So the segments
learn from the same kind of snapshot they assign: a uniform sample of users (a stable hash
of the stored id keeps `share` of them; beyond `max_users`, the ones with the smallest hashes,
a bottom-k sample, so early users are not favoured), each with their newest stored row,
all evaluated at one time whenever event time enters a new period (a UTC day by default).
Lapsed users stay in the sample with their recency growing, as they would be assigned.

A period starts when the watermark (the running maximum of effective times, in log order)
enters it, at the event that moves it there; the snapshot is taken at the period's start from
the rows of the events before that one. So where a batch starts or ends has no effect and a
replay learns exactly what the live projector learnt.
"""

from __future__ import annotations

import hashlib
import heapq
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
        Share of users sampled (by a hash of the stored id).
    max_users
        Bound of the sample: the users with the smallest hashes are kept.
    period_us
        A snapshot is learnt each time event time enters a new period of this length.
    refresh_every
        Also learn a snapshot (at the watermark) once this many users joined the sample
        since the last one (or a tenth of the sample, if more): a log in customer order
        reaches the newest event time with its first customers, so periods alone would stop
        the learning there; in a log in time order few users are new each period.
    """

    def __init__(self, inputs: Sequence[str], *, share: float = 1.0, max_users: int = 3_000,
                 period_us: int = DAY_US, refresh_every: int = 100) -> None:
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
            needed.add(cat.feature(name).stored_column)
        self.stored_names = tuple(sorted(needed))
        self._rows: dict[str, tuple] = {}  # stored id -> its newest stored values
        self._hash: dict[str, int] = {}  # stored id -> its 64-bit hash (seen users)
        self._largest: list[tuple[int, str]] = []  # max-heap (-hash, id) of the sample
        self._threshold = int(share * 2**64)
        self._watermark = cat.NO_TS
        self._n_snapshots = 0
        self._updates = 0  # users added to the sample since the last snapshot

    def _sampled(self, user: str) -> bool:
        h = self._hash.get(user)
        if h is None:
            h = int.from_bytes(hashlib.blake2b(user.encode(), digest_size=8).digest(), "big")
            self._hash[user] = h
        return h < self._threshold

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
        ids = users.tolist()
        picked = [i for i, u in enumerate(ids) if self._sampled(u)]
        # the picked events' rows as tuples of Python scalars, made once per batch
        at_picked = np.asarray(picked, np.int64)
        values = list(zip(*(np.asarray(rows[n])[at_picked].tolist()
                            for n in self.stored_names), strict=True))
        learnt, at = 0, 0
        for boundary in [*starts.tolist(), len(eff)]:
            while at < len(picked) and picked[at] < boundary:
                i = picked[at]
                self._keep(ids[i], values[at])
                at += 1
                if self._updates >= max(self.refresh_every, len(self._rows) // 10):
                    self._learn(segments, int(running[i]))
                    learnt += 1
            if boundary < len(eff):
                self._learn(segments, int(running[boundary] // period * period))
                learnt += 1
        self._watermark = int(running[-1])
        return learnt

    def _keep(self, user: str, values: tuple) -> None:
        if user not in self._rows:
            heapq.heappush(self._largest, (-self._hash[user], user))
            self._updates += 1
        self._rows[user] = values
        if len(self._rows) > self.max_users:  # bottom-k: the largest hash leaves for good
            h, out = heapq.heappop(self._largest)
            del self._rows[out]
            self._threshold = -h

    def _learn(self, segments: UserSegments, t_us: int) -> None:
        if not self._rows:
            return
        # Users in a fixed order (by id), so the k-means sees the same sequence on replay.
        rows = self._rows
        columns = zip(*(rows[u] for u in sorted(rows)), strict=True)
        stored = {n: np.array(c) for n, c in zip(self.stored_names, columns, strict=True)}
        served = kernels.evaluate_stored(stored, np.int64(t_us), names=self.inputs)
        X = np.column_stack([np.asarray(served[n], np.float64) for n in self.inputs])
        segments.learn_snapshot(X, self.inputs)
        self._n_snapshots += 1
        self._updates = 0

    def erase_user(self, user: str) -> bool:
        """Forget `user`'s row and sampling mark (erasure); whether they were sampled."""
        self._hash.pop(user, None)
        if self._rows.pop(user, None) is None:
            return False
        self._largest = [(h, u) for h, u in self._largest if u != user]
        heapq.heapify(self._largest)
        return True

    def stats(self) -> dict:
        return {"sampled_users": len(self._rows), "snapshots": self._n_snapshots}
