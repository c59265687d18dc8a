"""The evaluation report: the figures (`offline.evaluation.plots`), index.html, report.json.

The page is self-contained apart from its PNGs (no script, no external style), so it opens
from the file system in any browser; every table has an ``id`` so tests and readers can find
it: ``metrics``, ``auc-intervals``, ``lift-gains``, ``importances``, ``segments-quality`` and
``segment-<id>`` per online segment.
"""

from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from .plots import draw_all

__all__ = ["write_report"]


def write_report(report: dict[str, Any], curves: dict[str, Any], out: Path) -> Path:
    """Plots (PNG, Agg) and index.html (+ report.json) in ``out``; returns the HTML's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, str]] = []

    def save(fig, name: str, caption: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        figures.append((name, caption))

    draw_all(report, curves, save)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=_plain), "utf-8")
    (out / "index.html").write_text(_html(report, figures), "utf-8")
    return out / "index.html"


def _plain(v):
    return v.item() if isinstance(v, np.generic) else str(v)


def _fmt(v, digits: int = 4) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:,.{digits}f}"
    return "n/a" if v is None else escape(str(v))


def _table(table_id: str, head: list[str], rows: list[list], caption: str = "") -> str:
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table id="{table_id}">{cap}<tr>{th}</tr>{body}</table>'


def _metrics(p: dict) -> str:
    ap = p.get("test_period", {}).get("average_precision", {})
    rows = [("online (prequential, all resolved)", p["prequential"], None)]
    rows += [("online (test period)", p.get("online", {}), ap.get("online"))]
    rows += [(f"batch {k} (test period)", v, ap.get(k)) for k, v in p.get("batch", {}).items()]
    rows += [(f"{k} (test period)", v, ap.get(k)) for k, v in p.get("reference", {}).items()]
    return _table("metrics", ["model", "ROC AUC", "average precision", "log loss",
                              "base-rate log loss", "Brier", "rows"],
                  [[escape(n), _fmt(m.get("auc")),
                    _fmt(a if a is not None else m.get("average_precision")),
                    _fmt(m.get("log_loss")), _fmt(m.get("base_rate_log_loss")),
                    _fmt(m.get("brier")), _fmt(m.get("n"))] for n, m, a in rows])


def _intervals(t: dict) -> str:
    d = t["auc_difference"]
    rows = [[escape(f"{d['reference']} - {k}"), _fmt(v["difference"]),
             f"[{_fmt(v['ci95'][0])}, {_fmt(v['ci95'][1])}]", _fmt(v["p_reference_not_better"]),
             _fmt(v["replicates_used"])] for k, v in d["vs"].items()]
    return _table("auc-intervals", ["AUC difference", "point", "95% interval",
                                    "share of replicates <= 0", "replicates"], rows,
                  f"{d['method']}; {d['users']:,} test users, seed {d['seed']}.")


def _lift(t: dict) -> str:
    table = t["lift_gains"]
    if not table:
        return ""
    tops = [r["top"] for r in next(iter(table.values()))]
    rows = [[escape(name), *(f"{_fmt(r['lift'], 2)} / {_fmt(r['captured'], 3)}" for r in rs)]
            for name, rs in table.items()]
    return _table("lift-gains", ["model", *(f"top {k}" for k in tops)], rows,
                  "lift / share of buyers captured, at the top k% of test rows by score "
                  f"(positive share {_fmt(t['positive_rate'])}).")


def _importances(t: dict) -> str:
    imp = t["importances"]
    rows = [[escape(f["feature"]), _fmt(f["mean_abs_contribution"]),
             escape(", ".join(f["same_as"])) or "-"] for f in imp["features"][:20]]
    return _table("importances", ["feature", "mean |contribution|", "explained together with"],
                  rows, f"{imp['model']}: {imp['measure']}.")


def _segment_tables(s: dict) -> str:
    parts = []
    for seg in s.get("business", []):
        rows = [[escape(m["measure"]), escape(m["unit"]), _fmt(m["users"]),
                 _fmt(m["total"], 2), _fmt(m["mean"], 2), _fmt(m["median"], 2),
                 f"{_fmt(m['p25'], 2)} - {_fmt(m['p75'], 2)}"] for m in seg["measures"]]
        parts.append(f"<h3>Segment {seg['id']}: {escape(seg['label'])}</h3>" + _table(
            f"segment-{seg['id']}", ["measure", "unit", "users", "total", "mean", "median",
                                     "interquartile"], rows,
            f"{seg['users']:,} users, {seg['share']:.1%} of the {s['users_sampled']:,} "
            f"sampled ({seg['sample_of']:,} users in all), as of the log's end; "
            f"{seg['buyers']:,} of them ever bought."))
    return "".join(parts)


def _html(report: dict[str, Any], figures: list[tuple[str, str]]) -> str:
    p, s = report["propensity"], report["segments"]
    t = p.get("test_period")
    seg = _table("segments-quality", ["measure", "value"], [[escape(k), _fmt(s.get(k))] for k in (
        "k", "users_sampled", "silhouette_online", "silhouette_batch", "ari",
        "online_segments_used")])
    figs = "".join(f'<figure><img src="{escape(n)}" alt="{escape(n)}"><figcaption>'
                   f"{escape(c)}</figcaption></figure>" for n, c in figures)
    comparisons = (_intervals(t) + "<h3>Lift and gains</h3>" + _lift(t)
                   + "<h3>Global importances</h3>" + _importances(t)) if t else (
        f"<p>{escape(p.get('batch_note', 'no test period'))}</p>")
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>portrait: model evaluation</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
td,th{{border:1px solid #ccc;padding:3px 8px}}table{{border-collapse:collapse;margin:1em 0}}
caption{{caption-side:bottom;text-align:left;font-size:90%;color:#555}}
img{{max-width:100%}}</style></head><body>
<h1>Model evaluation</h1>
<p>{report['events']:,} events, {report['users']:,} users in {escape(report['data_dir'])};
model version {escape(report['model_version'])}; horizon {escape(p['horizon'])}.</p>
<h2>Purchase propensity</h2>
<p>Split: {escape(json.dumps(p.get('split', {}), default=str))}</p>
{_metrics(p)}
<p>References learn nothing from the test period: the base rate scores every row with the
training positive share; the RFM rule sums recency, frequency and monetary quintiles (edges
from the training buyers) and reads each sum as its training positive share.</p>
<h3>AUC differences</h3>
{comparisons}
<h2>Segments</h2>{seg}
<p>Silhouette: scikit-learn's classic silhouette on standardised log1p RFM features of the
sampled users, for the online segments and for a batch KMeans with the same k; ARI compares
the two labellings. River's <code>metrics.Silhouette</code> is a different quantity and is not
reported.</p>
{_segment_tables(s)}
<h2>Figures</h2>
{figs}
</body></html>
"""
