"""Point-in-time features for a training set: Feast's get_historical_features vs our fast path.

Prepares (once, cached under ``bench/out/``) a synthetic log replayed into a snapshot of at
least ``--min-rows`` feature rows, draws ``--entities`` entity rows (user, T) without leakage
(``sample_entities``), then, in the same run:

- peer: ``offline.backfill.training_set.features_at(..., path="feast")``: Feast's
  ``get_historical_features`` on duckdb (every stored feature of the ``user_profile`` views,
  to arrow) plus the shared serving evaluation, timed after a first Feast call (the feature
  service, to arrow: Feast's own call alone, also reported) has warmed Feast and duckdb;
- ours: ``features_at(..., path="fast")``: the sorted as-of join over the parquet, cold (reads
  and indexes the snapshot) and warm (snapshot kept in memory, as in a notebook session).

Both must return identical frames.  Goal: fast path >= 10x Feast; the ratios compare warm
Feast with our cold and warm path (``portrait training-set`` is one process: always cold).

Run: ``.venv/bin/python bench/pit.py [--entities 100000] [--events 620000] [--repeats 1]``.
The last line of output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from replay import OUT, build_log  # noqa: E402  (bench/replay.py)

from offline import feast_store as fs  # noqa: E402
from offline.backfill import training_set as rt  # noqa: E402
from offline.backfill.replay import replay, replayed_end  # noqa: E402
from online.settings import Settings  # noqa: E402

GOAL_RATIO = 10.0


def prepare(events: int, users: int, seed: int, min_rows: int) -> Settings:
    work = OUT / f"pit-{users}-{events}-{seed}"
    n = build_log(work / "events.db", users, events, seed)
    settings = Settings(data_dir=work)
    if replayed_end(settings) != n:
        replay(settings, progress=True)
    rows = sum(c["rows"] for c in _manifest(settings)["chunks"])
    rows += _manifest(settings)["tail"]["rows"]
    if rows < min_rows:
        sys.exit(f"the snapshot has {rows:,} rows < {min_rows:,}: pass a larger --events")
    if not settings.registry_path.exists():
        fs.apply(settings)
    return settings


def _manifest(settings: Settings) -> dict:
    return json.loads((settings.offline_dir / "replay" / "manifest.json").read_text())


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--entities", type=int, default=100_000)
    p.add_argument("--events", type=int, default=620_000)
    p.add_argument("--users", type=int, default=None, help="default: events / 100")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--min-rows", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=1, help="Feast runs (fast path: 3x this)")
    args = p.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)
    users = args.users or max(args.events // 100, 10)
    settings = prepare(args.events, users, args.seed, args.min_rows)
    rows = sum(c["rows"] for c in _manifest(settings)["chunks"]) + \
        _manifest(settings)["tail"]["rows"]
    entities = rt.sample_entities(settings, args.entities, seed=args.seed)
    print(f"snapshot: {rows:,} feature rows; {len(entities):,} entity rows", file=sys.stderr)

    rt._cache.clear()
    t_cold, _ = timed(lambda: rt.features_at(settings, entities, path="fast"), 1)
    t_warm, fast = timed(lambda: rt.features_at(settings, entities, path="fast"),
                         3 * args.repeats)

    store = fs.feature_store(settings)
    service = store.get_feature_service(fs.FEATURE_SERVICE)
    feast_entities = entities.assign(event_timestamp=entities["event_timestamp"])
    t_feast_raw, _ = timed(lambda: store.get_historical_features(
        entity_df=feast_entities, features=service).to_arrow(), args.repeats)
    t_feast, feast = timed(lambda: rt.features_at(settings, entities, path="feast"),
                           args.repeats)
    identical = True
    try:
        pd.testing.assert_frame_equal(fast, feast)
    except AssertionError as exc:
        identical = False
        print(f"frames differ: {str(exc)[:500]}", file=sys.stderr)

    figures = {
        "bench": "pit", "entity_rows": len(entities), "feature_rows": rows,
        "features": len(fast.columns),
        "feast_s": round(t_feast, 3), "feast_first_call_s": round(t_feast_raw, 3),
        "fast_cold_s": round(t_cold, 3), "fast_warm_s": round(t_warm, 3),
        "ratio_cold": round(t_feast / t_cold, 1), "ratio_warm": round(t_feast / t_warm, 1),
        "identical": identical, "goal_ratio": GOAL_RATIO,
        "goal_met": identical and t_feast / t_cold >= GOAL_RATIO,
    }
    print(f"feast (get_historical_features + evaluation): {t_feast:8.2f} s "
          f"(first Feast call, feature service alone: {t_feast_raw:.2f} s)")
    print(f"fast path, cold (read + index parquet):       {t_cold:8.2f} s  "
          f"{t_feast / t_cold:6.1f}x")
    print(f"fast path, warm (snapshot in memory):         {t_warm:8.2f} s  "
          f"{t_feast / t_warm:6.1f}x")
    print(f"identical output: {identical}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
