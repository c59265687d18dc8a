"""End-to-end ingestion over HTTP in batches of 1,000: our server vs the obvious pipeline.

Both sides are HTTP servers (uvicorn, one worker, loopback) fed the same synthetic events by
the same client, one batch of 1,000 at a time (closed loop), each into its own data dir with
the same Feast repo applied:

- ours: ``portrait --data-dir DIR serve``, as users run it, fed on ``POST /v1/events``:
  per-event validation, the event log (SQLite, dedup), the numba feature kernels, the online
  models (propensity and segments, learning per event), and the Feast online write of each
  touched user's row (``OnlineWriter`` behind ``DeferredWrites``: the server pushes each user
  changed since the last flush once a second, off the request path, from a child process:
  ``offline.feast_process``). The clock stops when
  the last push has landed (the run waits for the pending count to reach 0 on /metrics), so
  deferred work is counted. ``ours_no_feast`` is the same server on a data dir without a
  Feast registry (no online write); ``ours_no_models`` and ``ours_bare`` are the same app
  without the models (with and without the Feast write), to show what each part costs.
- peer (``peer``, ``peer_no_feast``): ``POST /events`` written the obvious way: a pydantic
  ``list[Event]`` body, River ``feature_extraction.Agg`` per feature and ``learn_one`` per
  event, River ``StandardScaler | LogisticRegression`` predict + learn per event, and one Feast
  ``store.push`` per batch of each touched user's newest row (same push source and schema).

    python bench/ingest.py                       # every run, 3 rounds: 50,000 events, 2,000 users
    python bench/ingest.py --events 20000 --no-feast
    python bench/ingest.py --runs ours,peer

The runs go in rounds (``--repeat``, default 3): figures are the medians over the rounds, a
ratio ours / peer the median of the rounds' own ratios (each round's is listed beside it).
The LAST line printed is one JSON object: every run's figures and the ratios ours / peer.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# module level: FastAPI resolves the peer route's (string) annotations from these globals
from online.events import Event  # noqa: E402

BATCH = 1_000


# -- ours: the portrait server as users run it ----------------------------------------------


def ours_command(data_dir: Path, port: int) -> list[str]:
    """``portrait --data-dir DIR serve``: the models, and the Feast online writes once the
    data dir's Feast registry exists (`offline.wiring.build_server_projector`)."""
    return [sys.executable, "-c", "from offline.cli import main; main()", "--data-dir",
            str(data_dir), "serve", "--port", str(port), "--log-level", "warning"]


def serve_bare(data_dir: str, port: int, feast: bool) -> None:
    """Ours without the online models (features only; Feast writes deferred when asked): the
    cost of the models is the difference with `ours_command`."""
    import gc

    import uvicorn

    from online.api import ApiSettings, create_app
    from online.projector import Projector

    settings = ApiSettings(data_dir=data_dir)

    def factory(log, s):
        contributors = []
        if feast:
            from offline.feast_process import OnlineWriterProcess
            from online.api.deferred_writes import DeferredWrites

            writer = OnlineWriterProcess(s)  # as the server does
            contributors.append(DeferredWrites(writer.push_stored, close=writer.close))
        projector = Projector(log, s.state_dir, contributors=contributors)
        gc.freeze()  # as `offline.wiring.build_server_projector` does
        return projector

    app = create_app(settings, projector_factory=factory)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- the peer: the obvious way ----------------------------------------------------------------


def peer_app(data_dir: str, feast: bool):
    """FastAPI app: pydantic body, River Agg features, River logistic regression, Feast push."""
    import numpy as np
    import pandas as pd
    from fastapi import FastAPI
    from river import compose, feature_extraction, linear_model, preprocessing, stats

    from online import catalogue as cat

    aggs = {
        "event_count": feature_extraction.Agg(on="one", by="user_id", how=stats.Count()),
        "purchase_count": feature_extraction.Agg(on="is_purchase", by="user_id", how=stats.Sum()),
        "spend_total": feature_extraction.Agg(on="spend", by="user_id", how=stats.Sum()),
        "refund_total": feature_extraction.Agg(on="refund", by="user_id", how=stats.Sum()),
        "avg_order_value": feature_extraction.Agg(on="spend", by="user_id", how=stats.Mean()),
        "last_event_ts": feature_extraction.Agg(on="ts", by="user_id", how=stats.Max()),
    }
    model = compose.Pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression())
    store = None
    if feast:
        from offline.feast_store import PUSH_SOURCE, feature_store
        from online.settings import Settings

        store = feature_store(Settings(data_dir=data_dir))
    stored = cat.stored_features()
    app = FastAPI()

    @app.post("/events")
    def post_events(events: list[Event]) -> dict[str, Any]:
        latest: dict[str, dict] = {}
        for e in events:
            x = {"user_id": e.user_id, "one": 1.0, "ts": float(e.ts_us),
                 "is_purchase": float(e.type == "purchase"),
                 "spend": (e.price or 0.0) * e.quantity if e.type == "purchase" else 0.0,
                 "refund": (e.price or 0.0) * e.quantity if e.type == "refund" else 0.0}
            feats = {}
            for name, agg in aggs.items():
                agg.learn_one(x)
                (feats[name],) = agg.transform_one(x).values()
            model.predict_proba_one(feats)
            model.learn_one(feats, e.type == "purchase")
            latest[e.user_id] = feats
        if store is not None and latest:
            n = len(latest)
            cols: dict[str, Any] = {"user_id": list(latest)}
            ts = np.array([int(f["last_event_ts"]) for f in latest.values()], dtype=np.int64)
            when = pd.DatetimeIndex(ts.view("datetime64[us]")).tz_localize("UTC")
            cols.update(event_timestamp=when, created=when, offset=np.zeros(n, np.int64))
            for f in stored:  # the same schema as ours: River's values where it has them
                if f.name in aggs and f.dtype != "timestamp":
                    cols[f.name] = [row[f.name] for row in latest.values()]
                elif f.dtype == "timestamp":
                    cols[f.name] = when
                elif f.dtype == "str_list":
                    cols[f.name] = [[] for _ in range(n)]
                elif f.dtype == "str":
                    cols[f.name] = [None] * n
                else:
                    cols[f.name] = np.zeros(n, np.int64 if f.dtype == "int64" else np.float64)
            store.push(PUSH_SOURCE, pd.DataFrame(cols))
        return {"accepted": len(events)}

    return app


def serve_peer(data_dir: str, port: int, feast: bool) -> None:
    import uvicorn

    uvicorn.run(peer_app(data_dir, feast), host="127.0.0.1", port=port, log_level="warning",
                access_log=False)


# -- the driver -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    def __init__(self, args: list[str], log: Path) -> None:
        self._log = log.open("ab")
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def _wait(url: str, proc: Proc, timeout: float = 180.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.proc.returncode}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.25)
    raise TimeoutError(url)


def bodies(n_users: int, n_events: int, seed: int) -> list[bytes]:
    """The synthetic events as JSON bodies of 1,000 events (made before timing)."""
    from offline.datasets.synthetic import generate

    out = []
    for chunk in generate(n_users, n_events, seed, chunk_size=BATCH):
        out.append(json.dumps({"events": chunk}).encode())
    return out


def _settle(client, metrics_url: str | None) -> float:
    """Wait until the server has no deferred online write pending; seconds waited."""
    if metrics_url is None:
        return 0.0
    t = time.perf_counter()
    while True:
        text = client.get(metrics_url).text
        pending = [line for line in text.splitlines()
                   if line.startswith("portrait_deferred_writes_pending_users ")]
        if not pending or float(pending[0].split()[1]) == 0:
            return time.perf_counter() - t
        time.sleep(0.02)


def _flushes(client, metrics_url: str | None) -> tuple[float, float, float]:
    """The server's online flushes so far: (count, seconds in all, user rows pushed)."""
    if metrics_url is None:
        return 0.0, 0.0, 0.0
    seen = {}
    for line in client.get(metrics_url).text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("portrait_online_flush_duration_seconds_count",
                    "portrait_online_flush_duration_seconds_sum",
                    "portrait_online_rows_pushed_total"):
            seen[name] = float(value)
    return (seen.get("portrait_online_flush_duration_seconds_count", 0.0),
            seen.get("portrait_online_flush_duration_seconds_sum", 0.0),
            seen.get("portrait_online_rows_pushed_total", 0.0))


def drive(url: str, payloads: list[bytes], *, wrap: bool, metrics_url: str | None = None,
          ) -> dict[str, Any]:
    """POST every batch in order (one at a time); events/s over the whole run, up to the
    moment the last deferred online write landed."""
    import httpx

    per_batch = []
    with httpx.Client(timeout=300) as client:
        # the first batch also warms up lazy imports (Feast, numba): measured apart
        t0 = time.perf_counter()
        first = _post(client, url, payloads[0], wrap)
        _settle(client, metrics_url)
        warm_s = time.perf_counter() - t0
        flushes_before = _flushes(client, metrics_url)
        start = time.perf_counter()
        for body in payloads[1:]:
            t = time.perf_counter()
            _post(client, url, body, wrap)
            per_batch.append(time.perf_counter() - t)
        settle_s = _settle(client, metrics_url)
        elapsed = time.perf_counter() - start
        flushes = [b - a for a, b in zip(flushes_before, _flushes(client, metrics_url),
                                         strict=True)]
    n = (len(payloads) - 1) * BATCH
    per_batch.sort()
    return {
        "events": n, "seconds": round(elapsed, 3), "events_per_s": round(n / elapsed, 1),
        "batch_p50_ms": round(per_batch[len(per_batch) // 2] * 1000, 2),
        "batch_p99_ms": round(per_batch[min(len(per_batch) - 1,
                                            math.ceil(0.99 * len(per_batch)) - 1)] * 1000, 2),
        "first_batch_s": round(warm_s, 2), "first_batch": first,
        "settle_s": round(settle_s, 3),
        # the online-store flushes of the timed batches (the server's /metrics)
        "flushes": int(flushes[0]), "flush_s": round(flushes[1], 3),
        "flushed_rows": int(flushes[2]),
    }  # fmt: skip


def _post(client, url: str, body: bytes, wrap: bool) -> dict:
    if not wrap:  # the peer takes a bare JSON list of events
        body = body[len(b'{"events": '):-1]
    r = client.post(url, content=body, headers={"Content-Type": "application/json"})
    r.raise_for_status()
    return {k: v for k, v in r.json().items() if k in ("accepted", "duplicates", "rejected")}


# (name, server, online models, Feast online write)
RUNS = (
    ("ours", "ours", True, True),
    ("ours_no_feast", "ours", True, False),
    ("ours_no_models", "bare", False, True),
    ("ours_bare", "bare", False, False),
    ("peer", "peer", True, True),
    ("peer_no_feast", "peer", True, False),
)


def run_one(work: Path, name: str, server: str, feast: bool, payloads: list[bytes]) -> dict:
    """Start one server on a fresh data dir, drive it, stop it; its figures."""
    data = work / name
    data.mkdir(parents=True)
    if feast:
        from offline.feast_store import apply
        from online.settings import Settings

        apply(Settings(data_dir=data))  # registry + online tables, before timing
    port = _free_port()
    if server == "ours":
        args = ours_command(data, port)
    else:
        args = [sys.executable, __file__, "--serve", server, str(data), str(port),
                "1" if feast else "0"]
    proc = Proc(args, work / f"{name}.log")
    try:
        _wait(f"http://127.0.0.1:{port}/docs", proc)
        base = f"http://127.0.0.1:{port}"
        ours = server != "peer"
        return drive(base + ("/v1/events" if ours else "/events"), payloads, wrap=ours,
                     metrics_url=base + "/metrics" if ours else None)
    finally:
        proc.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--serve", nargs=4, metavar=("SIDE", "DATA_DIR", "PORT", "FEAST"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--users", type=int, default=2_000)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--no-feast", action="store_true", help="skip the runs with Feast writes")
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds of the runs; figures are the medians over them")
    ap.add_argument("--runs", default=",".join(r[0] for r in RUNS),
                    help="comma-separated runs (default all): " + ", ".join(r[0] for r in RUNS))
    args = ap.parse_args()
    if args.serve:
        side, data_dir, port, feast = args.serve
        (serve_bare if side == "bare" else serve_peer)(data_dir, int(port), feast == "1")
        return

    wanted = [n.strip() for n in args.runs.split(",") if n.strip()]
    unknown = sorted(set(wanted) - {r[0] for r in RUNS})
    if unknown:
        ap.error(f"--runs: unknown {unknown}; choose from {[r[0] for r in RUNS]}")
    runs = [r for r in RUNS if r[0] in wanted and not (args.no_feast and r[3])]
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    payloads = bodies(args.users, args.events, args.seed)
    # rounds of every run: the host's speed drifts by 10-20% within minutes, so each run goes
    # once per round and the figures are medians (a ratio: the median of the rounds' own)
    rounds: dict[str, list[dict]] = {name: [] for name, *_ in runs}
    for k in range(args.repeat):
        for name, server, models, feast in runs:
            r = run_one(work / f"round{k}", name, server, feast, payloads)
            r.update(server="portrait serve" if server == "ours" else server,
                     online_models=models, feast_online_write=feast)
            rounds[name].append(r)
            print(f"[{k + 1}/{args.repeat}] {name:15s}: {r['events_per_s']:>9.0f} events/s  "
                  f"batch p50 {r['batch_p50_ms']} ms  p99 {r['batch_p99_ms']} ms  "
                  f"(first batch {r['first_batch_s']} s; settle {r['settle_s']} s, "
                  f"{r['flushes']} flushes, {r['flush_s']} s, {r['flushed_rows']} rows)",
                  file=sys.stderr)
    results = {name: _median_run(rs) for name, rs in rounds.items()}
    for name, r in results.items():
        print(f"{name:15s}: {r['events_per_s']:>9.0f} events/s (median of "
              f"{args.repeat}: {r['events_per_s_rounds']})  batch p50 {r['batch_p50_ms']} ms  "
              f"p99 {r['batch_p99_ms']} ms", file=sys.stderr)
    ratios: dict[str, Any] = {}
    for mine, peer in (("ours", "peer"), ("ours_no_feast", "peer_no_feast")):
        if mine in rounds and peer in rounds:
            paired = [a["events_per_s"] / b["events_per_s"]
                      for a, b in zip(rounds[mine], rounds[peer], strict=True)]
            ratios[f"{mine}_over_{peer}"] = round(statistics.median(paired), 2)
            ratios[f"{mine}_over_{peer}_rounds"] = [round(v, 2) for v in paired]
    for key, value in ratios.items():
        if not key.endswith("_rounds"):
            print(f"{key}: {value}x (median of the rounds' ratios "
                  f"{ratios[key + '_rounds']})", file=sys.stderr)
    print(json.dumps({"bench": "ingest", "batch": BATCH, "users": args.users,
                      "events": args.events, "rounds": args.repeat, "runs": results,
                      "ratios": ratios}))


def _median_run(rs: list[dict]) -> dict:
    """One run's figures over the rounds: medians of the numbers, each round's events/s."""
    out = dict(rs[0])
    for key in ("seconds", "events_per_s", "batch_p50_ms", "batch_p99_ms", "first_batch_s",
                "settle_s", "flushes", "flush_s", "flushed_rows"):
        out[key] = round(statistics.median(r[key] for r in rs), 3)
    out["events_per_s_rounds"] = [round(r["events_per_s"]) for r in rs]
    return out


if __name__ == "__main__":
    main()
