"""Questions waiting for their answers: the delayed-label queue of `PurchasePropensity`.

A prediction made at an event (user, t, x) is a question answered yes when the user purchases
in (t, t + horizon] and no when event time passes t + horizon without one. `DelayedLabels`
holds the open questions (per user, in time order, with x as it was at t), a heap of their
expiries over all users, and the rules that answer them; the class that mixes it in supplies
the model (`_model`, `_dict`, `_learn`, `_drift`) and the configuration attributes.
"""

from __future__ import annotations

import heapq
from array import array
from collections import deque
from typing import TYPE_CHECKING, Any

from .draws import unit as _unit
from .survival import kaplan_meier

if TYPE_CHECKING:
    from .batch_rows import BatchRows

__all__ = ["DelayedLabels", "NEVER"]

NEVER = -(2**63)


class DelayedLabels:
    """The open questions of a delayed-label learner and how they are answered.

    What is held back, and why:

    - Heavy users: a user holds one question per `min_spacing_us` window (default 15 minutes,
      a few examples per session), otherwise a user with 1,000 events a day would be
      1,000 near-identical examples. The question is a uniform draw among the window's
      moments (a reservoir of one, drawn from a counter, so replays agree), not its first
      event: the first event of a session has no cart yet, and a model that only ever learns
      at session starts never learns what a cart means (AUC 0.73 vs 0.84 on a synthetic
      funnel). A moment is one effective time with the features after its last event (the
      50 lines of an order are one moment); the question remembers how many moments it
      stands for, its weight for a learner that takes weights.
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
    """

    # what the class mixing it in sets up (`PurchasePropensity.__init__`) and supplies
    horizon_us: int
    min_spacing_us: int
    max_pending: int
    reveal: str
    _model: Any
    _by_logs: bool
    features: tuple[str, ...]
    _drift: Any
    _watermark: int
    _last_user: str | None
    _open: dict[str, deque]
    _heap: list[tuple[int, int, str]]
    _n_open: int
    _seq: int
    _draws: int
    _n_late: int
    _n_dropped: int
    _n_positive: int
    _n_negative: int
    _n_replaced: int
    per_user_cap: float | None
    _uninformed: bool
    _prior: float
    _prior_at: int | None
    _prior_yes: list[int]
    _prior_gone: list[int]
    # the batch `observe_many` is observing (its rows are then passed by index); None outside
    _batch: BatchRows | None = None

    def _dict(self, vals: tuple) -> dict:
        raise NotImplementedError

    def _learn(self, vals: tuple, y: bool, user: str, k: int = 1) -> None:
        raise NotImplementedError

    # -- the prior: what the shop's purchases say before any answer is learnt -----------------
    # Until the learner knows something, a question's score is the Kaplan-Meier estimate of
    # P(purchase within the horizon) over the questions held so far: answered yes at their
    # age then, or still waiting (censored at their age). It reads 1/2 before any question.

    def _forget(self, item: tuple) -> None:
        """An open question leaves the queue (learnt, dropped, erased)."""
        if self._uninformed and not item[6]:
            self._prior_gone.append(min(self._watermark - item[1], self.horizon_us))

    def _answered(self, item: tuple, t_us: int) -> None:
        """An open question is answered yes at `t_us`."""
        if self._uninformed:
            self._prior_yes.append(t_us - item[1])

    def _refresh_prior(self, now_us: int) -> None:
        """Recompute the prior when event time has moved on by 1/256 of the horizon."""
        at = self._prior_at
        if at is not None and now_us - at < self.horizon_us >> 8:
            return
        self._prior_at = int(now_us)
        h = self.horizon_us
        waiting = [min(now_us - it[1], h) for q in self._open.values() for it in q if not it[6]]
        self._prior = kaplan_meier(self._prior_yes, waiting + self._prior_gone, h)

    def prior_proba(self) -> float:
        """The prior score (see above): 1/2 until a question has been held for a while.

        It does not extrapolate: a purchase hazard fitted to the first hours and carried to
        the horizon read 0.99 on Online Retail (whose customers often come back within
        minutes, then not for weeks) where 0.29 of the first week's events were followed by
        a purchase within 7 days. The estimate at the oldest age seen errs low, and reads
        the horizon's share once a horizon has passed; the learner takes over from there."""
        return self._prior

    def _ask(self, vals) -> float:
        if self._uninformed:
            return self.prior_proba()
        if self._by_logs:  # questions hold signed logs (`PurchasePropensity._question`)
            batch = self._batch
            if batch is not None:  # vals: a row of the batch (`PurchasePropensity.observe_many`)
                return batch.ask(vals)
            return self._model.proba_logs(self.features, vals)
        return self._model.predict_proba_one(self._dict(vals)).get(True, 0.0)

    def _values(self, vals) -> array:
        """What a held question keeps of `vals`: 8 bytes a value (array("d"): half the memory
        of a tuple of float objects)."""
        batch = self._batch
        return array("d", vals) if batch is None else batch.values(vals)

    def _observe(self, user: str, t_us: int, vals, is_purchase,
                 scored: bool = True) -> float | None:
        """Settle what t_us settles, hold `vals` as a question; the score (None when not
        `scored` and no question took it: the model is asked only where its answer is kept,
        at the same point of the sequence, so what is learnt does not change)."""
        if t_us > self._watermark:
            self._watermark = t_us
            heap = self._heap
            if heap and heap[0][0] < t_us:
                self._expire()
            if self._uninformed:
                self._refresh_prior(t_us)
        opened, horizon = self._open, self.horizon_us
        if user != self._last_user:
            last = self._last_user
            if last is not None:
                q = opened.get(last)
                # `_settle` learns the head questions whose window closed: none, if not the first
                if q is not None and q[0][1] + horizon < self._watermark:
                    self._settle(last, self._watermark)
            self._last_user = user
        q = opened.get(user)
        if q is not None:
            if q[0][1] + horizon < t_us:
                self._settle(user, t_us)
            if is_purchase and user in opened:
                self._resolve_positives(user, t_us)
        score = self._ask(vals) if scored else None

        # Hold the question, unless the user has one held less than min_spacing_us ago. A
        # negative gap (an out-of-order time) also skips, which keeps each user's queue
        # time-sorted.
        if t_us + horizon < self._watermark:
            self._n_late += 1
        q = opened.get(user)
        if q is not None:
            held = q[-1]
            if t_us - held[4] < self.min_spacing_us and not held[6]:
                # One question per user and spacing window, a uniform draw among the window's
                # moments (a reservoir of one): the first event of a window (a session start)
                # is not what the model is asked about later, a random one is. A moment is
                # an effective time, with the features after its last event: the lines of
                # one order share a time and are one moment, not fifty.
                if t_us == held[7]:
                    if t_us == held[1]:  # the drawn moment goes on: its latest features
                        if score is None:
                            score = self._ask(vals)
                        q[-1] = held[:2] + (score, self._values(vals)) + held[4:]
                    return score
                k = held[5] + 1
                self._draws = draws = self._draws + 1
                if t_us >= held[1] and _unit(draws) * k < 1.0:
                    if score is None:
                        score = self._ask(vals)
                    seq = self._seq
                    q[-1] = (seq, t_us, score, self._values(vals), held[4], k, False, t_us)
                    heapq.heappush(self._heap, (t_us + self.horizon_us, seq, user))
                    self._seq = seq + 1
                    self._n_replaced += 1
                    if len(self._heap) > 2 * self._n_open + 1024:
                        self._compact()
                else:
                    q[-1] = held[:5] + (k, False, t_us)
                return score
        if score is None:
            score = self._ask(vals)
        if self._n_open >= self.max_pending:
            self._drop_oldest()
            q = self._open.get(user)
        seq = self._seq
        # (seq, t, score, x, start of its spacing window, moments seen in it, answered yes,
        # time of the window's latest event)
        item = (seq, t_us, score, self._values(vals), t_us, 1, False, t_us)
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
        self._forget(item)
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
            self._forget(item)
            self._learn_item(item, expiry, user)

    def _settle(self, user: str, now_us: int) -> None:
        """Learn as negatives `user`'s questions whose window closed before `now_us`."""
        q = self._open[user]
        horizon = self.horizon_us
        while q and q[0][1] + horizon < now_us:
            item = q.popleft()
            self._n_open -= 1
            self._forget(item)
            self._learn_item(item, item[1] + horizon, user)
        if not q:
            del self._open[user]

    def _learn_item(self, item: tuple, t_us: int, user: str) -> None:
        y = item[6]
        self._learn(item[3], y, user, item[5])
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
                    q[i] = item[:6] + (True,) + item[7:]
                    self._answered(item, t_us)
            return
        # Whatever is still open here has not expired (t_pred + horizon >= watermark >= t_us).
        while q and q[0][1] < t_us:
            item = q.popleft()
            self._n_open -= 1
            self._answered(item, t_us)
            self._learn(item[3], True, user, item[5])
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
        for item in q:
            self._forget(item)
        self._compact()
        return len(q)

    @property
    def pending_size(self) -> int:
        """Open predictions waiting for their label."""
        return self._n_open

    @property
    def watermark_us(self) -> int | None:
        return None if self._watermark == NEVER else self._watermark

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
