"""The evaluation report: matplotlib plots (PNG, Agg), one HTML page and report.json."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_report"]


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
