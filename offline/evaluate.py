"""Model quality: the online models as they ran in the projector against batch baselines.

Propensity. The log is replayed through a fresh projector with the online models (the same
deterministic path as `portrait ingest`, so these are the scores the live projector emitted),
recording the score of every event: a prediction made before its label could be known.
Labels are "a purchase of the user with effective time in (t, t+H]" and known only when
t + H <= the log's watermark (`offline.backfill.training_set.labels`' rule, which the delayed
labels of
the model follow too). Over every known prediction: prequential ROC AUC (scikit-learn's
exact `roc_auc_score`, not River's thresholded `ROCAUC`), log loss, Brier score, calibration.

Batch baselines. Entity rows are the online model's own prediction points: per user the last
event of each effective timestamp (so the features there are the features as of that time),
subsampled (bounded per user and overall, seeded). A time split at a cut: train on rows with
t + H <= cut (no label reaches into the test period), test on rows with t > cut. Features
and labels come from `offline.backfill.training_set` (point in time correct), the same features
as the
online model's inputs; LogisticRegression (standardised), HistGradientBoosting and a small
MLP are fitted on the train rows and scored on the test rows, next to the online scores at
those very rows.

Segments. A seeded sample of users at the watermark; both label sets are judged on the same
standardised log1p RFM features: the online segments (`UserSegments.predict_one`) and a batch
`KMeans` with the same k. Silhouette (scikit-learn's classic one; River's
`metrics.Silhouette` is a different quantity and is not reported) and the adjusted Rand index
between the two labellings.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from online import catalogue as cat
from online import kernels
from online.eventlog import EventLog
from online.extras import require
from online.models import DAY_US, format_duration
from online.models.contributor import DEFAULT_FEATURES, ModelContributor, Predictions
from online.projector import Projector
from online.settings import Settings

__all__ = ["OnlineRun", "evaluate", "online_run", "resolve_labels", "entity_points"]

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


def evaluate(settings: Settings, horizon_us: int = 7 * DAY_US, out_dir: Path | None = None,
             *, max_per_user: int = 20, max_rows: int = 40_000, test_fraction: float = 0.3,
             segment_users: int = 3_000, seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Evaluate the online models of the data dir's log; write the report into ``out_dir``."""
    from offline.backfill import replay as rp

    for module in ("sklearn", "matplotlib"):  # fail before the long online run, not after
        require(module, extra="evaluate", purpose="model evaluation and its plots")
    started = time.perf_counter()
    phase = _Phases(progress)
    out = Path(out_dir) if out_dir is not None else settings.data_dir / "reports" / "evaluation"
    phase("1/5 online run: the projector with the models over the whole log")
    run = online_run(settings, horizon_us, progress=progress)
    pred = run.predictions
    if len(pred["score"]) == 0:
        raise ValueError(f"the event log in {settings.data_dir} is empty: nothing to evaluate")
    with EventLog(settings.event_log_path) as log:
        if rp.replayed_end(settings) < log.next_offset:  # retrieval reads the snapshot
            phase("2/5 replay: the snapshot the batch baselines train on")
            rp.replay(settings, progress=progress)
    watermark = int(rp.watermark(settings))
    phase("3/5 propensity: prequential scores of the online model")
    y, known = resolve_labels(pred, horizon_us, watermark)
    curves: dict[str, Any] = {}
    report: dict[str, Any] = {
        "data_dir": str(settings.data_dir),
        "events": int(len(y)),
        "users": int(len(set(pred["user_id"].tolist()))),
        "propensity": {"horizon": format_duration(horizon_us),
                       "features": len(run.contributor.models.propensity.features),
                       **_prequential(pred, y, known, curves)},
    }
    phase("4/5 propensity: batch baselines (training sets, scikit-learn fits)")
    report["propensity"].update(_batch(settings, pred, y, known, horizon_us, curves,
                                       max_per_user=max_per_user, max_rows=max_rows,
                                       test_fraction=test_fraction, seed=seed))
    phase("5/5 segments against k-means; writing the report")
    report["segments"] = _segments(run, segment_users, seed, curves)
    report["model_version"] = run.contributor.model_version
    report["river_silhouette"] = ("not reported: River's metrics.Silhouette is not the "
                                  "classic silhouette")
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["report"] = str(write_report(report, curves, out))
    phase.done()
    return report


class _Phases:
    """Say on stderr which phase of the evaluation runs and how long the last one took."""

    def __init__(self, enabled: bool) -> None:
        self._enabled, self._name, self._t = enabled, None, time.perf_counter()

    def __call__(self, name: str) -> None:
        self._finish()
        self._name, self._t = name, time.perf_counter()
        if self._enabled:
            print(f"evaluate: {name} ...", file=sys.stderr, flush=True)

    def _finish(self) -> None:
        if self._enabled and self._name is not None:
            took = time.perf_counter() - self._t
            print(f"evaluate: {self._name.split(':')[0]} done in {took:.1f}s", file=sys.stderr,
                  flush=True)

    def done(self) -> None:
        self._finish()
        self._name = None


# -- propensity ------------------------------------------------------------------------------


def _scores(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
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


def _prequential(pred, y, known, curves) -> dict[str, Any]:
    """Every resolved online prediction: AUC, log loss, calibration, AUC over time."""
    from sklearn.calibration import calibration_curve

    p, yk, tk = pred["score"][known], y[known], pred["t_us"][known]
    s = _scores(yk, p)
    if s["n"]:
        curves["calibration"] = {"online (prequential)": calibration_curve(
            yk, p, n_bins=10, strategy="quantile")}
        periods = []
        for part in np.array_split(np.argsort(tk, kind="stable"), 10):
            sub = _scores(yk[part], p[part])
            periods.append({"from": cat.iso_utc(int(tk[part].min())), "auc": sub["auc"],
                            "positive_rate": sub["positive_rate"], "n": sub["n"]})
        curves["auc_over_time"] = periods
    else:
        periods = []
    return {"prequential": {**s, "unresolved": int((~known).sum())},
            "online_auc_by_period": periods}


def _batch_models(seed: int) -> dict[str, Any]:
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


def _batch(settings, pred, y, known, horizon_us, curves, *, max_per_user, max_rows,
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
    online = _scores(y_te, pred["score"][test])
    out["online_auc"], out["online"] = online["auc"], online
    if n_tr == 0 or len(test) == 0 or len(np.unique(y_tr)) < 2:
        out["batch_note"] = "not enough labelled rows before and after the cut to fit baselines"
        return out
    roc = {"online": roc_curve(y_te, pred["score"][test])} if online["auc"] else {}
    cal = curves.setdefault("calibration", {})
    for name, model in _batch_models(seed).items():
        # One thread: the machine's cores are shared, and OpenMP threads that spin while
        # other processes hold the cores make HistGradientBoosting many times slower.
        with threadpool_limits(1):
            model.fit(X[:n_tr], y_tr)
            p = model.predict_proba(X[n_tr:])[:, 1]
        s = _scores(y_te, p)
        out["batch_auc"][name], out["batch"][name] = s["auc"], s
        if s["auc"] is not None:
            roc[name] = roc_curve(y_te, p)
            cal[f"{name} (test)"] = _calibration(y_te, p)
    curves["roc"] = roc
    best = max((v for v in out["batch_auc"].values() if v is not None), default=None)
    if best is not None and online["auc"] is not None:
        out["gap_to_best_batch"] = best - online["auc"]
        out["within_0_03"] = bool(best - online["auc"] <= 0.03)
    return out


def _calibration(y, p):
    from sklearn.calibration import calibration_curve

    return calibration_curve(y, p, n_bins=10, strategy="quantile")


# -- segments --------------------------------------------------------------------------------


def _segments(run: OnlineRun, n_users: int, seed: int, curves) -> dict[str, Any]:
    """Online segments vs batch KMeans on the same standardised RFM features of sampled users."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, silhouette_score
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    seg = run.contributor.models.segments
    state, k = run.projector.state, seg.n_clusters
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(state.n_users, size=min(n_users, state.n_users), replace=False))
    values = kernels.evaluate(state, rows, run.projector.watermark_us, names=list(seg.inputs))
    xs = [{n: values[n][i].item() for n in seg.inputs} for i in range(len(rows))]
    R = np.array([list(seg.rfm(x).values()) for x in xs])  # log1p RFM, as the model sees it
    Z = StandardScaler().fit_transform(R)
    online = np.array([seg.predict_one(x) for x in xs])
    with threadpool_limits(1):
        batch = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(Z)

    def silhouette(labels):
        if len(np.unique(labels)) < 2 or len(labels) <= len(np.unique(labels)):
            return None
        return float(silhouette_score(Z, labels, random_state=seed))

    described = seg.describe()
    curves["segments"] = {
        "online_sizes": np.bincount(online, minlength=k), "batch_sizes":
        np.bincount(batch.labels_, minlength=k),
        "online_centroids": np.array([[d["centroid"][a] for a in d["centroid"]]
                                      for d in described]),
        "batch_centroids": batch.cluster_centers_,
        "axes": list(described[0]["centroid"]) if described else [],
        "labels": [d["label"] for d in described],
    }
    return {
        "k": int(k), "users_sampled": int(len(rows)),
        "silhouette_online": silhouette(online), "silhouette_batch": silhouette(batch.labels_),
        "ari": float(adjusted_rand_score(batch.labels_, online)),
        "online_segments_used": int(len(np.unique(online))),
        "online": [{"id": d["id"], "label": d["label"], "learnt": d["size"],
                    "sampled_users": int((online == d["id"]).sum())} for d in described],
    }


# -- report ----------------------------------------------------------------------------------


def write_report(report: dict[str, Any], curves: dict[str, Any], out: Path) -> Path:
    """Plots (PNG, Agg) and index.html (+ report.json) in ``out``; returns the HTML's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    figures = []

    def save(fig, name: str, caption: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        figures.append((name, caption))

    if curves.get("roc"):
        fig, ax = plt.subplots(figsize=(5.5, 5))
        for name, (fpr, tpr, _) in curves["roc"].items():
            auc = (report["propensity"]["online_auc"] if name == "online"
                   else report["propensity"]["batch_auc"][name])
            ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        ax.set(xlabel="false positive rate", ylabel="true positive rate",
               title="Purchase propensity, test period")
        ax.legend(loc="lower right")
        save(fig, "roc.png", "ROC curves on the test period (after the cut).")
    if curves.get("calibration"):
        fig, ax = plt.subplots(figsize=(5.5, 5))
        for name, (frac, mean) in curves["calibration"].items():
            ax.plot(mean, frac, marker="o", ms=3, label=name)
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        ax.set(xlabel="mean predicted probability", ylabel="observed purchase rate",
               title="Calibration (quantile bins)")
        ax.legend(loc="upper left", fontsize=8)
        save(fig, "calibration.png", "Calibration of the online model (all resolved "
             "predictions) and of the baselines (test period).")
    if curves.get("auc_over_time"):
        periods = [p for p in curves["auc_over_time"] if p["auc"] is not None]
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot(range(len(periods)), [p["auc"] for p in periods], marker="o")
        ax.set_xticks(range(len(periods)), [p["from"][:10] for p in periods], rotation=45,
                      fontsize=7)
        ax.set(ylabel="ROC AUC", title="Online model, prequential AUC by period")
        save(fig, "auc_over_time.png", "Prequential AUC of the online model per tenth of time.")
    if curves.get("segments"):
        s = curves["segments"]
        k = len(s["online_sizes"])
        fig, axes = plt.subplots(1, 3, figsize=(14, 4))
        w = 0.4
        axes[0].bar(np.arange(k) - w / 2, s["online_sizes"], w, label="online")
        axes[0].bar(np.arange(k) + w / 2, s["batch_sizes"], w, label="batch KMeans")
        axes[0].set(xlabel="segment", ylabel="sampled users", title="Segment sizes")
        axes[0].legend()
        for ax, name, title in ((axes[1], "online_centroids", "Online centroids (model units)"),
                                (axes[2], "batch_centroids", "KMeans centroids (sample units)")):
            m = ax.imshow(s[name], cmap="coolwarm", vmin=-2.5, vmax=2.5, aspect="auto")
            ax.set_xticks(range(len(s["axes"])), s["axes"], rotation=20, fontsize=8)
            ax.set(ylabel="segment", title=title)
            fig.colorbar(m, ax=ax)
        save(fig, "segments.png", "Segment sizes in the user sample and centroids (standard "
             "deviations from the mean, log1p RFM axes). Online labels: "
             + "; ".join(f"{i}: {lab}" for i, lab in enumerate(s["labels"])))
    (out / "report.json").write_text(json.dumps(report, indent=2, default=_plain), "utf-8")
    (out / "index.html").write_text(_html(report, figures), "utf-8")
    return out / "index.html"


def _plain(v):
    return v.item() if isinstance(v, np.generic) else str(v)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4f}"
    return "n/a" if v is None else str(v)


def _html(report: dict[str, Any], figures: list[tuple[str, str]]) -> str:
    from html import escape

    p, s = report["propensity"], report["segments"]
    rows = [("online (prequential, all resolved)", p["prequential"])]
    rows += [("online (test period)", p.get("online", {}))]
    rows += [(f"batch {k} (test period)", v) for k, v in p.get("batch", {}).items()]
    table = "".join(
        f"<tr><td>{escape(n)}</td><td>{_fmt(m.get('auc'))}</td><td>{_fmt(m.get('log_loss'))}"
        f"</td><td>{_fmt(m.get('brier'))}</td><td>{_fmt(m.get('n'))}</td></tr>"
        for n, m in rows)
    seg = "".join(f"<tr><td>{escape(k)}</td><td>{_fmt(s.get(k))}</td></tr>" for k in (
        "k", "users_sampled", "silhouette_online", "silhouette_batch", "ari",
        "online_segments_used"))
    figs = "".join(f'<figure><img src="{escape(n)}" alt="{escape(n)}"><figcaption>'
                   f"{escape(c)}</figcaption></figure>" for n, c in figures)
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>portrait: model evaluation</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
td,th{{border:1px solid #ccc;padding:3px 8px}}table{{border-collapse:collapse}}
img{{max-width:100%}}</style></head><body>
<h1>Model evaluation</h1>
<p>{report['events']:,} events, {report['users']:,} users in {escape(report['data_dir'])};
model version {escape(report['model_version'])}; horizon {escape(p['horizon'])}.</p>
<h2>Purchase propensity</h2>
<p>Split: {escape(json.dumps(p.get('split', {}), default=str))}</p>
<table><tr><th>model</th><th>ROC AUC</th><th>log loss</th><th>Brier</th><th>rows</th></tr>
{table}</table>
<h2>Segments</h2><table>{seg}</table>
<p>Silhouette: scikit-learn's classic silhouette on standardised log1p RFM features of the
sampled users, for the online segments and for a batch KMeans with the same k; ARI compares
the two labellings. River's <code>metrics.Silhouette</code> is a different quantity and is not
reported.</p>
{figs}
</body></html>
"""
