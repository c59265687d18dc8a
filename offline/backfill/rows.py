"""Feature snapshot rows: what the offline store holds for point-in-time joins.

A snapshot row says "from ``event_timestamp`` on (until the user's next row) the user's stored
values are these".  Rows are produced while events are applied, by the feature engine's own
kernels (``online.kernels``: ``_apply``, ``_stored_row``, ``_next_window_change``) called from
one numba loop, so the snapshot can never disagree with the projector:

- an event row per (user, effective event time), after the user's last event at that time
  (events at equal effective times collapse into one row); it is written when the user's
  next event with a later time is applied, so batch and chunk boundaries never split it;
- an expiry row at each time a window value changes between two events of a user (a
  non-empty bucket leaves a sliding window), holding the state after the earlier event;
- tail rows: each user's current state (the newest event row) and the expiry rows after it
  (the windows emptying out).  They are provisional, a later event of the user replaces
  them, so ``offline.backfill.replay`` rewrites the tail whenever the replayed end moves.

Columns: ``user_id``, ``event_timestamp`` (µs UTC), ``created`` (the row's ``offset`` read as
µs since the epoch: deterministic, and orders rows of equal ``event_timestamp`` by log
position), ``offset`` (one past the log offset of the user's newest event the row reflects,
the projector's convention: the row reflects the user's events below it) and the catalogue's
stored columns.  Timestamps are ``timestamp[us, UTC]`` (null when ``NO_TS``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from online import catalogue as cat
from online.kernels import OUT_FLOAT, OUT_INT
from online.kernels.snapshot import (  # noqa: F401  (the row producers, re-exported)
    MAX_ROWS_PER_EVENT,
    RowBlock,
    RowBuffer,
    event_rows,
    grow_offsets,
    tail_rows,
)
from online.state import UserState

KEY_COLUMNS = ("user_id", "event_timestamp", "created", "offset")


def schema() -> pa.Schema:
    """The parquet schema of snapshot rows: key columns, then the catalogue's stored ones."""
    global _SCHEMA
    if _SCHEMA is None:
        keys = [pa.field("user_id", pa.string()),
                pa.field("event_timestamp", pa.timestamp("us", tz="UTC")),
                pa.field("created", pa.timestamp("us", tz="UTC")),
                pa.field("offset", pa.int64())]
        _SCHEMA = pa.schema(keys + list(cat.arrow_schema()))
    return _SCHEMA


_SCHEMA: pa.Schema | None = None
_TS = pa.timestamp("us", tz="UTC")
_INT_IS_TS = [cat.feature(name).dtype == "timestamp" for name in OUT_INT]


class Dictionaries:
    """Arrow arrays of the state's user/item/category strings, extended as codes are added."""

    def __init__(self) -> None:
        self._arrays: dict[str, pa.Array] = {}

    def get(self, name: str, values: list[str]) -> pa.Array:
        have = self._arrays.get(name)
        if have is None or len(have) != len(values):
            start = 0 if have is None else len(have)
            added = pa.array(values[start:], type=pa.string())
            have = added if have is None else pa.concat_arrays([have, added])
            self._arrays[name] = have
        return have


def _dictionary(codes: np.ndarray, values: pa.Array) -> pa.DictionaryArray:
    """Codes (-1: null) over ``values``, with the dictionary cut to the codes used (in code
    order).  Costs O(len(codes)) plus a scan of one bit per value: a block holds a few
    thousand rows, the state up to millions of values."""
    valid = codes >= 0
    all_valid = bool(valid.all())
    used = np.zeros(len(values) + 1, dtype=bool)
    used[codes] = True  # -1 marks the last slot, which is cut off below
    keep = np.flatnonzero(used[:-1])
    if not len(keep):
        return pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(len(codes), np.int32), mask=np.ones(len(codes), bool)),
            values[:0])
    remap = np.empty(len(values) + 1, np.int32)  # only the used slots are ever read
    remap[keep] = np.arange(len(keep), dtype=np.int32)
    remap[-1] = 0
    idx = remap[codes]
    picked = values if len(keep) == len(values) else values.take(pa.array(keep))
    return pa.DictionaryArray.from_arrays(pa.array(idx, mask=None if all_valid else ~valid),
                                          picked)


def _timestamps(us: np.ndarray) -> pa.Array:
    null = us == cat.NO_TS
    return pa.array(us, type=_TS, mask=null if null.any() else None)


def to_table(block: RowBlock, state: UserState, dicts: Dictionaries) -> pa.Table:
    """The block as an arrow table of ``schema()`` (strings dictionary-encoded)."""
    users = dicts.get("users", state.users.values)
    items = dicts.get("items", state.items.values)
    categories = dicts.get("categories", state.categories.values)
    cols: dict[str, pa.Array] = {
        "user_id": _dictionary(block.user, users),
        "event_timestamp": _timestamps(block.ts),
        "created": pa.array(block.offset, type=_TS),
        "offset": pa.array(block.offset),
    }
    for k, name in enumerate(OUT_INT):
        cols[name] = _timestamps(block.ints[k]) if _INT_IS_TS[k] else pa.array(block.ints[k])
    for k, name in enumerate(OUT_FLOAT):
        cols[name] = pa.array(block.floats[k])
    for k in range(cat.INTEREST_TOP):
        cols[f"interest_top{k + 1}"] = _dictionary(block.top[k], categories)
    valid = block.recent >= 0
    offsets = np.zeros(len(block) + 1, np.int32)
    np.cumsum(valid.sum(axis=1), out=offsets[1:])
    cols["recent_items"] = pa.ListArray.from_arrays(
        pa.array(offsets), _dictionary(block.recent[valid], items))
    names = schema().names
    return pa.table([cols[name] for name in names], names=names)
