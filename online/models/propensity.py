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
import hashlib
import inspect
import math
import operator
from array import array
from collections import deque
from typing import Any, cast

import numpy as np
from river import base, linear_model, preprocessing

from online.clock import DAY_US, HOUR_US
from online.kernels.signed import signed_log_rows

from . import explain
from .batch_rows import BatchRows
from .drift import ErrorDrift
from .learners import WindowedLogistic
from .questions import NEVER, DelayedLabels, _as_list, _rows
from .signed import signed_logs

__all__ = ["PurchasePropensity", "DAY_US", "HOUR_US", "QUESTION_SPACING_US"]

# One held question per user and 15 minutes of event time (a few per session). With one per
# hour, weak-signal funnels lost 0.02-0.04 test AUC (bench/quality.py): a session's later
# moments, a cart just filled, were rarely asked about.
QUESTION_SPACING_US = 15 * 60_000_000

class PurchasePropensity(DelayedLabels, base.Estimator):
    """P(purchase in (t, t + horizon]) for a user's event at t, learnt from delayed labels.

    Per event, `observe` (1) moves the watermark to t and learns every pending prediction whose
    horizon has passed (t_pred + horizon < watermark), in order of expiry, with its answer:
    yes if the user purchased in its window, else no; (2) if the event is a purchase, answers
    yes to the user's pending predictions made strictly before t (learnt at once with
    ``reveal="answer"``, at the window's end by default); (3) predicts for x and (4) registers
    that prediction as pending. Steps 1-2 reveal answers before the new question is asked, as
    `simulate_qa` does, so the score returned at t has learnt from nothing later than t.

    How questions are held (one per user and 15 minutes, a bound, logs out of time order): see
    `online.models.questions.DelayedLabels`.

    What a question weighs: a learner whose ``learn_one`` takes a ``group`` (the served
    `WindowedLogistic`) learns each answer with ``w`` = the moments its spacing window held
    and ``group`` = `user_key` of the user, so that it can cap what one user weighs; any
    other River classifier learns plain ``learn_one(x, y)``.

    Before anything is learnt (a fresh log: no answer is known for a whole horizon), a
    learner's score carries no information (0.5 for a fresh logistic regression; a log loss
    of 0.69 over a whole first horizon, 1/8 of a 60-day log at 7 days). Until then every
    score is `prior_proba`, the Kaplan-Meier estimate of the share of questions answered yes
    within the horizon (see `online.models.questions.kaplan_meier`); a learner that comes
    fitted (a `fitted` attribute that is true, as after `WindowedLogistic.warm_start`)
    scores from the start.

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
        Minimum event-time gap between two pending predictions of one user (default 15
        minutes, `QUESTION_SPACING_US`).
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
    >>> model.observe("ann", 0, {"carts": 1.0})  # nothing seen: the prior reads 1/2
    0.5
    >>> round(model.observe("bob", 1, {"carts": 0.0}), 3)  # ann waited 1 of 10 without a yes
    0.471
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
        min_spacing_us: int = QUESTION_SPACING_US,
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
        self._linear = explain.is_additive(self._model)
        self._grouped = "group" in inspect.signature(self._model.learn_one).parameters
        # a learner that reads signed logs in `features` order (`WindowedLogistic.learn_logs`):
        # questions then hold those, computed for a whole batch at once (`observe_many`)
        self._by_logs = _by_logs(self._model) and math.isfinite(fill_value)
        self._getter = operator.itemgetter(*self.features)
        self._single = len(self.features) == 1
        self._watermark = NEVER
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
        # the prior's tallies (`DelayedLabels.prior_proba`): it scores until the learner knows
        # something (a learnt label, or a fit installed into it: its `fitted` attribute)
        self._uninformed = not getattr(self._model, "fitted", False)
        self._prior, self._prior_at = 0.5, None
        self._prior_yes: list[int] = []  # ages at a yes, and of questions that left
        self._prior_gone: list[int] = []  # unanswered, while the prior scores
        # Running sums of learnt x: the occlusion baseline, kept only for a non-linear model.
        self._sums = None if self._linear else [0.0] * len(self.features)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "_by_logs" not in state:  # pickled when questions held raw values: now their logs
            self._by_logs = _by_logs(self._model) and math.isfinite(self.fill_value)
            if self._by_logs:
                for q in self._open.values():
                    for i, item in enumerate(q):
                        logs = signed_logs(item[3])  # held values are finite (_checked)
                        assert logs is not None
                        q[i] = item[:3] + (array("d", logs),) + item[4:]

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

    def _question(self, vals: tuple):
        """What a question holds of checked values: their signed logs for a learner that
        reads those (`_by_logs`), else the values."""
        return signed_logs(vals) if self._by_logs else vals

    def _score(self, vals: tuple) -> float:
        return self._ask(self._question(vals))

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
            assert self._sums is not None  # kept whenever the model is not additive
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

    def _learn(self, vals, y: bool, user: str | None = None, k: int = 1) -> None:
        if self._uninformed:
            self._uninformed = False
            self._prior_yes, self._prior_gone = [], []
        if self._by_logs and user is not None:  # vals: a question's signed logs
            self._model.learn_logs(self.features, vals, y, float(k), user_key(user))
        elif self._grouped and user is not None:
            self._model.learn_one(self._dict(vals), y, w=float(k), group=user_key(user))
        else:
            self._model.learn_one(self._dict(vals), y)
        if self._sums is not None:
            self._sums = [s + v for s, v in zip(self._sums, vals, strict=True)]
        if y:
            self._n_positive += 1
        else:
            self._n_negative += 1

    def observe(self, user: str, t_us: int, x: dict, is_purchase: bool = False) -> float:
        """Resolve what event time t_us settles, then score `x` and hold it as a question."""
        score = self._observe(user, t_us, self._question(self._vector(x)), is_purchase)
        assert score is not None  # scored: the default of `_observe`
        return score

    def observe_many(self, users, t_us, X, is_purchase, *, scores: bool = True) -> list[float]:
        """`observe` for each row of `X` (columns: `features`, in order); the scores, in order
        (``scores=False``: an empty list, and only the events held as questions are scored;
        the same learning either way).

        `X` is a 2-D float array (or a list of rows) as the projector's kernels produce it, so
        no dict per event has to be built; `users`, `t_us` and `is_purchase` are equally long
        sequences (numpy arrays are fine). Same results as calling `observe` row by row.
        """
        batch = self._batch_rows(X)
        rows = self._questions(X) if batch is None else range(len(batch.Z))
        ts, flags = _as_list(t_us), _as_list(is_purchase)
        if not len(users) == len(ts) == len(flags) == len(rows):
            raise ValueError(
                f"users, t_us, is_purchase and X must have one entry per event; got lengths "
                f"{len(users)}, {len(ts)}, {len(flags)}, {len(rows)}"
            )
        observe = self._observe
        self._batch = batch  # the rows are then passed by index
        try:
            if not scores:
                for u, t, row, p in zip(users, ts, rows, flags, strict=True):
                    observe(u, t, row, p, False)
                return []
            return cast(list[float], [observe(u, t, row, p) for u, t, row, p
                                      in zip(users, ts, rows, flags, strict=True)])
        finally:
            del self._batch  # the class's None again: nothing of it is pickled

    def _batch_rows(self, X) -> BatchRows | None:
        """For a float array and a learner of signed logs (`WindowedLogistic`), the whole
        batch's signed logs in one compiled call (the same values as per row), scored as one
        (`BatchRows`); None otherwise."""
        if (self._by_logs and isinstance(X, np.ndarray) and X.dtype.kind in "fiu"
                and X.ndim == 2 and X.shape[1] == len(self.features)
                and isinstance(self._model, WindowedLogistic)):
            X = np.ascontiguousarray(X, np.float64)
            Z = signed_log_rows(X, float(self.fill_value))
            return BatchRows(Z, self._model, self.features)
        return None

    def _questions(self, X) -> list:
        """`_question` of each row of `X`, as lists."""
        question, checked = self._question, self._checked
        return [question(checked(tuple(row))) for row in _rows(X, len(self.features), "X")]

    def erase_learnt(self, user: str) -> int:
        """Blank `user`'s examples in the learner's window (a learner that keeps them by
        group, as `WindowedLogistic`); how many. Its open questions: `erase_user`."""
        erase = getattr(self._model, "erase_group", None) if self._grouped else None
        return int(erase(user_key(user))) if callable(erase) else 0

    def frozen(self) -> PurchasePropensity:
        """A copy that scores and explains as this one does now and holds no questions (no
        user ids): what `ModelVersions` keeps. Pickle it at once; it shares the learner."""
        twin = copy.copy(self)
        twin._open, twin._heap, twin._n_open, twin._last_user = {}, [], 0, None
        # a learner that keeps training data (a window) gives a copy without it
        scoring_copy = getattr(self._model, "scoring_copy", None)
        if callable(scoring_copy):
            twin._model = scoring_copy()
            if self.model is self._model:  # the constructor's argument is that learner too
                twin.model = twin._model
        return twin

    @property
    def drift_monitor(self) -> ErrorDrift:
        return self._drift


def user_key(user: str) -> int:
    """A stable 63-bit key of a (stored, pseudonymized) user id: the group a learner's window
    counts a user's examples by, the same in every process (unlike `hash`)."""
    digest = hashlib.blake2b(user.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def _by_logs(model) -> bool:
    """Whether `model` scores and learns signed logs in a given order without a dict
    (`WindowedLogistic.proba_logs` / `learn_logs`, with weights and groups)."""
    return callable(getattr(model, "proba_logs", None)) and callable(
        getattr(model, "learn_logs", None))


def _default_model() -> Any:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()
