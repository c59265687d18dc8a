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


class Rate:
    """Events per second of a timed block, by the wall clock and by this process's CPU time.

    On a shared machine the wall figure drops with the load; the CPU figure (user + sys of
    this process) stays near what an idle machine would give, though it leaves out waits on
    the disk (fsyncs at WAL checkpoints), so it flatters both sides alike.
    """

    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self) -> Rate:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = self.n / (time.perf_counter() - self._wall)
        self.cpu = self.n / max(time.process_time() - self._cpu, 1e-9)


def peer_append(path: Path, rows: list[tuple], batch: int) -> Rate:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    for stmt in PEER_SCHEMA:
        conn.execute(stmt)
    sql = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    with Rate(len(rows)) as rate:
        for i in range(0, len(rows), batch):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, rows[i : i + batch])
            conn.execute("COMMIT")
    conn.close()
    return rate


def log_append(path: Path, items: list, batch: int) -> Rate:
    with EventLog(path) as log:
        with Rate(len(items)) as rate:
            for i in range(0, len(items), batch):
                log.append(items[i : i + batch], now_us=NOW_US)
        assert log.next_offset == len(items), "bench appended fewer events than sent"
    return rate


def validate_only(payloads: list[dict]) -> Rate:
    with Rate(len(payloads)) as rate:
        for p in payloads:
            validate_event(p, now_us=NOW_US)
    return rate


def read_both(path: Path, page: int = 100_000) -> tuple[Rate, Rate]:
    """(ours, peer) reading the whole log in pages of ``page``."""
    with EventLog(path) as log:
        n = log.count()
        with Rate(n) as ours:
            offset = 0
            while len(batch := log.read(offset, page)[0]):
                offset = int(batch.offset[-1]) + 1
    conn = sqlite3.connect(path)
    cols = '"offset", ts, type, user_id, item_id, category, session_id, price, quantity, event_id'
    sql = f'SELECT {cols} FROM events WHERE "offset" >= ? ORDER BY "offset" LIMIT ?'
    with Rate(n) as peer:
        offset = 0
        while rows := conn.execute(sql, (offset, page)).fetchall():
            offset = rows[-1][0] + 1
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

    runs: dict[str, list[Rate]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp,
        Progress(console=console, transient=True) as progress,
    ):
        task = progress.add_task("appending", total=rounds * (len(sizes) * 3 + 1))
        for r in range(rounds):
            read_path = Path(tmp) / f"events-10000-{r}.db"
            for batch, n in sizes.items():
                for name, run in (
                    ("peer", lambda p, b=batch, n=n: peer_append(p, rows[:n], b)),
                    ("events", lambda p, b=batch, n=n: log_append(p, events[:n], b)),
                    ("raw", lambda p, b=batch, n=n: log_append(p, payloads[:n], b)),
                ):
                    path = Path(tmp) / f"{name}-{batch}-{r}.db"
                    runs.setdefault(f"{name}_{batch}", []).append(run(path))
                    if path != read_path:
                        _remove(path)  # keep the temp dir small
                    progress.advance(task)
            runs.setdefault("validate", []).append(validate_only(payloads[: sizes[100]]))
            ours, peer = read_both(read_path)
            runs.setdefault("read_ours", []).append(ours)
            runs.setdefault("read_peer", []).append(peer)
            _remove(read_path)
            progress.advance(task)

    wall = {k: statistics.median(r.wall for r in v) for k, v in runs.items()}
    cpu = {k: statistics.median(r.cpu for r in v) for k, v in runs.items()}
    result: dict[str, object] = {
        "bench": "ingest_log",
        "command": "bench/ingest_log.py" + (" --quick" if args.quick else ""),
        "rounds": rounds,
        "events_per_measurement": {str(k): v for k, v in sizes.items()},
        "validate_event_us": {"wall": round(1e6 / wall["validate"], 2),
                              "cpu": round(1e6 / cpu["validate"], 2)},
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }  # fmt: skip
    table = Table(title="event log, events/s (medians; CPU-time rate in brackets)")
    for col in ("batch", "peer sqlite3", "ours pre-validated", "ratio", "ours raw dicts", "ratio"):
        table.add_column(col, justify="right")
    for batch in [*sizes, "read"]:
        keys = ("read_peer", "read_ours", None) if batch == "read" else tuple(
            f"{k}_{batch}" for k in ("peer", "events", "raw"))  # fmt: skip
        entry, cells = {}, []
        labels = ("peer", "ours", "-") if batch == "read" else ("peer", "ours_events", "ours_raw")
        for label, key in zip(labels, keys, strict=True):
            if key is None:
                cells += ["", ""]
                continue
            entry[label] = {"wall": round(wall[key]), "cpu": round(cpu[key])}
            cells.append(f"{wall[key]:,.0f} [{cpu[key]:,.0f}]")
            if label != "peer":
                ratio = {"wall": wall[key] / wall[keys[0]], "cpu": cpu[key] / cpu[keys[0]]}
                entry[label.replace("ours", "ratio")] = {k: round(v, 3) for k, v in ratio.items()}
                cells.append(f"{ratio['wall']:.2f} [{ratio['cpu']:.2f}]")
        result[f"batch_{batch}" if batch != "read" else "read"] = entry
        table.add_row(f"{batch:,}" if batch != "read" else "read 100k pages", *cells)
    big = wall["events_10000"]
    result["goal"] = {
        "events_per_s": GOAL_EVENTS_PER_S,
        "wall": round(big),
        "cpu": round(cpu["events_10000"]),
        "met": big >= GOAL_EVENTS_PER_S,
    }
    out = Console(file=sys.stdout, width=120)
    out.print(table)
    out.print(
        f"validate_event: {1e6 / wall['validate']:.2f} µs/event wall "
        f"[{1e6 / cpu['validate']:.2f} CPU]; goal {GOAL_EVENTS_PER_S:,}/s at batch 10,000 "
        f"pre-validated: {'met' if big >= GOAL_EVENTS_PER_S else 'NOT met'} ({big:,.0f} wall, "
        f"{cpu['events_10000']:,.0f} CPU); load avg {result['load_avg_1m']}"
    )
    print(json.dumps(result), flush=True)


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
