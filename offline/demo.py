"""The end-to-end demo: every part of portrait on real data (or synthetic), no setup needed.

Each step is a call of the library functions the CLI commands use, so the demo shows what a
user gets from those commands, in order: ingest -> project -> profile (latest, as of a past
time) -> replay -> Feast materialize (and the online row read back) -> training rows -> the
evaluation report -> the REST server with live events -> erasure.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from online.clock import iso, parse_duration
from online.settings import Settings

SHOWN_FEATURES = ("event_count", "purchase_count", "spend_total", "refund_total",
                  "last_event_ts", "last_purchase_ts", "rfm_recency_days", "decayed_spend_30d",
                  "events_30d", "session_count")
SYNTHETIC = {"n_users": 2_000, "n_events": 200_000, "seed": 7}
ONLINE_RETAIL_URL = "https://archive.ics.uci.edu/dataset/352/online+retail"


@dataclass
class DemoReport:
    """What the demo did and showed (the ``--json`` body)."""

    source: str
    steps: dict[str, Any] = field(default_factory=dict)


def run_demo(settings: Settings, data: str | None, say: Callable[[str], None],
             show: Callable[[str, Any], None], *, serve: bool = True,
             synthetic: dict[str, int] | None = None, engine: str = "local") -> DemoReport:
    """Run every step on ``settings``' data dir; ``say`` narrates, ``show`` prints an object.

    ``synthetic``: use the generator with these ``n_users`` / ``n_events`` / ``seed`` even
    when the Online Retail file is there.  ``engine="ray"``: the replay runs on a local Ray
    (one task per group of log partitions).
    """
    from offline.datasets import find_online_retail

    path = None if synthetic else find_online_retail(data)
    if data is not None and (path is None or Path(path) != Path(data)):
        raise FileNotFoundError(f"--data: no such file: {data}")
    if path is None and not synthetic:
        say("The Online Retail file was not found (--data, PORTRAIT_ONLINE_RETAIL, "
            f"../shared/datasets/). Get it from {ONLINE_RETAIL_URL} (online_retail.csv.gz); "
            "running on the synthetic shop generator instead.")
    report = DemoReport(source=str(path) if path else "synthetic")
    settings.data_dir.mkdir(parents=True, exist_ok=True)

    report.steps["ingest"] = _ingest(settings, path, say, {**SYNTHETIC, **(synthetic or {})})
    user_id, profile_latest, profile_past = _profiles(settings, say, show)
    report.steps["profile"] = {"user_id": user_id, "latest": profile_latest,
                               "as_of": profile_past}
    report.steps["replay"] = _replay(settings, say, engine)
    report.steps["materialize"] = _materialize(settings, user_id, say, show)
    report.steps["training_rows"] = _training_rows(settings, say, show)
    report.steps["evaluation"] = _evaluation(settings, say, show)
    report.steps["federation"] = _federation(settings, path, say)
    if serve:
        report.steps["serve"] = _serve_live(settings, say, show)
    return report


def _federation(settings: Settings, path: Path | None, say) -> dict[str, Any]:
    """One federated round trip: shops that keep their events, one model averaged across."""
    from offline.federation.coordinator import federate
    from offline.federation.engines import LocalTenants
    from offline.federation.report import evaluate
    from offline.federation.shops import split_log, split_online_retail

    root = settings.data_dir / "federation"
    if path is not None:
        say("Federated learning: the file split into shops by customer country; each shop "
            "keeps its events and sends only model parameters...")
        dirs = split_online_retail(path, root, shops=5)
    else:
        say("Federated learning: the shop's customers dealt into three shops (80/12/8%); each "
            "keeps its events and sends only model parameters...")
        dirs = split_log(settings, root, {"big": 0.8, "small": 0.12, "tiny": 0.08})
    shops = LocalTenants({n: {"data_dir": d, "horizon_us": parse_duration("30d")}
                          for n, d in dirs.items()})
    result = federate(shops, rounds=30)
    rep = evaluate(shops, result, l2=1e-2)

    def f(v) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    for name, t in rep["tenants"].items():
        say(f"  {name:<15} {t.get('events', 0):>8,} events: AUC local-only "
            f"{f(t.get('local_auc'))}, federated {f(t.get('federated_auc'))}, central "
            f"{f(t.get('central_auc'))}")
    say(f"  pooled later periods: federated {f(rep['pooled']['federated_auc'])} vs central "
        f"{f(rep['pooled']['central_auc'])}; {rep['bytes_per_round']:,} bytes crossed per "
        f"round (`portrait federate --epsilon 4` adds user-level DP)")
    return {k: rep[k] for k in ("rounds", "bytes_per_round", "pooled", "tenants")}


def _ingest(settings: Settings, path: Path | None, say, synthetic: dict[str, int]
            ) -> dict[str, Any]:
    from offline.datasets import generate, iter_online_retail
    from offline.datasets.records import Record
    from offline.ingest import ingest_records
    from offline.wiring import build_projector
    from online.privacy.pseudonym import open_event_log

    if path is not None:
        say(f"Ingesting {path} (each invoice line of a known customer is a purchase, each "
            "cancellation a refund; a re-run is fully deduplicated)...")
        records = iter_online_retail(path)
    else:
        say("Ingesting a synthetic shop stream ({n_events:,} events, {n_users:,} users, "
            "seed {seed})...".format(**synthetic))
        records = (Record(i + 1, p) for i, p in enumerate(
            p for chunk in generate(**synthetic) for p in chunk))
    with open_event_log(settings) as log:
        summary = ingest_records(log, records, source="demo")
        say(f"  lines {summary.lines:,}: accepted {summary.accepted:,}, duplicates "
            f"{summary.duplicates:,}, rejected {summary.rejected:,}, skipped "
            f"{summary.skipped:,} {summary.skipped_by_reason or ''}")
        say("Projecting the log (feature kernels + online models, checkpointed)...")
        projector = build_projector(log, settings)
        projector.run(batch_size=settings.batch_size, progress=True)
        projector.checkpoint()
        say(f"  projector at offset {projector.offset:,}, watermark "
            f"{iso(projector.watermark_us)}, {len(projector.state.users.values):,} users")
    out = summary.as_dict()
    out.pop("problems")
    out["projected_offset"] = projector.offset
    return out


def _busiest_user(projector) -> str:
    from online import kernels

    state = projector.state
    users = np.arange(len(state.users.values))
    counts = kernels.stored_values(state, users, names=["event_count"])["event_count"]
    return state.users.values[int(np.argmax(counts))]


def _profiles(settings: Settings, say, show) -> tuple[str, dict, dict]:
    from offline.wiring import build_projector
    from online.privacy.pseudonym import open_event_log

    with open_event_log(settings) as log:
        projector = build_projector(log, settings, online_writes=False)
        user_id = _busiest_user(projector)
        latest = projector.profile(user_id)
        first = _ts_us(latest["features"]["first_event_ts"])
        last = _ts_us(latest["features"]["last_event_ts"])
        past_us = first + (last - first) // 2
        past = projector.profile(user_id, as_of=past_us)
    say(f"The busiest customer, {user_id}: latest profile (evaluated at the log's watermark)")
    show("latest", _brief(latest))
    say(f"...and the same customer as of {iso(past_us)}, recomputed from the log with the "
        "same kernels (only events up to that time count):")
    show("as_of", _brief(past))
    return user_id, _brief(latest), _brief(past)


def _replay(settings: Settings, say, engine: str = "local") -> dict[str, Any]:
    if engine == "ray":
        from offline.backfill.replay_ray import replay_ray

        say("Replaying the log on Ray (a local Ray, one task per group of log partitions)...")
        summary = replay_ray(settings, progress=True)
        say(f"  ray: {summary.events:,} events -> {summary.rows + summary.tail_rows:,} "
            f"snapshot rows by {summary.chunks} tasks on {summary.workers} workers in "
            f"{summary.seconds:.1f}s (Ray start included), committed at offset "
            f"{summary.end_offset:,}")
        return summary.as_dict()
    from offline.backfill.replay import replay

    say("Replaying the log into the offline parquet snapshot (the backfill path)...")
    summary = replay(settings, progress=True)
    say(f"  {summary.events:,} events -> {summary.rows:,} snapshot rows "
        f"(+{summary.tail_rows:,} window-expiry tail rows) in {summary.seconds:.1f}s")
    return summary.as_dict()


def _materialize(settings: Settings, user_id: str, say, show) -> dict[str, Any]:
    from offline.feast_store import feature_store, materialize

    say("Feast: apply + materialize-incremental into the sqlite online store...")
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        body = materialize(settings)
        store = feature_store(settings)
        names = [f"activity:{n}" for n in ("event_count", "purchase_count")]
        names += [f"monetary:{n}" for n in ("spend_total", "refund_total")]
        online = store.get_online_features(features=names,
                                           entity_rows=[{"user_id": user_id}]).to_dict()
    row = {k.split("__")[-1]: v[0] for k, v in online.items()}
    say(f"  feature views {', '.join(body['feature_views'])}; the online row of {user_id} "
        "read back through Feast's get_online_features:")
    show("feast_online", row)
    return {**body, "online_row": row}


def _training_rows(settings: Settings, say, show) -> dict[str, Any]:
    from offline.backfill.training_set import sample_entities, training_set

    horizon = parse_duration("7d")
    entities = sample_entities(settings, 5, seed=1, horizon_us=horizon)
    table = training_set(settings, entities, horizon,
                         features=["event_count", "spend_total", "decayed_spend_30d"])
    say("Point-in-time training rows (features as of each row's time, label = purchase in "
        "the next 7 days):")
    text = table.to_string(index=False)
    show("training_rows", text)
    return {"rows": len(table), "columns": list(table.columns)}


def _evaluation(settings: Settings, say, show) -> dict[str, Any]:
    from offline.evaluation import evaluate
    from online.extras import MissingExtra

    say("Evaluating the online models against batch baselines on the same later period "
        "(prequential AUC; logistic regression, gradient boosting, MLP; segment quality)...")
    out = settings.data_dir / "reports" / "evaluation"
    try:
        report = evaluate(settings, parse_duration("7d"), out, progress=True)
    except MissingExtra as exc:  # a core install: the rest of the demo still stands
        say(f"  skipped: {exc}")
        return {"skipped": str(exc)}
    prop, seg = report["propensity"], report["segments"]
    show("evaluation", {"online_auc": prop["online_auc"], "batch_auc": prop["batch_auc"],
                        "silhouette_online": seg["silhouette_online"],
                        "silhouette_batch": seg["silhouette_batch"], "ari": seg["ari"]})
    say(f"  report with plots: {out / 'index.html'}")
    return {"propensity": prop, "segments": seg, "report": str(out / "index.html")}


def _serve_live(settings: Settings, say, show) -> dict[str, Any]:
    import httpx

    live_user = "demo-live-shopper"
    say("Starting the REST API on a loopback port and sending live events...")
    with _server(settings) as base:
        with httpx.Client(base_url=base, timeout=30) as client:
            now = time.time_ns() // 1000
            events = [
                {"event_id": f"demo-live-{now}-{i}", "user_id": live_user, "type": kind,
                 "ts": iso(now - (3 - i) * 60_000_000), "item_id": "sku-demo",
                 "category": "demo", **({"price": 25.0} if kind == "purchase" else {})}
                for i, kind in enumerate(("view", "add_to_cart", "purchase"))
            ]
            posted = client.post("/v1/events", json={"events": events[:2]}).json()
            before = client.get(f"/v1/users/{live_user}/profile").json()
            client.post("/v1/events", json=events[2])
            after = client.get(f"/v1/users/{live_user}/profile").json()
            say(f"  after a view and a cart: purchase_count="
                f"{before['features']['purchase_count']}; after the purchase: "
                f"purchase_count={after['features']['purchase_count']}, spend_total="
                f"{after['features']['spend_total']} (offset {after['offset']})")
            erased = client.delete(f"/v1/users/{live_user}").json()
            gone = client.get(f"/v1/users/{live_user}/profile").status_code
    say(f"  erased {live_user}; the receipt lists each store; the profile now answers {gone}:")
    show("erasure_receipt", erased)
    return {"posted": {k: posted.get(k) for k in ("accepted", "duplicates", "rejected")},
            "before": _brief(before), "after": _brief(after), "erasure": erased,
            "status_after_erasure": gone}


@contextlib.contextmanager
def _server(settings: Settings) -> Iterator[str]:
    """A real uvicorn server in a thread on a free loopback port."""
    import uvicorn

    from offline.wiring import create_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the demo server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def _ts_us(text: str) -> int:
    from online.clock import parse_time

    return parse_time(text)


def _brief(body: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in body.items() if k != "features"}
    out["features"] = {k: body["features"][k] for k in SHOWN_FEATURES if k in body["features"]}
    return out
