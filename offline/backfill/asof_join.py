"""Point-in-time lookups over the replay's snapshot: a sorted as-of join in numpy and numba.

For an entity row (user, T) the answer is the user's newest snapshot row with
``event_timestamp <= T`` (ties: the newest ``created``), exactly the rule of Feast's
``get_historical_features``; the snapshot's expiry rows make that row the user's exact stored
state as of T (``offline.backfill.rows``).  Rows are indexed once per load, then every lookup is a
binary search (the kernels: ``online.kernels.asof``).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from online import catalogue as cat
from online.kernels.asof import index_by_user, lookup

KEYS = ("user_id", "event_timestamp", "created")


@dataclass
class Snapshot:
    """The snapshot's rows indexed for as-of lookups, with the stored columns asked for."""

    users: pd.Index  # user id of each code
    codes: np.ndarray  # user code of each row
    ts: np.ndarray  # event_timestamp (µs) of each row
    order: np.ndarray  # rows grouped by user, sorted by (ts, created) within
    seg: np.ndarray  # user u's rows are order[seg[u]:seg[u + 1]]
    table: pa.Table  # stored columns, one row per snapshot row

    def __len__(self) -> int:
        return len(self.ts)

    def rows_as_of(self, user_ids, t_us: np.ndarray) -> np.ndarray:
        """Row index of each (user, T)'s as-of row, -1 where the user has none at T."""
        ucode = self.users.get_indexer(pd.Index(np.asarray(user_ids, dtype=object)))
        return lookup(ucode.astype(np.int64), np.asarray(t_us, np.int64), self.seg,
                      self.order, self.ts)

    def take(self, rows: np.ndarray, columns: list[str] | None = None) -> pa.Table:
        """The stored columns at ``rows`` (-1: a row of nulls)."""
        table = self.table if columns is None else self.table.select(columns)
        return table.take(pa.array(np.where(rows < 0, 0, rows), mask=rows < 0))

    def first_ts(self) -> np.ndarray:
        """Per user code, the time of its first row (its first event); ``NO_TS``: no rows."""
        if not len(self.ts):
            return np.full(len(self.users), cat.NO_TS, np.int64)
        first = self.ts[self.order[np.minimum(self.seg[:-1], len(self.ts) - 1)]]
        return np.where(self.seg[:-1] < self.seg[1:], first, cat.NO_TS)

    def last_rows(self) -> np.ndarray:
        """Per user code, the row of its newest entry (-1: no rows)."""
        if not len(self.ts):
            return np.full(len(self.users), -1, np.int64)
        last = self.order[np.maximum(self.seg[1:] - 1, 0)]
        return np.where(self.seg[:-1] < self.seg[1:], last, -1)


def micros(column: pa.ChunkedArray) -> np.ndarray:
    """A timestamp column as int64 µs UTC, ``NO_TS`` for nulls."""
    ts = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    return ts.fill_null(cat.NO_TS).to_numpy()


def load(files: list[Path], columns: list[str] | None = None, *,
         users: set[str] | None = None) -> Snapshot:
    """Read the snapshot files (the key columns plus ``columns``, default all) and index them.

    Files are decoded in parallel (pyarrow releases the GIL); strings stay dictionary-encoded
    with one dictionary per column, so takes stay cheap.  ``users``: keep only their rows.
    """
    names = pq.read_schema(files[0]).names if files else list(KEYS)
    wanted = [c for c in names if c not in KEYS] if columns is None else list(columns)
    strings = ["user_id", *(f.name for f in cat.stored_features() if f.dtype == "str")]
    lists = [f"{f.name}.list.element" for f in cat.stored_features() if f.dtype == "str_list"]
    read = [*KEYS, *(c for c in wanted if c not in KEYS)]

    keep = None if users is None else pa.array(sorted(users), pa.string())

    def one(path: Path) -> pa.Table:
        table = pq.read_table(path, columns=read, read_dictionary=strings + lists,
                              use_threads=False)
        if keep is None:
            return table
        ids = table.column("user_id").cast(pa.string())
        return table.filter(pc.is_in(ids, value_set=keep))

    with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
        tables = list(pool.map(one, files))
    if tables:
        table = pa.concat_tables(tables, promote_options="permissive")
        table = table.unify_dictionaries()  # one dictionary per column: cheap takes
    else:
        table = pa.table({"user_id": pa.array([], pa.dictionary(pa.int32(), pa.string())),
                          "event_timestamp": pa.array([], pa.timestamp("us", tz="UTC")),
                          "created": pa.array([], pa.timestamp("us", tz="UTC"))})
    user_col = table.column("user_id").combine_chunks()
    if not isinstance(user_col, pa.DictionaryArray):
        user_col = user_col.dictionary_encode()
    users = pd.Index(user_col.dictionary.to_numpy(zero_copy_only=False), dtype=object)
    codes = user_col.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    ts = micros(table.column("event_timestamp"))
    created = micros(table.column("created"))
    order, seg = index_by_user(codes, ts, created, len(users))
    return Snapshot(users, codes, ts, order, seg,
                    table.select([c for c in wanted if c in table.column_names]))


def dictionary_decoded(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A string or list-of-string column with dictionaries cast back to plain strings."""
    t = column.type
    if isinstance(t, pa.DictionaryType):
        return column.cast(t.value_type)
    if pa.types.is_list(t) and isinstance(t.value_type, pa.DictionaryType):
        return column.cast(pa.list_(t.value_type.value_type))
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return column.cast(pa.list_(pa.string()))
    return column
