"""Test-period comparisons of every scorer: precision-recall, lift and gains, AUC intervals,
and the online model's global feature importances.

All of it is computed on the test rows of `offline.evaluation.baselines` (after the time cut),
where the online model, the fitted baselines and the reference rules score the very same rows.

- Precision-recall curves and average precision (scikit-learn's step-wise AP).
- Lift and gains at the top k% of rows by score: precision there, lift = precision / test
  positive share, gains = share of all test positives captured. Ties in a score (the rules
  have few distinct values) are broken by a seeded random order, not by row order.
- AUC differences with 95% intervals: a paired bootstrap over *users* (a replicate draws the
  test users with replacement and keeps all their rows, every scorer on the same draw), since
  rows of one user are not independent; percentile intervals, seeded.
- Global importances of the online model: the mean |contribution| over the test rows of the
  reasons its profiles give (`PurchasePropensity.explain_one`), for the model as it stands at
  the end of the log; features the explainer lists as one reason are counted once.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["FRACTIONS", "auc_intervals", "gains", "importances", "pr_curves", "comparisons",
           "weighted_aucs"]

FRACTIONS = (0.01, 0.02, 0.05, 0.10, 0.20, 0.30, 0.50)


def pr_curves(y: np.ndarray, by_name: dict[str, np.ndarray]) -> dict[str, tuple]:
    """(precision, recall) per scorer on the test rows."""
    from sklearn.metrics import precision_recall_curve

    if len(np.unique(y)) < 2:
        return {}
    return {name: precision_recall_curve(y, p)[:2] for name, p in by_name.items()}


def _ranked(p: np.ndarray, seed: int) -> np.ndarray:
    tie = np.random.default_rng(seed).random(len(p))
    return np.lexsort((tie, -np.asarray(p, np.float64)))


def gains(y: np.ndarray, p: np.ndarray, *, fractions: Sequence[float] = FRACTIONS,
          seed: int = 0) -> tuple[list[dict], np.ndarray]:
    """Rows at each top fraction, and the cumulative gains curve on a grid of 101 fractions.

    >>> rows, curve = gains(np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0], bool),
    ...                     np.linspace(1, 0, 10), fractions=(0.1, 0.5))
    >>> [(r["top"], r["precision"], r["lift"], r["captured"]) for r in rows]
    [('10%', 1.0, 5.0, 0.5), ('50%', 0.4, 2.0, 1.0)]
    """
    y = np.asarray(y, bool)
    n, positives = len(y), int(y.sum())
    hits = np.r_[0, np.cumsum(y[_ranked(p, seed)])]
    rate = positives / n if n else 0.0
    rows = []
    for f in fractions:
        k = max(1, int(round(f * n))) if n else 0
        precision = float(hits[k] / k) if k else None
        rows.append({"top": f"{f:.0%}", "rows": k, "precision": precision,
                     "lift": precision / rate if precision is not None and rate else None,
                     "captured": float(hits[k] / positives) if positives else None})
    grid = np.round(np.linspace(0, 1, 101) * n).astype(int)
    curve = hits[grid] / positives if positives else np.zeros(101)
    return rows, curve


def auc_intervals(y: np.ndarray, by_name: dict[str, np.ndarray], users: np.ndarray,
                  reference: str = "online", *, n_boot: int = 300, seed: int = 0) -> dict:
    """AUC(reference) - AUC(other) per scorer: the point value and a paired user bootstrap.

    >>> rng = np.random.default_rng(0)
    >>> y = rng.random(400) < 0.3
    >>> good, noise = y + rng.normal(0, 0.5, 400), rng.random(400)
    >>> out = auc_intervals(y, {"online": good, "coin": noise}, np.arange(400) // 4)
    >>> lo, hi = out["vs"]["coin"]["ci95"]
    >>> 0 < lo < out["vs"]["coin"]["difference"] < hi
    True
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y, bool)
    codes, groups = np.unique(np.asarray(users).astype(str), return_inverse=True)[0:2]
    out: dict[str, Any] = {
        "method": "paired bootstrap over users (all rows of each drawn user), percentile "
                  "95% interval",
        "replicates": n_boot, "seed": seed, "users": int(len(codes)), "reference": reference,
        "vs": {}}
    if len(np.unique(y)) < 2 or reference not in by_name:
        return out
    rng = np.random.default_rng(seed)
    # replicate b keeps user u's rows counts[b, u] times: row weights W[b, i]
    W = np.stack([np.bincount(rng.integers(0, len(codes), len(codes)), minlength=len(codes))
                  for _ in range(n_boot)])[:, groups].astype(np.float64)
    pos, neg = W[:, y].sum(axis=1), W[:, ~y].sum(axis=1)
    W = W[(pos > 0) & (neg > 0)]  # a draw without both classes has no AUC

    def aucs(p: np.ndarray) -> tuple[float, np.ndarray]:
        return float(roc_auc_score(y, p)), weighted_aucs(y, p, W)

    ref, ref_draws = aucs(by_name[reference])
    for name, p in by_name.items():
        if name == reference:
            continue
        auc, draws = aucs(p)
        diff = ref_draws - draws
        lo, hi = (np.quantile(diff, [0.025, 0.975]) if len(diff) else (np.nan, np.nan))
        out["vs"][name] = {"difference": ref - auc, "ci95": [float(lo), float(hi)],
                           "replicates_used": len(diff),
                           "p_reference_not_better": float(np.mean(diff <= 0))
                           if len(diff) else None}
    return out


def weighted_aucs(y: np.ndarray, p: np.ndarray, W: np.ndarray) -> np.ndarray:
    """ROC AUC of scores `p` for labels `y` under each row of row weights `W` (ties count 1/2).

    The same as scikit-learn's ``roc_auc_score(y, p, sample_weight=w)`` per row, in one
    vectorised pass (scikit-learn's per-call checks cost more than the sums).

    >>> from sklearn.metrics import roc_auc_score
    >>> rng = np.random.default_rng(1)
    >>> y, p = rng.random(50) < 0.4, rng.integers(0, 8, 50).astype(float)
    >>> W = rng.integers(0, 3, (4, 50)).astype(float)
    >>> mine = weighted_aucs(y, p, W)
    >>> bool(np.allclose(mine, [roc_auc_score(y, p, sample_weight=w) for w in W]))
    True
    """
    order = np.argsort(p, kind="stable")
    ps, ys, Ws = np.asarray(p)[order], np.asarray(y, bool)[order], W[:, order]
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])  # groups of tied scores
    wpos = np.add.reduceat(Ws * ys, starts, axis=1)
    wneg = np.add.reduceat(Ws * ~ys, starts, axis=1)
    below = np.cumsum(wneg, axis=1) - wneg  # negative weight strictly below each group
    num = (wpos * (below + 0.5 * wneg)).sum(axis=1)
    return num / (wpos.sum(axis=1) * wneg.sum(axis=1))


def importances(propensity, X: np.ndarray, columns: Sequence[str], *, max_rows: int = 2_000,
                seed: int = 0) -> list[dict]:
    """Mean |contribution| per reason of the online model over (a sample of) the rows."""
    rows = np.arange(len(X))
    if len(rows) > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_rows, replace=False))
    wanted = [columns.index(f) for f in propensity.features]
    total: dict[str, float] = defaultdict(float)
    merged: dict[str, Counter] = defaultdict(Counter)
    for i in rows:
        x = dict(zip(propensity.features, X[i, wanted].tolist(), strict=True))
        for reason in propensity.explain_one(x, top=len(propensity.features)):
            total[reason["feature"]] += abs(reason["contribution"])
            for other in reason.get("same_as", ()):
                merged[reason["feature"]][other] += 1
    n = max(len(rows), 1)
    ranked = sorted(total, key=lambda k: (-total[k], k))
    return [{"feature": k, "mean_abs_contribution": total[k] / n,
             "same_as": sorted(o for o, c in merged[k].items() if c * 2 >= n)}
            for k in ranked]


def comparisons(test: dict, propensity, curves: dict, *, seed: int = 0,
                n_boot: int = 300) -> dict[str, Any]:
    """Every comparison above on the test rows `baselines.batch` left in ``curves["test"]``."""
    from sklearn.metrics import average_precision_score

    y, by_name = np.asarray(test["y"], bool), test["scores"]
    two = len(np.unique(y)) == 2
    curves["pr"] = pr_curves(y, by_name)
    out: dict[str, Any] = {
        "positive_rate": float(y.mean()) if len(y) else None,
        "average_precision": {k: float(average_precision_score(y, p)) if two else None
                              for k, p in by_name.items()},
        "lift_gains": {}, "gains_curve_points": 101}
    curves["gains"] = {}
    for name, p in by_name.items():
        rows, curve = gains(y, p, seed=seed)
        out["lift_gains"][name] = rows
        curves["gains"][name] = curve
    out["auc_difference"] = auc_intervals(y, by_name, test["users"], n_boot=n_boot, seed=seed)
    out["importances"] = {
        "model": "online propensity at the end of the log",
        "measure": "mean |contribution| of the profile's reasons over the test rows "
                   "(logit units for a linear model, probability for occlusion)",
        "features": importances(propensity, test["X"], list(test["columns"]), seed=seed)}
    curves["importances"] = out["importances"]["features"]
    return out
