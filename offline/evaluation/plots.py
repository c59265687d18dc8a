"""The evaluation's figures: matplotlib (Agg) PNGs, one function per figure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["draw_all"]

Save = Callable[[Any, str, str], None]


def draw_all(report: dict[str, Any], curves: dict[str, Any], save: Save) -> None:
    """Every figure the curves allow, each handed to ``save(fig, file name, caption)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for draw in (_roc, _pr, _gains, _importances, _calibration, _auc_over_time, _segments):
        draw(plt, report, curves, save)


def _auc_of(report: dict, name: str) -> float | None:
    p = report["propensity"]
    if name == "online":
        return p.get("online_auc")
    if name in p.get("batch_auc", {}):
        return p["batch_auc"][name]
    return p.get("reference", {}).get(name, {}).get("auc")


def _roc(plt, report, curves, save: Save) -> None:
    if not curves.get("roc"):
        return
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, (fpr, tpr, _) in curves["roc"].items():
        ax.plot(fpr, tpr, label=f"{name} (AUC {_auc_of(report, name):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate",
           title="Purchase propensity, test period")
    ax.legend(loc="lower right", fontsize=8)
    save(fig, "roc.png", "ROC curves on the test period (after the cut).")


def _pr(plt, report, curves, save: Save) -> None:
    if not curves.get("pr"):
        return
    ap = report["propensity"]["test_period"]["average_precision"]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, (precision, recall) in curves["pr"].items():
        if name == "base rate":
            continue
        ax.step(recall, precision, where="post", label=f"{name} (AP {ap[name]:.3f})")
    rate = report["propensity"]["test_period"]["positive_rate"]
    ax.axhline(rate, color="k", ls=":", lw=1, label=f"base rate ({rate:.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title="Precision-recall, test period")
    ax.legend(loc="upper right", fontsize=8)
    save(fig, "pr.png", "Precision-recall curves and average precision on the test period; "
         "the dotted line is the precision of a random ranking (the positive share).")


def _gains(plt, report, curves, save: Save) -> None:
    if not curves.get("gains"):
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5))
    grid = np.linspace(0, 1, 101)
    for name, curve in curves["gains"].items():
        if name != "base rate":
            a.plot(grid, curve, label=name)
    a.plot([0, 1], [0, 1], "k:", lw=1, label="random")
    a.set(xlabel="share of rows contacted (by score)", ylabel="share of buyers captured",
          title="Cumulative gains, test period")
    a.legend(loc="lower right", fontsize=8)
    table = report["propensity"]["test_period"]["lift_gains"]
    names = [n for n in table if n != "base rate"]
    tops = [r["top"] for r in table[names[0]]] if names else []
    w = 0.8 / max(len(names), 1)
    for j, name in enumerate(names):
        lifts = [r["lift"] or 0.0 for r in table[name]]
        b.bar(np.arange(len(tops)) + (j - (len(names) - 1) / 2) * w, lifts, w, label=name)
    b.axhline(1.0, color="k", ls=":", lw=1)
    b.set_xticks(range(len(tops)), tops)
    b.set(xlabel="top share of rows by score", ylabel="lift (precision / positive share)",
          title="Lift at the top k%")
    b.legend(fontsize=8)
    save(fig, "gains.png", "Cumulative gains and lift at the top k% of test rows by score.")


def _importances(plt, report, curves, save: Save) -> None:
    feats = (curves.get("importances") or [])[:15]
    if not feats:
        return
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(feats) + 1.2))
    names = [f["feature"] + (f" (= {', '.join(f['same_as'])})" if f["same_as"] else "")
             for f in feats]
    ax.barh(range(len(feats)), [f["mean_abs_contribution"] for f in feats])
    ax.set_yticks(range(len(feats)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="mean |contribution| over test rows", title="Online model: global importance")
    save(fig, "importances.png", "Global importances of the online model (the model at the "
         "end of the log): the mean absolute contribution of each reason its profiles give.")


def _calibration(plt, report, curves, save: Save) -> None:
    if not curves.get("calibration"):
        return
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, (frac, mean) in curves["calibration"].items():
        ax.plot(mean, frac, marker="o", ms=3, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="mean predicted probability", ylabel="observed purchase rate",
           title="Calibration (quantile bins)")
    ax.legend(loc="upper left", fontsize=8)
    save(fig, "calibration.png", "Calibration of the online model (all resolved "
         "predictions) and of the baselines (test period).")


def _auc_over_time(plt, report, curves, save: Save) -> None:
    periods = [p for p in curves.get("auc_over_time") or [] if p["auc"] is not None]
    if not periods:
        return
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(range(len(periods)), [p["auc"] for p in periods], marker="o")
    ax.set_xticks(range(len(periods)), [p["from"][:10] for p in periods], rotation=45,
                  fontsize=7)
    ax.set(ylabel="ROC AUC", title="Online model, prequential AUC by period")
    save(fig, "auc_over_time.png", "Prequential AUC of the online model per tenth of time.")


def _segments(plt, report, curves, save: Save) -> None:
    if not curves.get("segments"):
        return
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
