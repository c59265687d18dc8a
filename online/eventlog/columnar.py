"""Columnar reads of the log: the columns the kernels consume, as Arrow, without Python rows.

A replay touches every event once, so its read must not build a Python tuple and three
Python strings per event (``EventLog.read``: ~3 µs an event).  ``column_batches`` reads the
kernels' columns only (no event or session ids) through the ADBC SQLite driver, which
fills Arrow arrays in C (~0.8 µs an event); the strings stay Arrow arrays, which
``online.state.CodeMap.encode`` turns into codes without a Python object per event.  An
in-memory log (one connection only) is read through that connection instead.

>>> from online.eventlog import EventLog
>>> with EventLog(":memory:") as log:
...     _ = log.append([{"event_id": "e1", "user_id": "u1", "type": "view",
...                      "ts": "2011-06-01T00:00:00Z", "item_id": "i9"}])
...     [(b.offset.tolist(), b.user_id.to_pylist(), b.price.tolist(), resume)
...      for b, resume in log.column_batches()]
[([0], ['u1'], [nan], 1)]
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from online.eventlog.store import _MAX_INT64, LogFile

__all__ = ["COLUMNS", "ColumnBatch", "ColumnReading"]

#: The columns the kernels consume (``online.kernels.EVENT_COLUMNS``) plus the offset.
COLUMNS = ("offset", "ts", "type", "user_id", "item_id", "category", "price", "quantity")
_STRINGS = ("user_id", "item_id", "category")
_SELECT = "SELECT " + ", ".join(f'"{c}"' for c in COLUMNS) + " FROM events"


@dataclass
class ColumnBatch:
    """Events in the kernels' columns: numbers as numpy, ids as Arrow string arrays."""

    offset: np.ndarray  # int64
    ts: np.ndarray  # int64 µs UTC
    type: np.ndarray  # int8
    price: np.ndarray  # float64, NaN when absent
    quantity: np.ndarray  # int64
    user_id: pa.Array  # string (as stored)
    item_id: pa.Array  # string, null when absent
    category: pa.Array  # string, null when absent

    def __len__(self) -> int:
        return len(self.offset)

    @classmethod
    def from_arrow(cls, table: pa.Table) -> ColumnBatch:
        """A batch from a table holding ``COLUMNS`` (e.g. a query result, a log segment)."""
        n = table.num_rows
        cols = {}
        for name in COLUMNS:
            col = table.column(name)
            col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
            if name in _STRINGS:
                # a result column of NULLs only has no type to infer: int64 of nulls
                if not pa.types.is_string(col.type):
                    if col.null_count != n and not pa.types.is_large_string(col.type):
                        raise TypeError(f"{name}: expected strings, got {col.type}")
                    col = pa.nulls(n, pa.string()) if col.null_count == n else col.cast(
                        pa.string())
                cols[name] = col
            elif name == "price":
                cols[name] = np.asarray(col.cast(pa.float64()).to_numpy(zero_copy_only=False),
                                        np.float64)  # null -> NaN
            else:
                dtype = np.int8 if name == "type" else np.int64
                cols[name] = np.asarray(col.to_numpy(zero_copy_only=False), dtype)
        return cls(**cols)

    @classmethod
    def empty(cls) -> ColumnBatch:
        return cls.from_arrow(pa.table({c: pa.array([], pa.string() if c in _STRINGS else
                                                      pa.int64()) for c in COLUMNS}))

    @classmethod
    def concat(cls, batches: Iterable[ColumnBatch]) -> ColumnBatch:
        """The batches one after the other."""
        batches = [b for b in batches if len(b)]
        if not batches:
            return cls.empty()
        if len(batches) == 1:
            return batches[0]
        return cls(**{c: (pa.concat_arrays([getattr(b, c) for b in batches]) if c in _STRINGS
                          else np.concatenate([getattr(b, c) for b in batches]))
                      for c in COLUMNS})


class _Adbc:
    """One ADBC SQLite connection to the log file (thread-safe through a lock)."""

    def __init__(self, path: str) -> None:
        import adbc_driver_sqlite.dbapi as adbc

        # autocommit: each query reads the newest commit (else the driver's open
        # transaction pins the first query's snapshot for the connection's life)
        self._conn = adbc.connect(path, autocommit=True)
        self._lock = threading.Lock()

    def query(self, sql: str, params: tuple, rows: int) -> pa.Table:
        with self._lock:
            cur = self._conn.cursor()
            try:
                # the driver infers a column's type from its first result batch: one batch
                # holds every row, so a type is never inferred from a prefix of NULLs
                cur.adbc_statement.set_options(
                    **{"adbc.sqlite.query.batch_rows": str(max(rows, 1))})
                cur.execute(sql, params)
                return cur.fetch_arrow_table()
            finally:
                cur.close()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class ColumnReading(LogFile):
    """``column_batches`` of ``EventLog``."""

    def _columns(self, where: str, params: tuple, limit: int) -> pa.Table:
        sql = f'{_SELECT} WHERE {where} ORDER BY "offset" LIMIT ?'
        if self._memory:
            with self._reading() as conn:
                rows = conn.execute(sql, (*params, limit)).fetchall()
            return pa.table([pa.array([r[k] for r in rows]) if rows else pa.array([], pa.int64())
                             for k in range(len(COLUMNS))], names=list(COLUMNS))
        if self._closed:
            raise RuntimeError("the event log is closed")
        if self._columnar is None:
            with self._readers_lock:
                if self._columnar is None:
                    self._columnar = _Adbc(str(self.path))
        return self._columnar.query(sql, (*params, limit), limit)

    def column_batches(self, from_offset: int = 0, to_offset: int | None = None,
                       size: int = 100_000, *, partition: int | None = None,
                       partitions: list[int] | None = None,
                       ) -> Iterator[tuple[ColumnBatch, int]]:
        """``(batch, resume_offset)`` over offsets ``[from_offset, to_offset)`` in order.

        Like ``batches``, in the kernels' columns (``ColumnBatch``).  ``partition``: that
        partition's events only, read through the partition index.  ``partitions``: the
        events of those partitions, in one pass over the offsets (the other events are
        skipped, not decoded): cheaper than one index walk per partition once they are a
        few of all, since every page of the log holds events of every partition.
        """
        for p in ([] if partition is None else [partition]) + list(partitions or []):
            if not 0 <= int(p) < self.partitions:
                raise ValueError(f"partition: expected a value in [0, {self.partitions}), "
                                 f"got {p}")
        upper = _MAX_INT64 if to_offset is None else int(to_offset)
        pos = int(from_offset)
        # "+part": SQLite must not walk the partition index (then sort) for this filter
        among = None if partitions is None else \
            f' AND +part IN ({",".join(str(int(p)) for p in partitions) or "NULL"})'
        while pos < upper:
            if among is not None:
                table = self._columns(f'"offset" >= ? AND "offset" < ?{among}', (pos, upper),
                                      size)
            elif partition is None:
                table = self._columns('"offset" >= ? AND "offset" < ?', (pos, upper), size)
            else:
                table = self._columns('part = ? AND "offset" >= ? AND "offset" < ?',
                                      (int(partition), pos, upper), size)
            if not table.num_rows:
                return
            batch = ColumnBatch.from_arrow(table)
            pos = int(batch.offset[-1]) + 1
            yield batch, pos
            if len(batch) < size:
                return

