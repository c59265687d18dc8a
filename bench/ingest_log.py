"""Event-log append throughput: EventLog.append vs a plain sqlite3 executemany, same run.

For batches of 1, 100 and 10,000 events, each round appends the same events into a fresh
database file (temp dir) three ways, interleaved so they share the machine's noise:

- peer (``sqlite3``): a plain ``executemany`` of pre-built row tuples into a table with the
  same columns and indexes (unique event_id, (user_id, offset), ts), WAL + synchronous=NORMAL,
  one BEGIN IMMEDIATE ... COMMIT per batch. No validation, no dedup, no outcomes.
- ours, pre-validated: ``EventLog.append`` of ``Event`` objects (dedup lookup, offsets,
  per-event outcomes, meta update, all in one transaction per batch).
- ours, raw: ``EventLog.append`` of wire dicts (``validate_event`` on each, then as above).

Also: ``validate_event`` alone (µs per event), and reading the log back (``EventLog.read``,
numpy columns) vs a plain ``fetchall`` of the same rows. Medians over rounds; the ratios are
what to compare across runs (the machine is shared and noisy).

Run: ``.venv/bin/python bench/ingest_log.py [--quick] [--rounds R]``. The last line of output
is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from online.eventlog import EventLog
from online.events import Event, validate_event

GOAL_EVENTS_PER_S = 200_000  # pre-validated, batches of 10,000
NOW_US = 1_325_376_000_000_000  # 2012-01-01: pins the future-time rule
TYPES = ["view"] * 14 + ["add_to_cart"] * 3 + ["remove_from_cart", "purchase", "refund"]
PEER_SCHEMA = (
    'CREATE TABLE events ("offset" INTEGER PRIMARY KEY, event_id TEXT UNIQUE NOT NULL,'
    " user_id TEXT NOT NULL, type INTEGER NOT NULL, ts INTEGER NOT NULL, item_id TEXT,"
    " category TEXT, session_id TEXT, price REAL, quantity INTEGER NOT NULL,"
    " ingested_at INTEGER NOT NULL)",
    'CREATE INDEX idx_user ON events (user_id, "offset")',
    "CREATE INDEX idx_ts ON events (ts)",
)


def make_payloads(n: int, seed: int = 7) -> list[dict]:
    """Wire dicts like a shop's stream: random (uuid-like) ids, 50k users, 5k items."""
    rng = random.Random(seed)
    t0 = NOW_US - 90 * 86_400 * 10**6
    out = []
    for i in range(n):
        kind = rng.choice(TYPES)
        ts = t0 + i * 1_000_000 + rng.randrange(1_000_000)
        p = {
            "event_id": f"{rng.getrandbits(128):032x}",
            "user_id": f"u{int(rng.paretovariate(1.2)) % 50_000}",
            "type": kind,
            "ts": _iso(ts),
            "item_id": f"i{rng.randrange(5_000)}",
            "category": f"c{rng.randrange(40)}",
            "session_id": f"s{i // 12}",
            "quantity": rng.randint(1, 4),
        }
        if kind in ("purchase", "refund") or rng.random() < 0.5:
            p["price"] = round(rng.uniform(0.5, 80.0), 2)
        out.append(p)
    return out


def _iso(ts_us: int) -> str:
    secs, us = divmod(ts_us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{us:06d}+00:00"


def peer_append(path: Path, rows: list[tuple], batch: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    for stmt in PEER_SCHEMA:
        conn.execute(stmt)
    sql = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    t = time.perf_counter()
    for i in range(0, len(rows), batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, rows[i : i + batch])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t
    conn.close()
    return len(rows) / elapsed


def log_append(path: Path, items: list, batch: int) -> float:
    with EventLog(path) as log:
        t = time.perf_counter()
        for i in range(0, len(items), batch):
            log.append(items[i : i + batch], now_us=NOW_US)
        elapsed = time.perf_counter() - t
        assert log.next_offset == len(items), "bench appended fewer events than sent"
    return len(items) / elapsed


def validate_only(payloads: list[dict]) -> float:
    t = time.perf_counter()
    for p in payloads:
        validate_event(p, now_us=NOW_US)
    return (time.perf_counter() - t) / len(payloads) * 1e6


def read_both(path: Path, page: int = 100_000) -> tuple[float, float]:
    """(ours, peer) events/s reading the whole log in pages of ``page``."""
    with EventLog(path) as log:
        n, offset, t = 0, 0, time.perf_counter()
        while True:
            batch, offset = log.read(offset, page)
            if not len(batch):
                break
            n += len(batch)
        ours = n / (time.perf_counter() - t)
    conn = sqlite3.connect(path)
    cols = '"offset", ts, type, user_id, item_id, category, session_id, price, quantity, event_id'
    sql = f'SELECT {cols} FROM events WHERE "offset" >= ? ORDER BY "offset" LIMIT ?'
    m, offset, t = 0, 0, time.perf_counter()
    while rows := conn.execute(sql, (offset, page)).fetchall():
        m += len(rows)
        offset = rows[-1][0] + 1
    peer = m / (time.perf_counter() - t)
    conn.close()
    return ours, peer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (~10 s)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per figure (median)")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 5)
    # events per measurement: enough commits for batch 1, enough rows for batch 10k
    sizes = {1: 300, 100: 5_000, 10_000: 20_000} if args.quick else {
        1: 2_000, 100: 50_000, 10_000: 200_000}  # fmt: skip
    console = Console(stderr=True)
    load_before = os.getloadavg()[0]

    payloads = make_payloads(max(sizes.values()))
    events: list[Event] = [validate_event(p, now_us=NOW_US) for p in payloads]
    ingested_at = time.time_ns() // 1000
    rows = [(i, *e.to_record(), ingested_at) for i, e in enumerate(events)]

    figures: dict[str, list[float]] = {}
    read_path: Path | None = None
    with (
        tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp,
        Progress(console=console, transient=True) as progress,
    ):
        task = progress.add_task("appending", total=rounds * (len(sizes) * 3 + 1))
        for r in range(rounds):
            for batch, n in sizes.items():
                for name, run in (
                    ("peer", lambda p, b=batch, n=n: peer_append(p, rows[:n], b)),
                    ("events", lambda p, b=batch, n=n: log_append(p, events[:n], b)),
                    ("raw", lambda p, b=batch, n=n: log_append(p, payloads[:n], b)),
                ):
                    path = Path(tmp) / f"{name}-{batch}-{r}.db"
                    figures.setdefault(f"{name}_{batch}", []).append(run(path))
                    if name == "events" and batch == 10_000:
                        read_path = path
                    elif r or name != "events":
                        for suffix in ("", "-wal", "-shm"):  # keep the temp dir small
                            Path(f"{path}{suffix}").unlink(missing_ok=True)
                    progress.advance(task)
            figures.setdefault("validate_us", []).append(validate_only(payloads[: sizes[100]]))
            assert read_path is not None
            ours, peer = read_both(read_path)
            figures.setdefault("read_ours", []).append(ours)
            figures.setdefault("read_peer", []).append(peer)
            progress.advance(task)

    med = {k: statistics.median(v) for k, v in figures.items()}
    result: dict[str, object] = {
        "bench": "ingest_log",
        "quick": args.quick,
        "rounds": rounds,
        "events_per_measurement": {str(k): v for k, v in sizes.items()},
        "validate_event_us": round(med["validate_us"], 3),
        "validate_events_per_s": round(1e6 / med["validate_us"]),
        "read_events_per_s": {"ours": round(med["read_ours"]), "peer": round(med["read_peer"]),
                              "ratio": round(med["read_ours"] / med["read_peer"], 3)},
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }  # fmt: skip
    table = Table(title="event log appends (events/s, medians)")
    for col in ("batch", "peer sqlite3", "ours pre-validated", "ratio", "ours raw dicts", "ratio"):
        table.add_column(col, justify="right")
    for batch in sizes:
        peer, ours, raw = (med[f"{k}_{batch}"] for k in ("peer", "events", "raw"))
        result[f"batch_{batch}"] = {
            "peer": round(peer), "ours_events": round(ours), "ours_raw": round(raw),
            "ratio_events": round(ours / peer, 3), "ratio_raw": round(raw / peer, 3),
        }  # fmt: skip
        table.add_row(f"{batch:,}", f"{peer:,.0f}", f"{ours:,.0f}", f"{ours / peer:.2f}",
                      f"{raw:,.0f}", f"{raw / peer:.2f}")  # fmt: skip
    big = med["events_10000"]
    result["goal"] = {"events_per_s": GOAL_EVENTS_PER_S, "met": big >= GOAL_EVENTS_PER_S}
    out = Console(file=sys.stdout)
    out.print(table)
    out.print(
        f"validate_event: {med['validate_us']:.2f} µs/event "
        f"({1e6 / med['validate_us']:,.0f} events/s); read: {med['read_ours']:,.0f} events/s "
        f"(plain fetchall {med['read_peer']:,.0f}); goal {GOAL_EVENTS_PER_S:,}/s at batch "
        f"10,000 pre-validated: {'met' if big >= GOAL_EVENTS_PER_S else 'NOT met'} "
        f"({big:,.0f}); load avg {result['load_avg_1m']}"
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
