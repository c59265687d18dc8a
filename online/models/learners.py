"""The propensity model's learners: a signed-log scaler, and logistic regression refitted on a
window of the latest labels (`WindowedLogistic`, the served one; see its docstring for why).

Both read ``sign(x) log1p(|x|)`` of each feature: counts, spends and durations span orders of
magnitude, and on raw values one large user moves every weight.
"""

from __future__ import annotations

import copy
import math
import operator

import numpy as np
from river import base, preprocessing

from . import newton as nt
from .newton import newton, normalised, one_blas_thread, sigmoid_array, weighted_moments
from .signed import sigmoid as _sigmoid
from .signed import signed_log1p
from .signed import signed_log_or_zero as _signed_log_or_zero
from .signed import signed_logs as _signed_logs

__all__ = ["SignedLogScaler", "WindowedLogistic", "signed_log1p"]


class SignedLogScaler(preprocessing.StandardScaler):
    """River's running standardisation of sign(x) * log1p(|x|): counts and spends tamed.

    Counts, spends and durations have heavy tails; on raw values one large user moves the
    running mean and variance and every weight with it. It keeps feature names, so a
    `LogisticRegression` after it is still explained exactly (weight x transformed value,
    see `online.models.explain`).

    >>> scaler = SignedLogScaler()
    >>> for v in (0.0, 9.0, 99.0):
    ...     scaler.learn_one({"spend": v})
    >>> round(scaler.transform_one({"spend": 99.0})["spend"], 3)
    1.225
    """

    def learn_one(self, x):
        super().learn_one({k: signed_log1p(v) for k, v in x.items()})

    def transform_one(self, x):
        return super().transform_one({k: signed_log1p(v) for k, v in x.items()})

    def reference_one(self, names) -> dict[str, float]:
        """The raw value of each feature at its learnt mean (where its input reads 0)."""
        means = self.means
        return {k: math.copysign(math.expm1(abs(means[k])), means[k]) for k in names}


class WindowedLogistic(base.Classifier):
    """Logistic regression refitted by Newton's method on a window of the latest examples.

    One pass of SGD with a constant step leaves a linear model well short of the batch fit on
    the same labels (AUC 0.858 vs 0.877 on a synthetic purchase log with 11,000 events, 0.686
    vs 0.710 on Online Retail): the step that is small enough not to chase the latest labels
    is too small to converge on a few thousand. This learner keeps the signed logs
    ``sign(x) log1p(|x|)`` of the last `window` examples (a ring, `window` x features floats)
    and refits on them, standardised by the window's mean and deviation, with `iterations`
    Newton steps (backtracking) on the mean log loss + ``l2 / 2 |w|^2 / n``, warm-started from
    the previous fit. Three things make it robust to a shop's shape:

    - the ridge ``l2`` (a batch fit's 1 / C) is chosen from `l2_grid` by a forward
      validation (`newton.forward_ridge`: fitted on the older 80% of the window, scored on
      the newest 20%; weak signal wants a strong ridge, strong signal a weak one: with one
      l2 for every shop, a weak-signal funnel lost 0.03 AUC and predicted worse than the
      base rate), at a refit once the labels since the last validation reach as many as
      before it, or `ridge_every` refits' worth (at every refit it took 3/4 of their time;
      every fourth moved `bench/quality.py --quick` AUCs by -0.004..+0.003); until both
      parts hold `min_class` of each class, the strongest (with 10 positives in the
      validation fifth the choice was noise: a 2%-positive funnel's AUC 0.539, with 30 0.576);
    - the intercept is then re-set so that the newest fifth's mean score is its share of
      positives: labels come a horizon late and a fit over the whole window puts the base
      rate where it was on average, not where it went;
    - the window follows drift (a fit only ever sees the newest `window` examples);
    - examples have weights (``learn_one(x, y, w, group)``), and the weights of one `group`
      (a user) in the window are capped at `group_cap` in total: a heavy user's hundreds of
      examples would otherwise set the weights for everyone, while a shop ranks users (and
      `portrait train` and the evaluation's training sets take at most 20 rows a user). On
      synthetic funnels with weak signal, over ten logs, this raised the test AUC by 0.02
      on average (up to 0.075). The intercept is re-set with the uncapped weights (a score
      is asked at every moment, heavy users' included).

    It refits after `first_fit` examples and then every time the examples learnt since the
    last fit reach a quarter of those before it, at most `refit_every`: cheap while the window
    is small, and at steady state about ``(len(l2_grid) / ridge_every + 1) x iterations x
    window x features^2 / refit_every`` flops per example. Nothing reads a clock or a random
    draw, so the same examples give the same model.

    Scores are ``sigmoid(b + sum_k w_k (z_k - m_k) / s_k)``; until the first fit, and while the
    window holds fewer than `min_class` examples of either class (a few labels of a rare class
    are no ground for weights: they would make the first scores overconfident), every weight
    is 0 and the intercept is the smoothed share of positives.
    Features never seen in learning contribute 0; a feature missing from an example reads 0.

    >>> model = WindowedLogistic()
    >>> for i in range(400):
    ...     model.learn_one({"carts": float(i % 4)}, i % 4 >= 2)
    >>> p_three, p_none = (model.predict_proba_one({"carts": c})[True] for c in (3.0, 0.0))
    >>> p_three > 0.9 > 0.1 > p_none, model.l2_
    (True, 1.0)
    """

    # examples learnt at the last ridge validation (0: none yet); defaults for older pickles
    _selected_at = 0
    ridge_every = 4

    def __init__(self, window: int = 10_000, refit_every: int = 1_000, first_fit: int = 50,
                 l2_grid: tuple = (1.0, 10.0, 100.0, 1000.0), iterations: int = 3,
                 min_class: int = 30, group_cap: float | None = 20.0,
                 ridge_every: int = 4):
        if (window < 2 or refit_every < 1 or first_fit < 1 or not l2_grid
                or min(l2_grid) <= 0 or iterations < 1 or min_class < 1
                or (group_cap is not None and not 0 < group_cap < math.inf)
                or ridge_every < 1):
            raise ValueError(
                "need window >= 2, refit_every >= 1, first_fit >= 1, a non-empty l2_grid of "
                "values > 0, iterations >= 1, min_class >= 1, group_cap None or a finite "
                f"value > 0, ridge_every >= 1; got {window}, {refit_every}, {first_fit}, "
                f"{l2_grid}, {iterations}, {min_class}, {group_cap}, {ridge_every}")
        self.window = window
        self.refit_every = refit_every
        self.first_fit = first_fit
        self.l2_grid = tuple(float(v) for v in l2_grid)
        # the ridge in use: the strongest until a validation can pick one (`_select_l2`): few
        # labels are little ground for large weights
        self.l2_ = max(self.l2_grid)
        self.iterations = iterations
        self.min_class = min_class
        self.group_cap = group_cap
        self.ridge_every = ridge_every
        self._names: list = []
        self._column: dict = {}
        self._Z = np.zeros((min(window, 256), 0))
        self._y = np.zeros(min(window, 256))
        self._w = np.ones(min(window, 256))
        self._g = np.full(min(window, 256), -1, dtype=np.int64)  # -1: in no group
        self._n = 0
        self._n_positive = 0
        self._next_fit = first_fit
        self._n_fits = 0
        self.means: dict = {}
        self.scales: dict = {}
        self.weights: dict = {}
        self.intercept = 0.0
        # logit = _offset + sum_k _slope[k] * z_k: the fit folded for the per-event path
        self._slope: dict = {}
        self._offset = 0.0
        # the names in column order, and those of the fit with their slopes as a list: the
        # fast paths for an x whose keys come in that order
        self._keys: tuple = ()
        self._fit_keys: tuple = ()
        self._slopes: list = []

    @property
    def fitted(self) -> bool:
        """Whether the weights come from data: a fit, or one installed by `warm_start`."""
        return self._n_fits > 0

    @property
    def _multiclass(self):
        return False

    def learn_one(self, x, y, w: float = 1.0, group: int | None = None):
        # the usual case (the same names in the same order every time) writes the row at once
        zs = _signed_logs(x.values()) if tuple(x) == self._keys else None
        if zs is None:
            zs = [(k, _signed_log_or_zero(v)) for k, v in x.items()]
            self._learn_row(zs, y, w, group, named=True)
        else:
            self._learn_row(zs, y, w, group)

    def learn_logs(self, names: tuple, zs, y, w: float = 1.0, group: int | None = None) -> None:
        """`learn_one` of the example whose signed logs (``sign(x) log1p(|x|)``, finite) are
        `zs`, in `names` order: the per-event path of a caller that transforms a whole batch
        at once and keeps one order of names (`PurchasePropensity`)."""
        if names == self._keys:
            self._learn_row(zs, y, w, group)
        else:
            self._learn_row(list(zip(names, zs, strict=True)), y, w, group, named=True)

    def _learn_row(self, zs, y, w: float, group: int | None, named: bool = False) -> None:
        """Write one example's row: `zs` in column order, or (``named``) (name, log) pairs."""
        if not 0.0 < w < math.inf:
            raise ValueError(f"w must be a finite weight > 0, got {w!r}")
        row = self._n % self.window
        if row >= len(self._Z):
            grow = min(self.window, max(2 * len(self._Z), 256))
            self._Z = np.vstack([self._Z, np.zeros((grow - len(self._Z), self._Z.shape[1]))])
            self._y = np.r_[self._y, np.zeros(grow - len(self._y))]
            self._w = np.r_[self._w, np.ones(grow - len(self._w))]
            self._g = np.r_[self._g, np.full(grow - len(self._g), -1, dtype=np.int64)]
        if named:
            self._learn_slowly(zs, row)
        else:
            self._Z[row] = zs
        self._y[row] = 1.0 if y else 0.0
        self._w[row] = w
        self._g[row] = -1 if group is None else group
        self._n += 1
        self._n_positive += bool(y)
        if self._n >= self._next_fit:
            self._fit()
            gap = min(self.refit_every, max(self._n // 4, 1))
            self._next_fit = self._n + gap
        elif self._n_fits == 0:
            self._offset = self.intercept = self._base_logit()

    def _learn_slowly(self, pairs, row: int) -> None:
        Z, column = self._Z, self._column
        Z[row] = 0.0
        for k, z in pairs:
            j = column.get(k)
            if j is None:
                j = column[k] = len(self._names)
                self._names.append(k)
                Z = self._Z = np.hstack([Z, np.zeros((len(Z), 1))])
                self._keys = tuple(self._names)
            Z[row, j] = z

    def _base_logit(self) -> float:
        p = (self._n_positive + 0.5) / (self._n + 1.0)
        return math.log(p / (1.0 - p))

    def _fit(self) -> None:
        with one_blas_thread():
            self._fit_window()

    def _fit_window(self) -> None:
        m = min(self._n, self.window)
        Z, y, sw = self._Z[:m], self._y[:m], normalised(self._weights(m))
        d = Z.shape[1]
        mean, std = weighted_moments(Z, sw)
        names = self._names
        # the previous fit in raw signed-log units, re-expressed in this window's units
        slope = np.array([self._slope.get(k, 0.0) for k in names])
        w = slope * std
        b = self._offset + float(slope @ mean)
        positives = float(y.sum())
        if min(positives, m - positives) >= self.min_class:
            if len(self.l2_grid) > 1 and self._ridge_due():
                self.l2_ = self._select_l2(Z, y, sw, slope, self._offset)
            X = (Z - mean) / std
            A = np.hstack([X, np.ones((m, 1))])
            theta = newton(A, y, sw, np.r_[w, b], self.l2_ / m, self.iterations)
            w, b = theta[:-1], float(theta[-1])
            # the base rate as events see it: weights uncapped (heavy users buy at their own
            # rate, and a score is asked at every moment)
            b = self._recent_intercept(A[:, :-1] @ w, y, normalised(self._w[:m]), b)
        else:
            w, b = np.zeros(d), self._base_logit()
        self.means = dict(zip(names, mean.tolist(), strict=True))
        self.scales = dict(zip(names, std.tolist(), strict=True))
        self.weights = dict(zip(names, w.tolist(), strict=True))
        self.intercept = b
        slope = w / std
        self._slope = dict(zip(names, slope.tolist(), strict=True))
        self._offset = b - float(slope @ mean)
        self._fit_keys, self._slopes = tuple(names), slope.tolist()
        self._n_fits += 1

    def _weights(self, m: int) -> np.ndarray:
        """The window's sample weights, each group's total capped at `group_cap`."""
        w = self._w[:m]
        if self.group_cap is None:
            return w
        g = self._g[:m]
        grouped = g >= 0
        if not grouped.any():
            return w
        _, inverse = np.unique(g[grouped], return_inverse=True)
        totals = np.bincount(inverse, weights=w[grouped])
        w = w.copy()
        w[grouped] *= np.minimum(1.0, self.group_cap / totals)[inverse]
        return w

    def _newest(self, m: int) -> np.ndarray:
        """Rows of the newest fifth of the window (the ring wraps at n % window)."""
        start = self._n % self.window if self._n > self.window else 0
        order = np.r_[start:m, 0:start]  # oldest first
        return order[int(0.8 * m):]

    def _recent_intercept(self, s: np.ndarray, y: np.ndarray, sw: np.ndarray,
                          b: float) -> float:
        """The intercept that makes the newest fifth's mean score its share of positives
        (weights kept): labels arrive a horizon late, and a fit over the whole window puts
        the base rate where it was on average, not where it went. Unchanged when that fifth
        holds fewer than `min_class` examples of a class."""
        rows = self._newest(len(y))
        s, y, sw = s[rows], y[rows], sw[rows]
        if min(y.sum(), len(y) - y.sum()) < self.min_class:
            return b
        for _ in range(20):
            p = sigmoid_array(s + b)
            g, h = float(sw @ (p - y)), float(sw @ (p * (1.0 - p)))
            if h <= 0.0:
                break
            step = max(-1.0, min(1.0, g / h))
            b -= step
            if abs(step) < 1e-10:
                break
        return b

    def _ridge_due(self) -> bool:
        """Whether this refit validates the ridge: until one validation could run, then once
        the examples learnt since the last one reach as many as before it, or `ridge_every`
        refits' worth (`refit_every` each)."""
        at = self._selected_at
        return at == 0 or self._n - at >= min(self.ridge_every * self.refit_every, at)

    def _select_l2(self, Z: np.ndarray, y: np.ndarray, sw: np.ndarray, slope: np.ndarray,
                   offset: float) -> float:
        """`newton.forward_ridge` on the window, oldest first (the ring wraps at n % window);
        the current ridge when either part is short of `min_class` examples of a class."""
        start = self._n % self.window if self._n > self.window else 0
        order = np.r_[start:len(y), 0:start]
        i = nt.forward_ridge(Z[order], y[order], sw[order], slope, offset, self.l2_grid,
                             self.iterations, self.min_class)
        if i is None:
            return self.l2_
        self._selected_at = self._n
        return self.l2_grid[i]

    def proba_logs(self, names: tuple, zs) -> float:
        """``predict_proba_one(x)[True]`` for the example whose signed logs are `zs`, in
        `names` order (see `learn_logs`)."""
        if names == self._fit_keys:
            a = self._offset + sum(map(operator.mul, self._slopes, zs))
        else:
            slope = self._slope
            a = self._offset
            for k, z in zip(names, zs, strict=True):
                s = slope.get(k)
                if s is not None:
                    a += s * z
        return _sigmoid(a)

    def predict_proba_one(self, x):
        zs = _signed_logs(x.values()) if tuple(x) == self._fit_keys else None
        if zs is not None:
            a = self._offset + sum(map(operator.mul, self._slopes, zs))
        else:
            slope = self._slope
            a = self._offset
            for k, v in x.items():
                s = slope.get(k)
                if s is not None:
                    a += s * _signed_log_or_zero(v)
        p = _sigmoid(a)
        return {False: 1.0 - p, True: p}

    def erase_group(self, group: int) -> int:
        """Blank the window's examples of `group` (a user's erasure): their values, label and
        weight become 0, so no later fit reads them; how many were blanked. The fit in use
        stays (an aggregate over the window)."""
        m = min(self._n, self.window)
        rows = np.flatnonzero(self._g[:m] == group)
        self._Z[rows], self._y[rows], self._w[rows], self._g[rows] = 0.0, 0.0, 0.0, -1
        return len(rows)

    def scoring_copy(self) -> WindowedLogistic:
        """A copy that scores and explains as this one does now, without the window (what a
        model version keeps: a few floats per feature instead of `window` rows)."""
        twin = copy.copy(self)
        twin._Z, twin._y = np.zeros((0, len(self._names))), np.zeros(0)
        twin._w, twin._g = np.ones(0), np.full(0, -1, dtype=np.int64)
        twin._names, twin._column = list(self._names), dict(self._column)
        twin._n = twin._n_positive = 0
        twin._next_fit = self.first_fit
        return twin

    def warm_start(self, means: dict, scales: dict, weights: dict, intercept: float) -> None:
        """Start from a fit made elsewhere (a federated or batch model in the same units:
        standardised signed logs). It serves until the first refit, which starts from it."""
        if not set(means) == set(scales) == set(weights):
            raise ValueError("means, scales and weights must name the same features")
        self.means = {k: float(v) for k, v in means.items()}
        self.scales = {k: float(v) for k, v in scales.items()}
        self.weights = {k: float(v) for k, v in weights.items()}
        self.intercept = float(intercept)
        self._slope = {k: self.weights[k] / self.scales[k] for k in self.weights}
        self._fit_keys, self._slopes = tuple(self._slope), list(self._slope.values())
        self._offset = self.intercept - sum(self._slope[k] * self.means[k] for k in self.means)
        self._n_fits = max(self._n_fits, 1)

    def contributions_one(self, x) -> dict:
        """w_k (z_k - m_k) / s_k per feature of `x`: with `intercept`, the logit of the score."""
        slope, means = self._slope, self.means
        return {k: slope[k] * (_signed_log_or_zero(v) - means[k]) if k in slope else 0.0
                for k, v in x.items()}

    def reference_one(self, names) -> dict:
        """The raw value of each feature at the window's mean (where it contributes 0)."""
        means = self.means
        return {k: math.copysign(math.expm1(abs(means.get(k, 0.0))), means.get(k, 0.0))
                for k in names}

