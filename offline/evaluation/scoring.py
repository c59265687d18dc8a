"""The online propensity model as it ran in the projector: per-event scores, labels, metrics.

The log is replayed through a fresh projector with the online models (the same deterministic
path as `portrait ingest`, so these are the scores the live projector emitted), recording the
score of every event: a prediction made before its label could be known. Labels are "a
purchase of the user with effective time in (t, t+H]" and known only when t + H <= the log's
watermark (`offline.backfill.training_set.labels`' rule, which the delayed labels of the model
follow too). Over every known prediction: prequential ROC AUC (scikit-learn's exact
`roc_auc_score`, not River's thresholded `ROCAUC`), log loss, Brier score, calibration.
"""

from __future__ import annotations

import math
import tempfile
from typing import Any

import numpy as np
import pandas as pd

from online import catalogue as cat
from online.eventlog import EventLog
from online.models import DAY_US
from online.models.contributor import ModelContributor, Predictions
from online.projector import Projector
from online.settings import Settings

__all__ = ["OnlineRun", "entity_points", "online_run", "prequential", "resolve_labels",
           "scores"]

_NEVER = np.iinfo(np.int64).max


class OnlineRun:
    """The online models replayed over the log: per-event predictions, final models and state."""

    def __init__(self, predictions: dict[str, np.ndarray], contributor: ModelContributor,
                 projector: Projector) -> None:
        self.predictions = predictions
        self.contributor = contributor
        self.projector = projector


def online_run(settings: Settings, horizon_us: int = 7 * DAY_US, *,
               progress: bool = False) -> OnlineRun:
    """Replay the data dir's log through a fresh projector with models, recording scores."""
    rec = Predictions()
    contributor = ModelContributor(horizon_us=horizon_us, recorder=rec)
    with EventLog(settings.event_log_path) as log, \
            tempfile.TemporaryDirectory(prefix="evaluate-") as scratch:
        projector = Projector(log, scratch, contributors=[contributor])
        projector.run(batch_size=settings.batch_size, progress=progress)
    return OnlineRun(rec.columns(), contributor, projector)


def resolve_labels(pred: dict[str, np.ndarray], horizon_us: int,
                   watermark_us: int) -> tuple[np.ndarray, np.ndarray]:
    """(label, known) per prediction: a purchase in (t, t+H], known when t + H <= watermark.

    >>> p = {"user_id": np.array(["a", "a", "b", "a"], object), "offset": np.arange(4),
    ...      "t_us": np.array([0, 5, 6, 9]), "is_purchase": np.array([0, 0, 1, 1], bool)}
    >>> y, known = resolve_labels(p, horizon_us=5, watermark_us=12)
    >>> y.tolist(), known.tolist()
    ([False, True, False, False], [True, True, True, False])
    """
    codes = pd.factorize(pred["user_id"])[0]
    order = np.lexsort((pred["offset"], codes))
    u, t = codes[order], np.asarray(pred["t_us"], np.int64)[order]
    buy = np.asarray(pred["is_purchase"], bool)[order]
    n = len(u)
    # Effective times never decrease within a user, so "purchases strictly after t" start
    # right after the user's last event at t: the end of its (user, t) tie group.
    new = np.r_[True, (u[1:] != u[:-1]) | (t[1:] != t[:-1])] if n else np.zeros(0, bool)
    starts = np.flatnonzero(new)
    group_end = np.r_[starts[1:], n][np.cumsum(new) - 1]
    # first purchase time at or after each position, within the user (reverse running min)
    val = pd.Series(np.where(buy, t, _NEVER)[::-1])
    first_buy = val.groupby(u[::-1]).cummin().to_numpy()[::-1]
    ok = group_end < n
    ok[ok] &= u[group_end[ok]] == u[ok]
    nxt = np.full(n, _NEVER)
    nxt[ok] = first_buy[group_end[ok]]
    y_sorted = nxt <= t + horizon_us
    known_sorted = t + horizon_us <= watermark_us
    y, known = np.empty(n, bool), np.empty(n, bool)
    y[order], known[order] = y_sorted, known_sorted
    return y, known


def entity_points(pred: dict[str, np.ndarray], known: np.ndarray, *, max_per_user: int = 20,
                  max_rows: int = 40_000, seed: int = 0) -> np.ndarray:
    """Positions of sampled prediction points: last event per (user, t), label known."""
    df = pd.DataFrame({"u": pred["user_id"], "t": pred["t_us"], "i": np.arange(len(known))})
    last = df[known].groupby(["u", "t"], sort=False)["i"].max().to_numpy()
    rng = np.random.default_rng(seed)
    last = last[rng.permutation(len(last))]
    users = pd.Series(pred["user_id"][last])
    picked = last[(users.groupby(users).cumcount() < max_per_user).to_numpy()]
    return np.sort(picked[:max_rows])


def scores(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

    if len(y) == 0:
        return {"auc": None, "log_loss": None, "brier": None, "n": 0, "positive_rate": None}
    from sklearn.metrics import average_precision_score

    p = np.clip(p, 1e-7, 1 - 1e-7)
    two = len(np.unique(y)) == 2
    rate = float(np.mean(y))
    # the constant that knows the positive share in hindsight: the bar a model must beat
    base = (-(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
            if 0.0 < rate < 1.0 else None)
    top = np.argsort(-p, kind="stable")[: max(1, len(p) // 10)]
    return {"auc": float(roc_auc_score(y, p)) if two else None,
            "average_precision": float(average_precision_score(y, p)) if two else None,
            "log_loss": float(log_loss(y, p, labels=[False, True])),
            "base_rate_log_loss": base,
            "lift_top_10pct": float(np.mean(y[top]) / rate) if rate > 0 else None,
            "brier": float(brier_score_loss(y, p)), "n": int(len(y)),
            "positive_rate": rate}


def prequential(pred, y, known, curves) -> dict[str, Any]:
    """Every resolved online prediction: AUC, log loss, calibration, AUC over time."""
    from sklearn.calibration import calibration_curve

    p, yk, tk = pred["score"][known], y[known], pred["t_us"][known]
    s = scores(yk, p)
    if s["n"]:
        curves["calibration"] = {"online (prequential)": calibration_curve(
            yk, p, n_bins=10, strategy="quantile")}
        periods = []
        for part in np.array_split(np.argsort(tk, kind="stable"), 10):
            sub = scores(yk[part], p[part])
            periods.append({"from": cat.iso_utc(int(tk[part].min())), "auc": sub["auc"],
                            "positive_rate": sub["positive_rate"], "n": sub["n"]})
        curves["auc_over_time"] = periods
    else:
        periods = []
    return {"prequential": {**s, "unresolved": int((~known).sum())},
            "online_auc_by_period": periods}


