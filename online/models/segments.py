"""Behavioural segments: River's k-means over scaled RFM features, with a label in words."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from river import base, cluster, preprocessing

from online.kernels.signed import signed_log_rows

from .kmeans import choose, kmeans_pp, lloyd, matching
from .propensity import DAY_US
from .questions import _as_list
from .segment_labels import segment_labels

__all__ = ["UserSegments", "RFM"]

# Integer keys, not names: River's KMeans sums distances over a set of keys, and a set of small
# ints iterates in the same order in every process, where a set of str depends on PYTHONHASHSEED.
RFM = ("recency", "frequency", "monetary", "avg_order_value")


class UserSegments(base.Clusterer):
    """Which kind of customer a user is, from recency, frequency and spend.

    A user's served features become four RFM values: recency in days since the last purchase
    (capped at `recency_cap_days`; a missing, non-finite or negative recency, the catalogue's
    -1.0 for "no purchase yet", counts as the cap), order count, total spend and average order
    value (the `avg_order_value` feature, or spend / count when that is None). All four have
    heavy tails, so each is `log1p`-transformed, then standardised by a River `StandardScaler`
    and clustered by River's `cluster.KMeans`. The defaults are the catalogue's RFM names.

    `observe` learns from a user at most once per `period_us` of event time (one calendar
    bucket `t_us // period_us`, default a UTC day), so a heavy user does not pull every
    centroid towards themselves; the set of users seen in the current bucket is all the state
    this needs, and it is emptied when the bucket changes.

    A segment's label puts its centroid next to the global mean (0 in standardised space):
    a coordinate at least `label_threshold` standard deviations away earns a word, e.g.
    "frequent, high spend, recent"; a centroid near the mean on every axis is "average"; one
    whose random (seeded) start still weighs 5% or more of its position is "unformed".

    Parameters
    ----------
    recency
        Feature holding the time since the last purchase (times `recency_days_per_unit`: days).
    frequency
        Feature holding the number of orders.
    monetary
        Feature holding the total spend.
    avg_order_value
        Feature holding the average order value; None computes monetary / frequency.
    n_clusters
        Number of segments (k).
    halflife
        How far a centroid moves towards each example (River's KMeans `halflife`).
    seed
        Seed of the initial centroid positions.
    period_us
        A user contributes at most one example per period of event time.
    recency_days_per_unit
        Days per unit of the recency feature: 1.0 for days, 1 / 86400 for seconds.
    recency_cap_days
        Recency above this, missing or not finite, counts as this many days.
    label_threshold
        Standard deviations from the mean a centroid needs to earn a word.
    fresh_starts
        k-means++ restarts tried on each snapshot beside the warm start (`learn_snapshot`).
        Each snapshot starts from the last one's centres too, so restarts accumulate over
        snapshots: with 3 instead of a batch k-means's usual 10, `bench/quality.py --quick`
        moved no shape's silhouette by more than 0.009 (all within 0.03 of a batch k-means
        with 10, most above it) and the segments took a third of the time.
    inertia_tolerance
        Candidates whose inertia is within this share of the lowest count as fitting equally
        well; the best separated of them is kept (`kmeans.choose`). 0 keeps the lowest.

    Examples
    --------

    >>> segments = UserSegments(n_clusters=2, seed=1, avg_order_value=None)
    >>> for i in range(40):
    ...     loyal = {"rfm_recency_days": 2.0, "rfm_frequency": 30 + i % 3, "rfm_monetary": 3e3}
    ...     lapsed = {"rfm_recency_days": 300.0, "rfm_frequency": 1, "rfm_monetary": 20 + i % 2}
    ...     _ = segments.observe("loyal", i * DAY_US, loyal)
    ...     _ = segments.observe("lapsed", i * DAY_US, lapsed)
    >>> for s in (segments.segment(loyal), segments.segment(lapsed)):
    ...     print(s["id"], s["label"])
    0 frequent, high spend, recent, large baskets
    1 occasional, low spend, lapsed, small baskets

    """

    def __init__(
        self,
        recency: str = "rfm_recency_days",
        frequency: str = "rfm_frequency",
        monetary: str = "rfm_monetary",
        avg_order_value: str | None = "avg_order_value",
        n_clusters: int = 5,
        halflife: float = 0.1,
        seed: int = 42,
        period_us: int = DAY_US,
        recency_days_per_unit: float = 1.0,
        recency_cap_days: float = 365.0,
        label_threshold: float = 0.5,
        fresh_starts: int = 3,
        inertia_tolerance: float = 0.02,
    ):
        if (n_clusters < 1 or period_us < 1 or recency_days_per_unit <= 0
                or not inertia_tolerance >= 0):
            raise ValueError("need n_clusters >= 1, period_us >= 1, recency_days_per_unit > 0, "
                             f"inertia_tolerance >= 0; got {n_clusters}, {period_us}, "
                             f"{recency_days_per_unit}, {inertia_tolerance}")
        self.recency = recency
        self.frequency = frequency
        self.monetary = monetary
        self.avg_order_value = avg_order_value
        self.n_clusters = n_clusters
        self.halflife = halflife
        self.seed = seed
        self.period_us = period_us
        self.recency_days_per_unit = recency_days_per_unit
        self.recency_cap_days = recency_cap_days
        self.label_threshold = label_threshold
        self.fresh_starts = fresh_starts
        self.inertia_tolerance = inertia_tolerance

        self._scaler = preprocessing.StandardScaler()
        self._kmeans = cluster.KMeans(n_clusters=n_clusters, halflife=halflife, seed=seed)
        # Draw every initial coordinate now, in a fixed order: River's centres are defaultdicts
        # that draw on first read (predict_one would mutate the model).
        for c in range(n_clusters):
            for d in range(len(RFM)):
                self._kmeans.centers[c][d]
        self._sizes = [0] * n_clusters
        self._n_snapshots = 0
        self._n_reseeded = 0
        self._bucket = -(2**63)
        self._seen: set[str] = set()
        self._labels: list[str] | None = None  # every label, until the centres change

    def __getstate__(self) -> dict:  # labels derive from the centres: rebuilt on first read
        return {**self.__dict__, "_labels": None}

    # -- features ----------------------------------------------------------------------------

    def rfm(self, x: dict) -> dict[int, float]:
        """log1p of (recency days, frequency, monetary, average order value), keyed 0..3."""
        cap = self.recency_cap_days
        recency = _finite(x.get(self.recency))
        if recency is None or recency < 0:
            days = cap
        else:
            days = min(recency * self.recency_days_per_unit, cap)
        freq = max(_finite(x.get(self.frequency)) or 0.0, 0.0)
        spend = max(_finite(x.get(self.monetary)) or 0.0, 0.0)
        if self.avg_order_value is None:
            aov = spend / freq if freq > 0 else 0.0
        else:
            aov = max(_finite(x.get(self.avg_order_value)) or 0.0, 0.0)
        return {0: math.log1p(days), 1: math.log1p(freq), 2: math.log1p(spend), 3: math.log1p(aov)}

    def rfm_many(self, X, columns: Sequence[str]) -> np.ndarray:
        """`rfm` of each row of `X` (columns named by `columns`) as an (n, 4) array.

        The same values as `rfm` row by row, bit for bit: the rules run by column, and the
        logarithm is the C library's ``log1p`` on each value, as `math.log1p` (numpy's may
        differ in the last bit), compiled (`signed_log_rows`: every value here is >= 0).
        """
        A = np.asarray(X, dtype=np.float64)  # None -> NaN, which `rfm` treats alike
        if A.ndim != 2 or A.shape[1] != len(columns):
            raise ValueError(f"X must have shape (n_rows, {len(columns)}), got {A.shape}")
        position = {c: i for i, c in enumerate(columns)}

        def column(name: str) -> np.ndarray:
            return A[:, position[name]]

        def non_negative(v: np.ndarray) -> np.ndarray:  # max(finite or 0, 0)
            return np.where(np.isfinite(v) & (v > 0), v, 0.0)

        cap = self.recency_cap_days
        recency = column(self.recency)
        out = np.empty((len(A), len(RFM)))
        with np.errstate(all="ignore"):  # inf/NaN products are masked out below
            days = np.minimum(recency * self.recency_days_per_unit, cap)
            out[:, 0] = np.where(np.isfinite(recency) & (recency >= 0), days, cap)
            out[:, 1] = freq = non_negative(column(self.frequency))
            out[:, 2] = spend = non_negative(column(self.monetary))
            if self.avg_order_value is None:
                out[:, 3] = np.where(freq > 0, spend / np.where(freq > 0, freq, 1.0), 0.0)
            else:
                out[:, 3] = non_negative(column(self.avg_order_value))
        if np.isfinite(out).all():  # compiled, the C library's log1p as math's (a test)
            return signed_log_rows(out, 0.0)
        flat = list(map(math.log1p, out.ravel().tolist()))
        return np.array(flat, dtype=np.float64).reshape(out.shape)

    def _standardised(self, x: dict) -> dict[int, float]:
        return self._scaler.transform_one(self.rfm(x))

    # -- learning ----------------------------------------------------------------------------

    def learn_one(self, x: dict) -> None:
        """Learn from one user snapshot now, with no rate control."""
        r = self.rfm(x)
        self._scaler.learn_one(r)
        z = self._scaler.transform_one(r)
        self._sizes[self._kmeans.learn_predict_one(z)] += 1
        self._labels = None

    def learn_snapshot(self, X, columns: Sequence[str], iterations: int = 50) -> None:
        """Learn from many users' features taken at one time (`SegmentSnapshots`).

        The rows are standardised by their own mean and deviation (the population as it is
        at that time, the one profiles are assigned in; the centres are re-expressed in the
        new units), then `iterations` k-means (Lloyd) steps start from the current centres:
        batch k-means on each snapshot, warm-started from the previous one, so a segment
        keeps its id from one snapshot to the next. (Moving the centres only part of the way,
        or fewer steps, gave silhouettes 0.03-0.07 below a batch k-means on Online Retail.)
        A centre that no row is nearest to is re-seeded on the row farthest from every
        centre (`stats()["reseeded"]`). Fresh k-means++ starts run too; of all these candidates
        `kmeans.choose` keeps the best separated of those within `inertia_tolerance` of the
        lowest inertia (the warm start on a tie). Sizes become this snapshot's.
        """
        if not len(X):
            return
        R = self.rfm_many(X, columns)
        centers = self._kmeans.centers
        C = np.array([[centers[c][k] for k in range(len(RFM))] for c in range(self.n_clusters)])
        sc, dims = self._scaler, range(len(RFM))
        if self._n_snapshots:
            old_mean = np.array([sc.means[k] for k in dims])
            old_std = np.array([math.sqrt(sc.vars[k]) or 1.0 for k in dims])
            C = C * old_std + old_mean
        mean, var = R.mean(axis=0), R.var(axis=0)
        for k in dims:
            sc.counts[k], sc.means[k], sc.vars[k] = len(R), float(mean[k]), float(var[k])
        std = np.sqrt(var)
        std[std == 0] = 1.0
        if self._n_snapshots:
            C = (C - mean) / std
        Z = (R - mean) / std
        warm, reseeded = lloyd(Z, C.copy(), iterations)
        # Fresh k-means++ starts too (seeded by the snapshot count: replays agree); a fresh
        # one kept has its centres matched to the current ones so that ids stay.
        rng = np.random.default_rng((self.seed, self._n_snapshots))
        candidates = [warm] + [lloyd(Z, kmeans_pp(Z, self.n_clusters, rng), iterations)[0]
                               for _ in range(self.fresh_starts)]
        kept = choose(Z, candidates, self.inertia_tolerance)
        if kept:
            C = candidates[kept][matching(C, candidates[kept])]
        else:
            C = warm
            self._n_reseeded += reseeded
        nearest = ((Z[:, None, :] - C[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
        for c in range(self.n_clusters):
            for k in range(len(RFM)):
                centers[c][k] = float(C[c, k])
        self._sizes = np.bincount(nearest, minlength=self.n_clusters).tolist()
        self._n_snapshots += 1
        self._labels = None

    def observe(self, user: str, t_us: int, x: dict) -> bool:
        """Learn from `user`'s snapshot unless they already contributed in this period."""
        if self._admit(user, t_us):
            self.learn_one(x)
            return True
        return False

    def observe_many(self, users, t_us, X, columns: Sequence[str]) -> list[bool]:
        """`observe` for each row of `X`, a 2-D array whose columns are named by `columns`."""
        shape = getattr(X, "shape", None)
        if shape is not None and (len(shape) != 2 or shape[1] != len(columns)):
            raise ValueError(f"X must have shape (n_events, {len(columns)}), got {tuple(shape)}")
        ts = _as_list(t_us)
        if not len(users) == len(ts) == len(X):
            raise ValueError(
                f"users, t_us and X must have one entry per event; got lengths "
                f"{len(users)}, {len(ts)}, {len(X)}"
            )
        position = {c: i for i, c in enumerate(columns)}
        wanted = [(n, position[n]) for n in self.inputs if n in position]
        out = []
        # Rows are read only for the events admitted (one per user and period).
        for i, (user, t) in enumerate(zip(users, ts, strict=True)):
            admitted = self._admit(user, t)
            if admitted:
                row = X[i]
                self.learn_one({n: row[j] for n, j in wanted})
            out.append(admitted)
        return out

    @property
    def inputs(self) -> tuple[str, ...]:
        """The feature names this model reads."""
        names = (self.recency, self.frequency, self.monetary, self.avg_order_value)
        return tuple(n for n in names if n is not None)

    def _admit(self, user: str, t_us: int) -> bool:
        """Whether `user` may contribute at `t_us` (and, if so, count them in)."""
        bucket = t_us // self.period_us
        if bucket > self._bucket:
            self._bucket = bucket
            self._seen = set()
        # An older time counts against the current period: a function of the event sequence.
        if user in self._seen:
            return False
        self._seen.add(user)
        return True

    def erase_user(self, user: str) -> bool:
        """Forget that `user` contributed in the current period (erasure); whether they had.

        Centroids and scaling statistics are aggregates over many users and stay.
        """
        if user in self._seen:
            self._seen.discard(user)
            return True
        return False

    # -- assignment (pure) -------------------------------------------------------------------

    def _nearest(self, z: dict[int, float]) -> tuple[int, float]:
        # The same sum, in the same key order, as KMeans.predict_one with p=2; first minimum
        # wins, as in min().
        best, best_d = 0, math.inf
        for c, center in self._kmeans.centers.items():
            d = sum((center[k] - z[k]) ** 2 for k in range(len(RFM)))
            if d < best_d:
                best, best_d = c, d
        return best, best_d

    def predict_one(self, x: dict) -> int:
        """The segment id of features `x`; learns nothing, mutates nothing."""
        return self._nearest(self._standardised(x))[0]

    def segment(self, x: dict) -> dict:
        """{"id", "label", "centroid_distance"} for features `x` (distance in standard units)."""
        c, d2 = self._nearest(self._standardised(x))
        return {"id": c, "label": self.label(c), "centroid_distance": math.sqrt(d2)}

    # -- description -------------------------------------------------------------------------

    def centroid(self, c: int) -> dict[str, float]:
        """Segment `c`'s centre in standard deviations from the mean, per RFM axis."""
        center = self._kmeans.centers[c]
        return {name: center[k] for k, name in enumerate(RFM)}

    def label(self, c: int) -> str:
        """Segment `c` in words, from its centroid relative to the global means.

        Labels are distinct: where two segments would read the same, each gets the word of
        its next most distinctive axis (even below the threshold), and where the words of
        all four axes are still the same, its rank on the axis where they differ most
        ("frequent, high spend (spend rank 1 of 2)"). Built once per change of the centres.
        """
        return self._all_labels()[c]

    def _formed(self, c: int) -> bool:
        if self._n_snapshots:
            return self._sizes[c] > 0
        # Each example moves a centre by `halflife`, so its seeded random start still weighs
        # (1 - halflife) ** size; below 5% the centre speaks for the data.
        return (1.0 - self.halflife) ** self._sizes[c] < 0.05

    def _all_labels(self) -> list[str]:
        labels = self.__dict__.get("_labels")  # absent in pickles older than the cache
        if labels is None:
            labels = self._labels = self._build_labels()
        return labels

    def _build_labels(self) -> list[str]:
        centers = [self._kmeans.centers[c] for c in range(self.n_clusters)]
        formed = [self._formed(c) for c in range(self.n_clusters)]
        return segment_labels(centers, formed, self.label_threshold)

    def describe(self) -> list[dict]:
        """Every segment: id, label, size (examples learnt) and centroid."""
        labels = self._all_labels()
        return [
            {"id": c, "label": labels[c], "size": self._sizes[c], "centroid": self.centroid(c),
             "empty": self._n_snapshots > 0 and self._sizes[c] == 0}
            for c in range(self.n_clusters)
        ]

    def stats(self) -> dict:
        """Snapshots learnt, centres re-seeded (a segment that had no users) and empty ones."""
        return {"snapshots": self._n_snapshots, "reseeded": self._n_reseeded,
                "empty": sum(1 for s in self._sizes if s == 0) if self._n_snapshots else 0}


def _finite(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None
