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
        # The sample's newest stored rows by column: user -> slot, one array per stored name.
        self._slot: dict[str, int] = {}
        self._columns: dict[str, np.ndarray] = {}
        self._free: list[int] = []  # slots of users who left the sample, to reuse
        self._order: tuple[list[str], np.ndarray] | None = None  # users by id, their slots
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

        ``rows`` are the projector's per-event stored rows. Returns snapshots learnt. Only
        the users who join or leave the sample are handled event by event; the rows are
        written by column (each user's last event before a snapshot) when one is learnt and
        at the end of the batch.
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
        # in event order: `_hash` (pickled with checkpoints) fills the same way in every process
        sampled = {u: self._sampled(u) for u in dict.fromkeys(ids)}
        slot = self._slot
        at: list[int] = []  # events of sampled users, and the slot each one's row goes to
        to: list[int] = []
        left: list[int] = []  # slots freed in this batch: reused only after its rows land
        learnt, written, boundaries = 0, 0, [*starts.tolist(), len(eff)]
        b = 0
        for i, u in enumerate(ids):
            while i >= boundaries[b]:  # a period starts at event i: learn what came before
                written = self._write(rows, at, to, written)
                self._learn(segments, int(running[i] // period * period))
                learnt += 1
                b += 1
            if not sampled[u]:
                continue
            s = slot.get(u)
            if s is None:
                if self._hash[u] >= self._threshold:  # left the sample earlier in the batch
                    continue
                s = self._join(u, left)
                if s >= 0:  # (else its hash is the sample's largest: it left at once)
                    at.append(i)
                    to.append(s)
                if self._updates >= max(self.refresh_every, len(slot) // 10):
                    written = self._write(rows, at, to, written)
                    self._learn(segments, int(running[i]))
                    learnt += 1
                continue
            at.append(i)
            to.append(s)
        self._write(rows, at, to, written)
        self._free += left
        self._watermark = int(running[-1])
        return learnt

    def _join(self, user: str, left: list[int]) -> int:
        """Add `user` to the sample; its slot, or -1 when it is the one that leaves."""
        heapq.heappush(self._largest, (-self._hash[user], user))
        self._updates += 1
        self._order = None
        out = None
        if len(self._slot) + 1 > self.max_users:  # bottom-k: the largest hash leaves for good
            h, out = heapq.heappop(self._largest)
            self._threshold = -h
            if out == user:
                return -1
            left.append(self._slot.pop(out))
        s = self._free.pop() if self._free else len(self._slot) + len(left)
        self._slot[user] = s
        return s

    def _write(self, rows: dict[str, np.ndarray], at: list[int], to: list[int],
               written: int) -> int:
        """Write the rows of events ``at[written:]`` into their slots (a slot's last event
        wins); how many are written."""
        if written == len(at):
            return written
        pos = np.asarray(at[written:], np.int64)
        slots = np.asarray(to[written:], np.int64)
        # the last event of each slot: the first one in reverse order
        slots, first = np.unique(slots[::-1], return_index=True)
        pos = pos[::-1][first]
        size = int(slots[-1]) + 1
        for name in self.stored_names:
            values = np.asarray(rows[name])
            column = self._columns.get(name)
            if column is None or len(column) < size:
                grown = np.zeros(max(size, 2 * (0 if column is None else len(column)), 64),
                                 values.dtype)
                if column is not None:
                    grown[:len(column)] = column
                column = self._columns[name] = grown
            column[slots] = values[pos]
        return len(at)

    def _learn(self, segments: UserSegments, t_us: int) -> None:
        if not self._slot:
            return
        # Users in a fixed order (by id), so the k-means sees the same sequence on replay.
        if self._order is None:
            order = sorted(self._slot)
            self._order = order, np.array([self._slot[u] for u in order], np.int64)
        slots = self._order[1]
        stored = {n: self._columns[n][slots] for n in self.stored_names}
        served = kernels.evaluate_stored(stored, np.int64(t_us), names=self.inputs)
        X = np.column_stack([np.asarray(served[n], np.float64) for n in self.inputs])
        segments.learn_snapshot(X, self.inputs)
        self._n_snapshots += 1
        self._updates = 0

    def erase_user(self, user: str) -> bool:
        """Forget `user`'s row and sampling mark (erasure); whether they were sampled."""
        self._hash.pop(user, None)
        s = self._slot.pop(user, None)
        if s is None:
            return False
        for column in self._columns.values():
            column[s] = 0  # no value of theirs stays in the arrays
        self._free.append(s)
        self._order = None
        self._largest = [(h, u) for h, u in self._largest if u != user]
        heapq.heapify(self._largest)
        return True

    def stats(self) -> dict:
        return {"sampled_users": len(self._slot), "snapshots": self._n_snapshots}
