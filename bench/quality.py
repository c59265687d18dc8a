"""Quality of the online models on several shop shapes, against batch baselines.

For each shape of `bench/shapes.py` the log is written to a scratch data dir and judged by
`offline.evaluation.evaluate` (the scores the projector emitted, replayed; batch baselines fitted
on point-in-time training sets before a time cut and scored with the online model on the same
later rows; segments against a batch KMeans on the same user snapshot). Per shape, the bars:

- online test-period AUC >= best batch baseline - 0.02;
- the online model's prequential log loss below the base rate's (a constant predicting the
  share of positives among the resolved predictions, in hindsight: the stricter reading);
- segments silhouette >= batch KMeans - 0.03 and every segment label distinct.

Run: `python bench/quality.py [--quick] [--shapes a,b] [--fraction F]`; `--quick` subsamples
users so the run takes a couple of minutes on two shared cores. One table (rich), then one
JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.shapes import SHAPES, build, span_days  # noqa: E402
from offline.evaluation import evaluate  # noqa: E402
from online.clock import parse_duration  # noqa: E402
from online.eventlog import EventLog  # noqa: E402
from online.settings import Settings  # noqa: E402

AUC_MARGIN = 0.02
SILHOUETTE_MARGIN = 0.03
QUICK_FRACTION = {"retail": 0.35, "retail_daily": 1.0}


def entropy(p: float | None) -> float | None:
    """Log loss of the constant prediction p on labels whose positive share is p."""
    if p is None or p <= 0.0 or p >= 1.0:
        return None
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def judge(name: str, fraction: float, scale: int, max_rows: int, seed: int) -> dict:
    shape = SHAPES[name]
    started = time.perf_counter()
    payloads = build(name, fraction, scale)
    with tempfile.TemporaryDirectory(prefix=f"quality-{name}-") as root:
        settings = Settings(data_dir=Path(root))
        with EventLog(settings.event_log_path) as log:
            for i in range(0, len(payloads), 20_000):
                result = log.append(payloads[i:i + 20_000], now_us=2**62)
                assert result.rejected == 0, result.outcomes[:3]
        report = evaluate(settings, parse_duration(shape.horizon), Path(root) / "report",
                          max_rows=max_rows, seed=seed)
    p, s = report["propensity"], report["segments"]
    pre, online = p["prequential"], p.get("online", {})
    best_name, best = max(((k, v) for k, v in p.get("batch_auc", {}).items() if v is not None),
                          key=lambda kv: kv[1], default=(None, None))
    base_ll = entropy(pre["positive_rate"])
    test_base_ll = entropy(online.get("positive_rate"))
    labels = [seg["label"] for seg in s["online"]]
    row = {
        "shape": name, "horizon": shape.horizon, "events": report["events"],
        "users": report["users"], "days": round(span_days(payloads), 1),
        "positive_rate": pre["positive_rate"],
        "online_auc": p.get("online_auc"), "best_batch": best_name, "best_batch_auc": best,
        "batch_auc": p.get("batch_auc", {}),
        "prequential_auc": pre["auc"], "prequential_log_loss": pre["log_loss"],
        "base_rate_log_loss": base_ll, "test_log_loss": online.get("log_loss"),
        "test_base_rate_log_loss": test_base_ll,
        "silhouette_online": s["silhouette_online"], "silhouette_batch": s["silhouette_batch"],
        "segment_labels": labels, "segments_used": s["online_segments_used"],
        "model_version": report["model_version"],
        "seconds": round(time.perf_counter() - started, 1),
    }
    row["auc_ok"] = bool(best is not None and row["online_auc"] is not None
                         and row["online_auc"] >= best - AUC_MARGIN)
    row["log_loss_ok"] = bool(base_ll is not None and pre["log_loss"] is not None
                              and pre["log_loss"] < base_ll)
    so, sb = row["silhouette_online"], row["silhouette_batch"]
    row["segments_ok"] = bool(so is not None and sb is not None and so >= sb - SILHOUETTE_MARGIN
                              and len(set(labels)) == len(labels))
    row["ok"] = row["auc_ok"] and row["log_loss_ok"] and row["segments_ok"]
    return row


def _f(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="online models vs batch baselines, per shop shape")
    for col in ("shape", "H", "events", "users", "pos", "online AUC", "best batch",
                "preq LL", "base LL", "sil online", "sil batch", "labels", "ok"):
        t.add_column(col, justify="right" if col not in ("shape", "best batch") else "left")
    for r in rows:
        labels = r["segment_labels"]
        t.add_row(
            r["shape"], r["horizon"], f"{r['events']:,}", f"{r['users']:,}",
            _f(r["positive_rate"], 2), _f(r["online_auc"]),
            f"{r['best_batch']} {_f(r['best_batch_auc'])}", _f(r["prequential_log_loss"]),
            _f(r["base_rate_log_loss"]), _f(r["silhouette_online"]),
            _f(r["silhouette_batch"]), f"{len(set(labels))}/{len(labels)}",
            "yes" if r["ok"] else "NO: " + ",".join(
                k[:-3] for k in ("auc_ok", "log_loss_ok", "segments_ok") if not r[k]))
    Console(stderr=False, width=170).print(t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="subsample users (a few minutes)")
    ap.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated shape names")
    ap.add_argument("--fraction", type=float, default=None, help="share of users kept")
    ap.add_argument("--scale", type=int, default=1, help="synthetic size multiplier")
    ap.add_argument("--max-rows", type=int, default=None, help="batch baseline entity rows")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    names = [n.strip() for n in args.shapes.split(",") if n.strip()]
    unknown = [n for n in names if n not in SHAPES]
    if unknown:
        ap.error(f"--shapes: unknown {unknown}; known: {list(SHAPES)}")
    rows = []
    for name in names:
        if args.fraction is not None:
            fraction = args.fraction
        else:
            fraction = QUICK_FRACTION.get(name, 0.5) if args.quick else 1.0
        max_rows = args.max_rows or (15_000 if args.quick else 40_000)
        rows.append(judge(name, fraction, args.scale, max_rows, args.seed))
        print(f"{name}: done in {rows[-1]['seconds']} s", file=sys.stderr, flush=True)
    table(rows)
    print(json.dumps({"bench": "quality", "quick": args.quick, "rows": rows,
                      "all_ok": all(r["ok"] for r in rows)}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
