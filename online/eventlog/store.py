"""The log's SQLite file: connections (one writer, a pool of readers), schema and migrations."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import sqlite_utils

from online import partitions as pt
from online.events import BATCH_COLUMNS

_INSERT = (
    'INSERT INTO events ("offset", event_id, user_id, type, ts, item_id, category, session_id,'
    " price, quantity, ingested_at, part) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT = "SELECT " + ", ".join(f'"{c}"' for c in BATCH_COLUMNS) + " FROM events"
# where each of BATCH_COLUMNS sits in an _INSERT row
_INSERTED = tuple(("offset", "event_id", "user_id", "type", "ts", "item_id", "category",
                   "session_id", "price", "quantity").index(c) for c in BATCH_COLUMNS)
_MAX_INT64 = 2**63 - 1


class LogFile:
    """The connections and schema of one log file; ``EventLog`` adds appending and reading."""

    def __init__(
        self,
        path: str | Path,
        *,
        pseudonymizer: Callable[[str], str] | None = None,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout_s: float = 30.0,
        partitions: int | None = None,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous: expected 'NORMAL' or 'FULL', got {synchronous!r}")
        self.path = path if str(path) == ":memory:" else Path(path)
        self._pseudonymize = pseudonymizer
        self._synchronous = synchronous
        self._timeout = busy_timeout_s
        self._memory = str(path) == ":memory:"
        self._write_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []  # reader connections not in use
        self._readers: list[sqlite3.Connection] = []  # every reader connection, to close
        self._readers_lock = threading.Lock()
        self._closed = False
        self._columnar: Any = None  # the arrow reader (online.eventlog.columnar), on use
        # (first offset, rows) of the last append, for the read that follows it (`read`)
        self._recent: tuple[int, list[tuple]] | None = None
        self._writer = self._connect()
        try:
            self._create_schema(None if partitions is None else pt.check_partitions(partitions))
        except BaseException:
            self._writer.close()
            raise

    # -- connections -------------------------------------------------------------------------

    def _connect(self, cache_kib: int = 32768) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves. One writer
        # connection shared under a lock (appends serialise in SQLite anyway) and a pool of
        # reader connections, so a long read never blocks an append (WAL snapshots).
        conn = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=self._timeout
        )
        if not self._memory:
            conn.execute("PRAGMA journal_mode=WAL")
        # WAL + synchronous=NORMAL: a commit is written to the WAL file (the OS page cache)
        # before COMMIT returns, and fsynced only at checkpoints. An acknowledged append
        # therefore survives a process crash (SIGKILL, OOM kill), which is the guarantee we
        # give; only an OS crash or power loss may drop the last commits. FULL fsyncs the WAL
        # on every commit (survives power loss, ~2-10x slower for small batches).
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute(f"PRAGMA cache_size=-{int(cache_kib)}")  # writer: keeps the id index hot
        conn.execute("PRAGMA temp_store=MEMORY")
        return conn

    def _create_schema(self, partitions: int | None) -> None:
        db = sqlite_utils.Database(self._writer, execute_plugins=False)
        with self._write_lock:
            self._writer.execute("BEGIN IMMEDIATE")  # two processes opening a new log at once
            try:
                db.table("events").create(
                    {
                        "offset": int, "event_id": str, "user_id": str, "type": int, "ts": int,
                        "item_id": str, "category": str, "session_id": str, "price": float,
                        "quantity": int, "ingested_at": int,
                    },
                    pk="offset",
                    not_null={"event_id", "user_id", "type", "ts", "quantity", "ingested_at"},
                    if_not_exists=True,
                )  # fmt: skip
                events = db.table("events")
                # the unique index is what makes event_id the idempotency key
                events.create_index(["event_id"], unique=True, if_not_exists=True)
                events.create_index(["user_id", "offset"], if_not_exists=True)
                events.create_index(["ts"], if_not_exists=True)
                db.table("meta").create({"key": str, "value": int}, pk="key", if_not_exists=True)
                db.table("quarantine").create(
                    {
                        "id": int, "received_at": int, "source": str, "batch_index": int,
                        "raw": str, "field": str, "reason": str,
                    },
                    pk="id",
                    if_not_exists=True,
                )  # fmt: skip
                self._writer.execute(
                    "INSERT OR IGNORE INTO meta (key, value) "
                    "SELECT 'next_offset', COALESCE(MAX(\"offset\") + 1, 0) FROM events"
                )
                self._writer.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', 1)"
                )
                self.partitions = _ensure_partitions(self._writer, partitions)
                self._writer.execute("COMMIT")
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise sqlite3.ProgrammingError("the event log is closed")
        if self._memory:  # an in-memory database exists in one connection only
            with self._write_lock:
                yield self._writer
            return
        # A pool, not one connection per thread: the API's worker threads come and go, and a
        # per-thread connection would outlive its thread. list.pop/append are atomic.
        try:
            conn = self._idle.pop()
        except IndexError:
            conn = self._connect(cache_kib=8192)
            conn.execute("PRAGMA query_only=ON")
            with self._readers_lock:
                self._readers.append(conn)
        try:
            yield conn
        finally:
            self._idle.append(conn)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise sqlite3.ProgrammingError("the event log is closed")
        with self._write_lock:
            conn = self._writer
            # IMMEDIATE takes the write lock up front: the next_offset we read cannot change
            # under us, even when another process appends to the same file.
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Close every connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._columnar is not None:
            self._columnar.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
            self._idle.clear()
        with self._write_lock:
            self._writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ensure_partitions(conn: sqlite3.Connection, partitions: int | None) -> int:
    """The log's partition count, recorded once; adds the partition column to older logs.

    Runs inside the schema transaction, so an older log gets its column, filled for every
    event, and the index in one step (or not at all). A log that records a count refuses a
    different one: moving users between partitions would need a rewrite, not a reopen.
    """
    row = conn.execute("SELECT value FROM meta WHERE key = 'partitions'").fetchone()
    if row is not None and partitions is not None and partitions != row[0]:
        raise ValueError(f"partitions: the log has {row[0]} partitions, got {partitions}")
    count = row[0] if row is not None else (partitions or pt.DEFAULT_PARTITIONS)
    columns = {c[1] for c in conn.execute("PRAGMA table_info(events)")}
    if "part" not in columns:
        conn.execute("ALTER TABLE events ADD COLUMN part INTEGER")
    conn.execute('CREATE INDEX IF NOT EXISTS events_part_offset ON events (part, "offset")')
    # every event of an older log; later, rows a writer of an older version appended (cheap:
    # NULLs sort first in the index)
    users = [u for (u,) in conn.execute("SELECT DISTINCT user_id FROM events WHERE part IS NULL")]
    conn.executemany(
        "UPDATE events SET part = ? WHERE user_id = ? AND part IS NULL",
        ((pt.partition_of(u, count), u) for u in users),
    )
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('partitions', ?)", (count,))
    return count
