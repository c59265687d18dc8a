"""Purchase propensity: the probability that a user buys within a horizon after an event.

Labels arrive late, the way `river.stream.simulate_qa` replays them: the prediction made at an
event (user, t, x) is a question whose answer is known only when the user purchases in
(t, t + horizon] (positive) or when event time passes t + horizon without one (negative). Until
then the question waits in a bounded pending queue with x as it was at t; the model learns from
that x, and only once the answer is known. Nothing here reads a clock: "now" is the watermark,
the newest event time seen, so the same event sequence always gives the same model.
"""

from __future__ import annotations

import copy
import heapq
import math
import operator
from array import array
from collections import deque

from river import base, linear_model, preprocessing

from online.clock import DAY_US, HOUR_US

from . import explain
from .drift import ErrorDrift

__all__ = ["PurchasePropensity", "DAY_US", "HOUR_US"]

_NEVER = -(2**63)


class PurchasePropensity(base.Estimator):
    """P(purchase in (t, t + horizon]) for a user's event at t, learnt from delayed labels.

    Per event, `observe` (1) moves the watermark to t and learns every pending prediction whose
    horizon has passed (t_pred + horizon < watermark), in order of expiry, with its answer:
    yes if the user purchased in its window, else no; (2) if the event is a purchase, answers
    yes to the user's pending predictions made strictly before t (learnt at once with
    ``reveal="answer"``, at the window's end by default); (3) predicts for x and (4) registers
    that prediction as pending. Steps 1-2 reveal answers before the new question is asked, as
    `simulate_qa` does, so the score returned at t has learnt from nothing later than t.

    What is held back, and why:

    - Heavy users: a user holds one question per `min_spacing_us` window (default one hour,
      roughly one example per session), otherwise a user with 1,000 events a day would be
      1,000 near-identical examples. The question is a uniform draw among the window's events
      (a reservoir of one, drawn from a counter, so replays agree), not its first event: the
      first event of a session has no cart yet, and a model that only ever learns at session
      starts never learns what a cart means (AUC 0.73 vs 0.84 on a synthetic funnel).
    - Memory: at most `max_pending` open predictions (each ~0.4 KB plus 8 bytes a feature);
      when full, the one closest to expiry is dropped unlearnt (`stats()["n_dropped"]`).
      Those are the likeliest negatives, so drops bias the model upwards: size the bound
      above the questions held per horizon (`stats()["pending"]` in steady state).
    - Logs not in time order across users (an export listed customer by customer, a late
      delivery): the watermark can be far ahead of a user's own clock. A question is then
      still held (`n_late` counts them), and it is answered by the user's own events: one
      at t' > t + horizon without a purchase before it is a negative (effective times never
      decrease per user, so nothing can land in the window any more), a purchase in the
      window a positive. A question already behind the watermark is a negative once the log
      moves on to another user's event (the user is not coming back within the window). In
      a log in time order both rules find nothing the watermark has not already settled.

    Missing features and non-finite values (NaN, inf, None) read as `fill_value`; held values
    are stored as float64. Times are the projector's effective event times (µs), which never
    decrease per user; an older time for a user is scored but not held.

    Parameters
    ----------
    features
        Names read from each `x`, in this order; other keys are ignored, so the order of keys
        in `x` has no effect.
    model
        A River binary classifier; learns in place. None means
        `preprocessing.StandardScaler() | linear_model.LogisticRegression()`.
    horizon_us
        Label horizon H in µs (default 7 days).
    min_spacing_us
        Minimum event-time gap between two pending predictions of one user (default 1 hour).
    max_pending
        Bound of the pending queue.
    fill_value
        Value of a missing or non-finite feature.
    drift
        Monitor fed with |y - p| of every resolved prediction; None means `ErrorDrift()`.
    reveal
        When an answered question is learnt. ``"window_end"`` (default): at the end of its
        window (t + horizon, or when the user's own clock passes it), positives and negatives
        alike, as `simulate_qa` with a fixed delay. ``"answer"``: a positive as soon as the
        purchase comes. Learning positives early means that until one horizon of event time
        has passed the model has seen only positives (negatives take a whole horizon to be
        known): on a fresh log its scores start far above the base rate (log loss 0.84 vs
        0.57 for the base rate in the first fifth of a 60-day synthetic log at 7 days).

    Examples
    --------

    >>> model = PurchasePropensity(features=("carts",), horizon_us=10)
    >>> model.observe("ann", 0, {"carts": 1.0})
    0.5
    >>> model.observe("bob", 1, {"carts": 0.0})
    0.5
    >>> model.pending_size, model.stats()["n_learnt"]
    (2, 0)
    >>> _ = model.observe("ann", 5, {"carts": 2.0}, is_purchase=True)  # t=0 answered: yes
    >>> model.pending_size, model.stats()["n_learnt"]  # learnt when its window ends
    (3, 0)
    >>> model.advance(12)  # the windows of t=0 (to 10) and of bob's t=1 (to 11) are over
    >>> model.pending_size, model.stats()["n_positive"], model.stats()["n_negative"]
    (1, 1, 1)

    """

    def __init__(
        self,
        features: tuple[str, ...],
        model: base.Classifier | None = None,
        horizon_us: int = 7 * DAY_US,
        min_spacing_us: int = HOUR_US,
        max_pending: int = 100_000,
        fill_value: float = 0.0,
        drift: ErrorDrift | None = None,
        reveal: str = "window_end",
    ):
        if not features or len(set(features)) != len(features):
            raise ValueError(f"features must be distinct names, got {features!r}")
        if horizon_us <= 0 or min_spacing_us < 0 or max_pending < 1:
            raise ValueError(
                "need horizon_us > 0, min_spacing_us >= 0, max_pending >= 1; got "
                f"{horizon_us}, {min_spacing_us}, {max_pending}"
            )
        if reveal not in ("window_end", "answer"):
            raise ValueError(f"reveal must be 'window_end' or 'answer', got {reveal!r}")
        self.reveal = reveal
        self.features = tuple(features)
        self.model = model
        self.horizon_us = horizon_us
        self.min_spacing_us = min_spacing_us
        self.max_pending = max_pending
        self.fill_value = fill_value
        self.drift = drift

        self._model = model if model is not None else _default_model()
        self._drift = drift if drift is not None else ErrorDrift()
        self._linear = explain.linear_step(self._model) is not None
        self._getter = operator.itemgetter(*self.features)
        self._single = len(self.features) == 1
        self._watermark = _NEVER
        self._last_user: str | None = None
        # Per user, open predictions (seq, t_us, score, x) in time order; a heap of
        # (expiry, seq, user) over all of them. Resolving a positive leaves its heap entry
        # behind (stale, skipped when popped) rather than paying O(n) to remove it.
        self._open: dict[str, deque] = {}
        self._heap: list[tuple[int, int, str]] = []
        self._n_open = 0
        self._seq = 0
        self._n_late = self._n_dropped = self._n_positive = self._n_negative = 0
        self._n_replaced = self._draws = 0
        # Running sums of learnt x: the occlusion baseline, kept only for a non-linear model.
        self._sums = None if self._linear else [0.0] * len(self.features)

    @classmethod
    def _unit_test_params(cls):
        yield {"features": ("a", "b")}

    # -- scoring (pure) ----------------------------------------------------------------------

    def _vector(self, x: dict) -> tuple:
        """The feature values in `features` order, missing and non-finite ones filled."""
        try:
            vals = self._getter(x)
        except KeyError:
            vals = tuple(x.get(f) for f in self.features)
        else:
            if self._single:
                vals = (vals,)
        return self._checked(vals)

    def _checked(self, vals: tuple) -> tuple:
        # One sum instead of a test per value: the sum is finite only if every value is.
        try:
            if math.isfinite(sum(vals)):
                return vals
        except TypeError:  # a None
            pass
        fill = self.fill_value
        return tuple(v if v is not None and math.isfinite(v) else fill for v in vals)

    def _dict(self, vals: tuple) -> dict:
        # vals comes from _vector, so the lengths match; zip's strict= keyword alone costs
        # ~0.3 µs a call, and this runs twice per event.
        return dict(zip(self.features, vals))  # noqa: B905

    def _score(self, vals: tuple) -> float:
        return self._model.predict_proba_one(self._dict(vals)).get(True, 0.0)

    def predict_proba_one(self, x: dict) -> float:
        """P(purchase within the horizon) for features `x`; learns nothing, mutates nothing."""
        return self._score(self._vector(x))

    def predict_one(self, x: dict) -> bool:
        """Whether a purchase within the horizon is the likelier outcome (River's label verb)."""
        return self.predict_proba_one(x) >= 0.5

    def explain_one(self, x: dict, top: int = 5) -> list[dict]:
        """The `top` features behind `predict_proba_one(x)`, see `online.models.explain`."""
        xs = self._dict(self._vector(x))
        if self._linear:
            contributions = explain.linear_contributions(self._model, xs)
        else:
            n = max(self.stats()["n_learnt"], 1)
            baseline = {f: s / n for f, s in zip(self.features, self._sums, strict=True)}
            contributions = explain.occlusion_contributions(self._score_dict, xs, baseline)
        return explain.top_contributions(xs, contributions, top, self.features)

    def _score_dict(self, x: dict) -> float:
        return self._model.predict_proba_one(x).get(True, 0.0)

    # -- learning ----------------------------------------------------------------------------
    # observe() is the per-event path and reads a little denser than the rest: each method
    # call or attribute lookup saved there is a few percent of River's own ~30 µs per event.

    def learn_one(self, x: dict, y: bool) -> None:
        """Learn one labelled example now (warm start, tests); live labels go through observe."""
        self._learn(self._vector(x), bool(y))

    def _learn(self, vals, y: bool) -> None:
        self._model.learn_one(self._dict(vals), y)
        if self._sums is not None:
            self._sums = [s + v for s, v in zip(self._sums, vals, strict=True)]
        if y:
            self._n_positive += 1
        else:
            self._n_negative += 1

    def observe(self, user: str, t_us: int, x: dict, is_purchase: bool = False) -> float:
        """Resolve what event time t_us settles, then score `x` and hold it as a question."""
        return self._observe(user, t_us, self._vector(x), is_purchase)

    def observe_many(self, users, t_us, X, is_purchase) -> list[float]:
        """`observe` for each row of `X` (columns: `features`, in order); the scores, in order.

        `X` is a 2-D float array (or a list of rows) as the projector's kernels produce it, so
        no dict per event has to be built; `users`, `t_us` and `is_purchase` are equally long
        sequences (numpy arrays are fine). Same results as calling `observe` row by row.
        """
        rows = _rows(X, len(self.features), "X")
        ts, flags = _as_list(t_us), _as_list(is_purchase)
        if not len(users) == len(ts) == len(flags) == len(rows):
            raise ValueError(
                f"users, t_us, is_purchase and X must have one entry per event; got lengths "
                f"{len(users)}, {len(ts)}, {len(flags)}, {len(rows)}"
            )
        observe, checked = self._observe, self._checked
        return [
            observe(u, t, checked(tuple(row)), p)
            for u, t, row, p in zip(users, ts, rows, flags, strict=True)
        ]

    def _observe(self, user: str, t_us: int, vals: tuple, is_purchase) -> float:
        if t_us > self._watermark:
            self._watermark = t_us
            heap = self._heap
            if heap and heap[0][0] < t_us:
                self._expire()
        opened = self._open
        if user != self._last_user:
            last = self._last_user
            if last is not None and last in opened:
                self._settle(last, self._watermark)
            self._last_user = user
        q = opened.get(user)
        if q is not None:
            if q[0][1] + self.horizon_us < t_us:
                self._settle(user, t_us)
            if is_purchase and user in opened:
                self._resolve_positives(user, t_us)
        score = self._model.predict_proba_one(self._dict(vals)).get(True, 0.0)

        # Hold the question, unless the user has one held less than min_spacing_us ago. A
        # negative gap (an out-of-order time) also skips, which keeps each user's queue
        # time-sorted.
        if t_us + self.horizon_us < self._watermark:
            self._n_late += 1
        q = opened.get(user)
        if q is not None:
            held = q[-1]
            if t_us - held[4] < self.min_spacing_us and not held[6]:
                # One question per user and spacing window, a uniform draw among the window's
                # events (a reservoir of one): the first event of a window (a session start)
                # is not what the model is asked about later, a random one is.
                k = held[5] + 1
                self._draws = draws = self._draws + 1
                if t_us >= held[1] and _unit(draws) * k < 1.0:
                    seq = self._seq
                    q[-1] = (seq, t_us, score, array("d", vals), held[4], k, False)
                    heapq.heappush(self._heap, (t_us + self.horizon_us, seq, user))
                    self._seq = seq + 1
                    self._n_replaced += 1
                    if len(self._heap) > 2 * self._n_open + 1024:
                        self._compact()
                else:
                    q[-1] = held[:5] + (k, False)
                return score
        if self._n_open >= self.max_pending:
            self._drop_oldest()
            q = self._open.get(user)
        seq = self._seq
        # array("d"): 8 bytes a value, half the memory of a tuple of float objects.
        # (seq, t, score, x, start of its spacing window, events seen in it, answered yes)
        item = (seq, t_us, score, array("d", vals), t_us, 1, False)
        if q is None:
            self._open[user] = deque((item,))
        else:
            q.append(item)
        heapq.heappush(self._heap, (t_us + self.horizon_us, seq, user))
        self._seq = seq + 1
        self._n_open += 1
        if len(self._heap) > 2 * self._n_open + 1024:
            self._compact()
        return score

    def advance(self, watermark_us: int) -> None:
        """Move the watermark forward (never back) and learn the negatives that expire."""
        if watermark_us > self._watermark:
            self._watermark = watermark_us
            self._expire()

    def _take(self, user: str, seq: int) -> tuple | None:
        """Remove and return the open prediction a heap entry points to; None if stale."""
        q = self._open.get(user)
        # Removals only ever take a queue's head, so a live entry is its user's head.
        if q is None or q[0][0] != seq:
            return None
        item = q.popleft()
        if not q:
            del self._open[user]
        self._n_open -= 1
        return item

    def _expire(self) -> None:
        heap, watermark, opened = self._heap, self._watermark, self._open
        while heap and heap[0][0] < watermark:
            expiry, seq, user = heapq.heappop(heap)
            # Inlined _take (this is the per-event path when every event is held).
            q = opened.get(user)
            if q is None or q[0][0] != seq:
                continue
            item = q.popleft()
            if not q:
                del opened[user]
            self._n_open -= 1
            self._learn_item(item, expiry)

    def _settle(self, user: str, now_us: int) -> None:
        """Learn as negatives `user`'s questions whose window closed before `now_us`."""
        q = self._open[user]
        horizon = self.horizon_us
        while q and q[0][1] + horizon < now_us:
            item = q.popleft()
            self._n_open -= 1
            self._learn_item(item, item[1] + horizon)
        if not q:
            del self._open[user]

    def _learn_item(self, item: tuple, t_us: int) -> None:
        y = item[6]
        self._learn(item[3], y)
        self._drift.update(1.0 - item[2] if y else item[2], t_us)  # |y - p|

    def _resolve_positives(self, user: str, t_us: int) -> None:
        q = self._open[user]
        if self.reveal == "window_end":
            # Mark, learn at the window's end with the negatives: answered yes are a suffix
            # of nothing and a prefix of the time-sorted queue, so walk back to the first.
            for i in range(len(q) - 1, -1, -1):
                item = q[i]
                if item[6]:
                    break
                if item[1] < t_us:
                    q[i] = item[:6] + (True,)
            return
        # Whatever is still open here has not expired (t_pred + horizon >= watermark >= t_us).
        while q and q[0][1] < t_us:
            item = q.popleft()
            self._n_open -= 1
            self._learn(item[3], True)
            self._drift.update(1.0 - item[2], t_us)  # |1 - p|
        if not q:
            del self._open[user]

    def _drop_oldest(self) -> None:
        heap = self._heap
        while heap:
            _, seq, user = heapq.heappop(heap)
            if self._take(user, seq) is not None:
                self._n_dropped += 1
                return

    def _compact(self) -> None:
        self._heap = [
            (item[1] + self.horizon_us, item[0], user)
            for user, q in self._open.items()
            for item in q
        ]
        heapq.heapify(self._heap)

    def erase_user(self, user: str) -> int:
        """Forget `user`'s open questions (erasure); how many were dropped, unlearnt.

        The expiry heap is rebuilt so that no entry keeps the id. What the model already
        learnt is an aggregate over many users and stays.
        """
        if self._last_user == user:
            self._last_user = None
        q = self._open.pop(user, None)
        if q is None:
            return 0
        self._n_open -= len(q)
        self._compact()
        return len(q)

    def frozen(self) -> PurchasePropensity:
        """A copy that scores and explains as this one does now and holds no questions (no
        user ids): what `ModelVersions` keeps. Pickle it at once; it shares the learner."""
        twin = copy.copy(self)
        twin._open, twin._heap, twin._n_open, twin._last_user = {}, [], 0, None
        return twin

    # -- reporting ---------------------------------------------------------------------------

    @property
    def pending_size(self) -> int:
        """Open predictions waiting for their label."""
        return self._n_open

    @property
    def watermark_us(self) -> int | None:
        return None if self._watermark == _NEVER else self._watermark

    @property
    def drift_monitor(self) -> ErrorDrift:
        return self._drift

    def stats(self) -> dict:
        """Queue and label counters (n_registered: questions ever held)."""
        return {
            "pending": self._n_open,
            "n_registered": self._seq - self._n_replaced,
            "n_replaced": self._n_replaced,
            "n_late": self._n_late,
            "n_dropped": self._n_dropped,
            "n_positive": self._n_positive,
            "n_negative": self._n_negative,
            "n_learnt": self._n_positive + self._n_negative,
            "watermark_us": self.watermark_us,
        }


def _unit(n: int) -> float:
    """A uniform draw in [0, 1) from the counter n (splitmix64): replayable, no global RNG."""
    z = (n * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return ((z ^ (z >> 31)) >> 11) * (1.0 / 9007199254740992.0)


def _as_list(values) -> list:
    """A numpy array as a list of Python scalars (ints stay ints), anything else as a list."""
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _rows(X, width: int, name: str) -> list:
    """The rows of a 2-D array-like of `width` columns, as lists of Python floats."""
    shape = getattr(X, "shape", None)
    if shape is not None and (len(shape) != 2 or shape[1] != width):
        raise ValueError(f"{name} must have shape (n_events, {width}), got {tuple(shape)}")
    rows = _as_list(X)
    if rows and shape is None and any(len(r) != width for r in rows):
        raise ValueError(f"every row of {name} must have {width} values")
    return rows


def _default_model() -> base.Classifier:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()
