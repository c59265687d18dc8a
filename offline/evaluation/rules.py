"""Reference scores that need no model: the base rate and an RFM quintile rule.

Both are set from the training rows only (before the time cut) and applied unchanged to the
test rows, so they are the floor a learnt model has to clear on the same later period.

- base rate: every row scores the training period's positive share (AUC 0.5 by definition;
  its log loss is the bar for calibration).
- RFM rule, the marketer's classic: recency, frequency and monetary value each in quintiles
  (edges from the training rows' buyers; 5 = the most recent, the most orders, the largest
  spend; 0 for a user who never bought), the score is their sum (0-15), and each sum is read
  as the positive share of the training rows with that sum (shrunk towards the base rate by
  `prior_rows` pseudo rows, so a rare sum does not score 0 or 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["RFM_COLUMNS", "RFMRule", "base_rate"]

# recency (seconds since the last purchase, -1 without one), frequency, monetary
RFM_COLUMNS = ("seconds_since_last_purchase", "order_count", "spend_total")


def base_rate(y_train: np.ndarray, n: int) -> np.ndarray:
    """The training positive share, `n` times."""
    return np.full(n, float(np.mean(y_train)) if len(y_train) else 0.5)


class RFMRule:
    """Sum of recency, frequency and monetary quintiles, read as a training positive share.

    >>> X = np.array([[-1, 0, 0], [86400, 1, 20], [3600, 4, 300], [7200, 3, 150]], float)
    >>> rule = RFMRule(("seconds_since_last_purchase", "order_count", "spend_total"))
    >>> rule.learn_many(X, np.array([False, False, True, True])).cells(X).tolist()
    [0, 3, 15, 9]
    """

    def __init__(self, columns: Sequence[str], prior_rows: float = 10.0) -> None:
        missing = [c for c in RFM_COLUMNS if c not in columns]
        if missing:
            raise ValueError(f"the RFM rule needs the columns {missing}")
        self.columns = tuple(columns)
        self.prior_rows = prior_rows
        self._edges: list[np.ndarray] = []
        self._rate: np.ndarray | None = None

    def _rfm(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        r, f, m = (np.asarray(X[:, self.columns.index(c)], np.float64) for c in RFM_COLUMNS)
        bought = (r >= 0) & (f > 0)
        return -r, f, m, bought  # -recency: larger is better, like the other two

    def learn_many(self, X: np.ndarray, y: np.ndarray) -> RFMRule:
        """Quintile edges over the buyers among the rows, then the positive share per sum."""
        *axes, bought = self._rfm(X)
        self._edges = [np.quantile(a[bought], [0.2, 0.4, 0.6, 0.8]) if bought.any()
                       else np.zeros(4) for a in axes]
        y = np.asarray(y, bool)
        prior = float(y.mean()) if len(y) else 0.5
        cells = self.cells(X)
        n = np.bincount(cells, minlength=16)
        pos = np.bincount(cells, weights=y.astype(np.float64), minlength=16)
        self._rate = (pos + prior * self.prior_rows) / (n + self.prior_rows)
        return self

    def cells(self, X: np.ndarray) -> np.ndarray:
        """The rule's score per row: R + F + M quintiles, 0 for a user who never bought."""
        if not self._edges:
            raise ValueError("the RFM rule has not learnt its quintile edges (learn_many)")
        *axes, bought = self._rfm(X)
        total = sum(np.searchsorted(e, a, side="right") + 1
                    for e, a in zip(self._edges, axes, strict=True))
        return np.where(bought, total, 0).astype(np.int64)

    def predict_proba_many(self, X: np.ndarray) -> np.ndarray:
        """The training positive share of each row's score."""
        if self._rate is None:
            raise ValueError("the RFM rule has not learnt (learn_many)")
        return self._rate[self.cells(X)]
