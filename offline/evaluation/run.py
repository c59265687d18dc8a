"""`evaluate`: the online models against batch baselines, end to end, with the report."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from online.eventlog import EventLog
from online.extras import require
from online.models import DAY_US, format_duration
from online.settings import Settings

from . import baselines, compare, scoring
from . import segments as seg
from .report import write_report

__all__ = ["evaluate"]


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
    run = scoring.online_run(settings, horizon_us, progress=progress)
    pred = run.predictions
    if len(pred["score"]) == 0:
        raise ValueError(f"the event log in {settings.data_dir} is empty: nothing to evaluate")
    with EventLog(settings.event_log_path) as log:
        if rp.replayed_end(settings) < log.next_offset:  # retrieval reads the snapshot
            phase("2/5 replay: the snapshot the batch baselines train on")
            rp.replay(settings, progress=progress)
    watermark = int(rp.watermark(settings))
    phase("3/5 propensity: prequential scores of the online model")
    y, known = scoring.resolve_labels(pred, horizon_us, watermark)
    curves: dict[str, Any] = {}
    report: dict[str, Any] = {
        "data_dir": str(settings.data_dir),
        "events": int(len(y)),
        "users": int(len(set(pred["user_id"].tolist()))),
        "propensity": {"horizon": format_duration(horizon_us),
                       "features": len(run.contributor.models.propensity.features),
                       **scoring.prequential(pred, y, known, curves)},
    }
    phase("4/5 propensity: batch baselines (training sets, scikit-learn fits)")
    report["propensity"].update(baselines.batch(settings, pred, y, known, horizon_us, curves,
                                       max_per_user=max_per_user, max_rows=max_rows,
                                       test_fraction=test_fraction, seed=seed))
    if "test" in curves:
        report["propensity"]["test_period"] = compare.comparisons(
            curves["test"], run.contributor.models.propensity, curves, seed=seed)
        best = report["propensity"].get("best_batch")
        if best is not None:  # the headline: online against the best fitted baseline
            report["propensity"]["online_vs_best_batch"] = {
                "best_batch": best,
                **report["propensity"]["test_period"]["auc_difference"]["vs"][best]}
    phase("5/5 segments against k-means; writing the report")
    report["segments"] = seg.segments(run, segment_users, seed, curves)
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


