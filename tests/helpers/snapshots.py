"""Snapshot rows as plain values, and a small packed shop log for replays across engines."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from helpers import shoplogs
from offline.backfill import asof_join as asof
from offline.backfill.replay import snapshot_files
from online.settings import Settings


def packed(events: list[dict], factor: int = 25) -> list[dict]:
    """The events with times squeezed toward T0 (order, ties and late events kept): fewer
    event dates, so fewer files per task, which is what a small test's time goes into."""
    return [{**e, "ts": shoplogs.T0 + (e["ts"] - shoplogs.T0) // factor} for e in events]


EVENTS = packed(shoplogs.make_events(900, seed=5, users=30))
QUIET = {"progress": False, "batch_events": 70}


def rows(settings: Settings) -> list[tuple]:
    """Every snapshot row as a tuple of plain values, sorted (file layout does not matter)."""
    table = pa.concat_tables([pq.read_table(f) for f in snapshot_files(settings)],
                             promote_options="permissive")
    cols = []
    for name in table.column_names:
        col = table.column(name)
        cols.append(asof.micros(col).tolist() if pa.types.is_timestamp(col.type)
                    else [json.dumps(v) if isinstance(v, list) else v
                          for v in col.to_pylist()])
    return sorted(zip(*cols, strict=True), key=repr)
