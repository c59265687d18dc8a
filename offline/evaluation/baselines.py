"""Batch baselines on point-in-time training sets, scored with the online model on the same rows.

Entity rows are the online model's own prediction points: per user the last event of each
effective timestamp (so the features there are the features as of that time), subsampled
(bounded per user and overall, seeded). A time split at a cut: train on rows with
t + H <= cut (no label reaches into the test period), test on rows with t > cut. Features and
labels come from `offline.backfill.training_set` (point in time correct), the same features as
the online model's inputs; LogisticRegression (standardised), HistGradientBoosting and a small
MLP are fitted on the train rows and scored on the test rows, next to the online scores at
those very rows. Beside them, two references that learn nothing from the test period
(`offline.evaluation.rules`): the training base rate and an RFM quintile rule.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from online import catalogue as cat
from online.models.contributor import DEFAULT_FEATURES

from .rules import RFMRule, base_rate
from .scoring import entity_points, scores

__all__ = ["batch", "batch_models"]


def batch_models(seed: int) -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    # Counts and spends have heavy tails: a signed log1p before scaling, for the models that
    # are sensitive to scale (the GBM splits on ranks and needs neither).
    log1p = FunctionTransformer(_signed_log1p)
    return {
        "logistic": make_pipeline(log1p, StandardScaler(), LogisticRegression(max_iter=2000)),
        "gbm": HistGradientBoostingClassifier(random_state=seed),
        "mlp": make_pipeline(log1p, StandardScaler(), MLPClassifier(
            hidden_layer_sizes=(64, 32), alpha=1e-3, early_stopping=True, max_iter=300,
            random_state=seed)),
    }


def _signed_log1p(x):
    return np.sign(x) * np.log1p(np.abs(x))


def batch(settings, pred, y, known, horizon_us, curves, *, max_per_user, max_rows,
           test_fraction, seed) -> dict[str, Any]:
    """Batch baselines on point-in-time training sets with a time split; online on the test."""
    from sklearn.metrics import roc_curve
    from threadpoolctl import threadpool_limits

    from offline.backfill.training_set import features_at, labels

    idx = entity_points(pred, known, max_per_user=max_per_user, max_rows=max_rows, seed=seed)
    t = pred["t_us"][idx]
    cut = int(np.quantile(t, 1.0 - test_fraction)) if len(t) else 0
    train, test = idx[t + horizon_us <= cut], idx[t > cut]
    rows = np.r_[train, test]
    entities = pd.DataFrame({
        "user_id": pred["user_id"][rows],
        "event_timestamp": pd.DatetimeIndex(pred["t_us"][rows].view("datetime64[us]"))
        .tz_localize("UTC"),
    })
    X = features_at(settings, entities, DEFAULT_FEATURES).to_numpy(np.float64, na_value=np.nan)
    X = np.nan_to_num(X, nan=0.0)
    lab = labels(settings, entities, horizon_us).iloc[:, 1]
    y_ret = lab.to_numpy(dtype=bool, na_value=False)
    agree = int((y_ret == y[rows]).sum())
    n_tr = len(train)
    y_tr, y_te = y_ret[:n_tr], y_ret[n_tr:]
    out: dict[str, Any] = {
        "split": {"cut": cat.iso_utc(cut), "train_rows": n_tr, "test_rows": len(test),
                  "train_positive_rate": float(y_tr.mean()) if n_tr else None,
                  "test_positive_rate": float(y_te.mean()) if len(test) else None,
                  "labels_agree_with_retrieval": f"{agree}/{len(rows)}"},
        "batch_auc": {}, "batch": {},
    }
    online = scores(y_te, pred["score"][test])
    out["online_auc"], out["online"] = online["auc"], online
    # the test rows as every scorer sees them, for `offline.evaluation.compare`
    curves["test"] = {"y": y_te, "users": pred["user_id"][test], "X": X[n_tr:],
                      "columns": DEFAULT_FEATURES, "scores": {"online": pred["score"][test]}}
    if n_tr == 0 or len(test) == 0 or len(np.unique(y_tr)) < 2:
        out["batch_note"] = "not enough labelled rows before and after the cut to fit baselines"
        return out
    roc = {"online": roc_curve(y_te, pred["score"][test])} if online["auc"] else {}
    cal = curves.setdefault("calibration", {})
    for name, model in batch_models(seed).items():
        # One thread: the machine's cores are shared, and OpenMP threads that spin while
        # other processes hold the cores make HistGradientBoosting many times slower.
        with threadpool_limits(1):
            model.fit(X[:n_tr], y_tr)
            p = model.predict_proba(X[n_tr:])[:, 1]
        s = scores(y_te, p)
        out["batch_auc"][name], out["batch"][name] = s["auc"], s
        curves["test"]["scores"][name] = p
        if s["auc"] is not None:
            roc[name] = roc_curve(y_te, p)
            cal[f"{name} (test)"] = _calibration(y_te, p)
    out["reference"] = {}
    rule = RFMRule(DEFAULT_FEATURES).learn_many(X[:n_tr], y_tr)
    for name, p in (("base rate", base_rate(y_tr, len(test))),
                    ("RFM rule", rule.predict_proba_many(X[n_tr:]))):
        s = scores(y_te, p)
        out["reference"][name] = s
        curves["test"]["scores"][name] = p
        if name == "RFM rule" and s["auc"] is not None:
            roc[name] = roc_curve(y_te, p)
    curves["roc"] = roc
    best = max((v for v in out["batch_auc"].values() if v is not None), default=None)
    if best is not None and online["auc"] is not None:
        out["gap_to_best_batch"] = best - online["auc"]
        out["within_0_03"] = bool(best - online["auc"] <= 0.03)
        out["best_batch"] = max((k for k, v in out["batch_auc"].items() if v is not None),
                                key=lambda k: out["batch_auc"][k])
    return out


def _calibration(y, p):
    from sklearn.calibration import calibration_curve

    return calibration_curve(y, p, n_bins=10, strategy="quantile")


