"""The event log: the append-only, deduplicated source of truth every projection is rebuilt from.

An SQLite file (WAL mode). Each event gets an offset, a 0-based sequence number that is never
reused, even after rows are erased (``meta.next_offset``). One append batch is one
transaction: validation happens first, then the batch's event ids are looked up in the log,
and the accepted events get consecutive offsets; rejected payloads go to ``quarantine`` with
their reason, in the same transaction, so nothing is half-applied or silently lost.

>>> with EventLog(":memory:") as log:
...     r = log.append([
...         {"event_id": "e1", "user_id": "u1", "type": "view", "ts": "2011-06-01T00:00:00Z"},
...         {"event_id": "e1", "user_id": "u1", "type": "view", "ts": "2011-06-01T00:00:00Z"},
...         {"event_id": "e2", "user_id": "u1", "type": "purchase", "ts": "2011-06-01T00:00:00Z"},
...     ])
...     batch, resume = log.read(0)
>>> r.accepted, r.duplicates, r.rejected, r.last_offset, r.next_offset, resume
(1, 1, 1, 0, 1, 1)
>>> r.outcomes[2].field, batch.event_id.tolist()
('price', ['e1'])
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import sqlite_utils

from online import partitions as pt
from online.events import (
    BATCH_COLUMNS,
    TYPE_CODES,
    Event,
    EventBatch,
    InvalidEvent,
    validate_event,
)

__all__ = ["AppendResult", "EventBatch", "EventLog", "Outcome", "Unparsed"]

Status = Literal["accepted", "duplicate", "rejected"]
_LOOKUP_CHUNK = 500  # ids per IN (...) query: well under SQLite's bound-parameter limit
_MAX_RAW_CHARS = 64 * 1024  # a quarantined payload larger than this is kept truncated
_INSERT = (
    'INSERT INTO events ("offset", event_id, user_id, type, ts, item_id, category, session_id,'
    " price, quantity, ingested_at, part) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT = "SELECT " + ", ".join(f'"{c}"' for c in BATCH_COLUMNS) + " FROM events"
_QUARANTINE = (
    "INSERT INTO quarantine (received_at, source, batch_index, raw, field, reason)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_EVENT_FIELDS = frozenset(Event.model_fields)
_QUARANTINE_USER = "CASE WHEN json_valid(raw) THEN CAST(json_extract(raw, '$.user_id') AS TEXT) END"


class Unparsed(NamedTuple):
    """An input line that holds no event object (not JSON, a list, a scalar), to be rejected.

    Appended like a payload, so that it is reported by index and quarantined with its reason
    in the batch's transaction; ``text`` is the line as read.
    """

    text: str
    field: str  # "<line>" for text that is not JSON, "<event>" for JSON that is no object
    rule: str
    message: str


class Outcome(NamedTuple):
    """What happened to payload ``index`` of an append batch."""

    index: int
    status: Status
    offset: int | None  # the event's offset (for a duplicate: the offset already holding it)
    event_id: str | None
    reason: str | None = None
    field: str | None = None


@dataclass(frozen=True)
class AppendResult:
    """The outcome of one append batch, per payload and in total."""

    outcomes: list[Outcome]
    accepted: int
    duplicates: int
    rejected: int
    last_offset: int | None  # offset of the last event accepted in this batch
    next_offset: int  # the log's next offset once this batch committed


class EventLog:
    """The event log in one SQLite file; safe to share between threads (and processes).

    ``pseudonymizer`` maps a user id to the id stored (e.g. a keyed hash); it is applied to
    accepted events and to the ``user_id`` of quarantined payloads, and ``read_user`` /
    ``erase_user`` take the stored id (``stored_user_id`` converts).
    """

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
                db["events"].create(
                    {
                        "offset": int, "event_id": str, "user_id": str, "type": int, "ts": int,
                        "item_id": str, "category": str, "session_id": str, "price": float,
                        "quantity": int, "ingested_at": int,
                    },
                    pk="offset",
                    not_null={"event_id", "user_id", "type", "ts", "quantity", "ingested_at"},
                    if_not_exists=True,
                )  # fmt: skip
                events = db["events"]
                # the unique index is what makes event_id the idempotency key
                events.create_index(["event_id"], unique=True, if_not_exists=True)
                events.create_index(["user_id", "offset"], if_not_exists=True)
                events.create_index(["ts"], if_not_exists=True)
                db["meta"].create({"key": str, "value": int}, pk="key", if_not_exists=True)
                db["quarantine"].create(
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
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
            self._idle.clear()
        with self._write_lock:
            self._writer.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -----------------------------------------------------------------------------

    def stored_user_id(self, user_id: str) -> str:
        """The id under which ``user_id``'s events are stored (pseudonymized when configured)."""
        return self._pseudonymize(user_id) if self._pseudonymize else user_id

    def append(
        self,
        payloads: Iterable[Mapping | Event],
        *,
        source: str = "python",
        now_us: int | None = None,
    ) -> AppendResult:
        """Validate, deduplicate and append a batch in one transaction.

        Dicts go through ``validate_event`` (``now_us`` pins "now" for the future-time rule);
        ``Event`` objects are taken as validated; ``Unparsed`` lines are rejected. Returns one
        ``Outcome`` per payload.
        """
        received_at = time.time_ns() // 1000
        items = payloads if isinstance(payloads, list) else list(payloads)
        outcomes: list[Any] = [None] * len(items)
        # parallel lists, not (index, event) tuples: fewer allocations, fewer GC passes
        idx: list[int] = []
        events: list[Event] = []
        bad: list[tuple] = []
        for index, payload in enumerate(items):
            if not isinstance(payload, Event):
                try:
                    if isinstance(payload, Unparsed):
                        raise InvalidEvent(payload.field, payload.rule, payload.text,
                                           payload.message)
                    payload = validate_event(payload, now_us=now_us)
                except InvalidEvent as exc:
                    outcomes[index] = self._rejected(index, payload, exc, received_at, source, bad)
                    continue
            idx.append(index)
            events.append(payload)
        if not items:
            return AppendResult([], 0, 0, 0, None, self.next_offset)

        with self._transaction() as conn:
            first = conn.execute("SELECT value FROM meta WHERE key = 'next_offset'").fetchone()[0]
            ids = {e.event_id for e in events}
            seen = _existing_offsets(conn, ids)
            if seen or len(ids) < len(events):
                idx, events = _drop_duplicates(idx, events, seen, first, outcomes)
            offsets = range(first, first + len(events))
            if self._pseudonymize is None:
                users = [e.user_id for e in events]
            else:
                known = {u: self._pseudonymize(u) for u in {e.user_id for e in events}}
                users = [known[e.user_id] for e in events]
            code = TYPE_CODES
            part = {u: pt.partition_of(u, self.partitions) for u in set(users)}
            rows = [
                (o, e.event_id, u, code[e.type], e.ts_us, e.item_id, e.category, e.session_id,
                 e.price, e.quantity, received_at, part[u])
                for o, e, u in zip(offsets, events, users, strict=True)
            ]  # fmt: skip
            if rows:
                conn.executemany(_INSERT, rows)
                conn.execute("UPDATE meta SET value = ? WHERE key = 'next_offset'", (offsets.stop,))
            if bad:
                conn.executemany(_QUARANTINE, bad)
        make = tuple.__new__  # Outcome(...) minus its Python-level __new__: ~30% cheaper
        for o, index, e in zip(offsets, idx, events, strict=True):
            outcomes[index] = make(Outcome, (index, "accepted", o, e.event_id, None, None))
        return AppendResult(
            outcomes=outcomes,
            accepted=len(events),
            duplicates=len(items) - len(events) - len(bad),
            rejected=len(bad),
            last_offset=offsets[-1] if events else None,
            next_offset=offsets.stop,
        )

    def _rejected(
        self, index: int, payload: Any, exc: InvalidEvent, at: int, source: str, bad: list
    ) -> Outcome:
        reason = str(exc)
        if self._pseudonymize:  # the value may be the raw id, or personal data in any field
            reason = f"{exc.field}: {exc.message} [rule={exc.rule}]"
        bad.append((at, source, index, self._raw(payload), exc.field, reason))
        return Outcome(index, "rejected", None, _event_id_of(payload), reason, exc.field)

    def _raw(self, payload: Any) -> str:
        """The payload as JSON text for the quarantine (user id pseudonymized, size capped).

        An ``Unparsed`` line is kept as a JSON string of its text. With a pseudonymizer, what
        cannot be attributed to a user (a line that is no object, a list or dict where a field
        wants a string, a field the schema does not have) is redacted: erasure by user could
        never find a raw id kept there.
        """
        obj = _text(payload.text) if isinstance(payload, Unparsed) else _jsonable(payload)
        if self._pseudonymize:
            obj = self._redacted(obj, payload)
        text = json.dumps(obj, ensure_ascii=False)
        if len(text) > _MAX_RAW_CHARS:
            keep = {"truncated": True, "chars": len(text), "head": text[:_MAX_RAW_CHARS]}
            if isinstance(obj, dict) and isinstance(obj.get("user_id"), str):
                keep["user_id"] = obj["user_id"][:256]  # still findable by erase_user
            text = json.dumps(keep, ensure_ascii=False)
        return text

    def _redacted(self, obj: Any, payload: Any) -> Any:
        if not isinstance(obj, dict) or isinstance(payload, Unparsed):
            kind = "line" if isinstance(payload, Unparsed) else type(payload).__name__
            return {"redacted": kind, "chars": len(json.dumps(obj, ensure_ascii=False))}
        for key in obj.keys() - _EVENT_FIELDS:  # e.g. "email": kept by name, not value
            obj[key] = "<redacted>"
        for key, value in obj.items():
            if isinstance(value, dict | list):  # a container never passes a field's rule
                obj[key] = "<redacted>"
        uid = obj.get("user_id")
        if isinstance(uid, str | int) and not isinstance(uid, bool):
            obj["user_id"] = self._pseudonymize(str(uid))
        elif "user_id" in obj:
            obj["user_id"] = "<redacted>"
        return obj

    def erase_user(self, user_id: str) -> dict[str, Any]:
        """Delete a user's events and quarantined payloads (``user_id`` as stored).

        Offsets are not reused. Deleted pages are zeroed (``secure_delete``) and the WAL is
        checkpointed and truncated, so the erased rows do not linger in the database files.
        """
        with self._write_lock:
            self._writer.execute("PRAGMA secure_delete=ON")
        try:
            with self._transaction() as conn:
                events = conn.execute("DELETE FROM events WHERE user_id = ?", (user_id,)).rowcount
                quarantined = conn.execute(
                    f"DELETE FROM quarantine WHERE {_QUARANTINE_USER} = ?", (user_id,)
                ).rowcount
        finally:
            with self._write_lock:
                self._writer.execute("PRAGMA secure_delete=OFF")
        checkpointed = True
        if not self._memory:
            with self._write_lock:
                busy = self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            checkpointed = busy == 0
        return {"events": events, "quarantine": quarantined, "wal_checkpointed": checkpointed}

    # -- reading -----------------------------------------------------------------------------

    def read(
        self, from_offset: int = 0, limit: int = 100_000, *, to_offset: int | None = None
    ) -> tuple[EventBatch, int]:
        """Events with ``from_offset <= offset < to_offset`` in offset order, at most ``limit``.

        Returns ``(batch, resume_offset)``: pass ``resume_offset`` as the next ``from_offset``
        (last returned offset + 1, or ``from_offset`` when nothing was returned).
        """
        if limit <= 0:
            return EventBatch.empty(), from_offset
        upper = _MAX_INT64 if to_offset is None else to_offset
        with self._reading() as conn:
            rows = conn.execute(
                f'{_SELECT} WHERE "offset" >= ? AND "offset" < ? ORDER BY "offset" LIMIT ?',
                (from_offset, upper, limit),
            ).fetchall()
        if not rows:
            return EventBatch.empty(), from_offset
        return EventBatch.from_rows(rows), rows[-1][0] + 1

    def batches(self, from_offset: int = 0, to_offset: int | None = None,
                size: int = 100_000, *, prefetch: bool = False,
                ) -> Iterator[tuple[EventBatch, int]]:
        """``(batch, resume_offset)`` over offsets ``[from_offset, to_offset)``, in order.

        The one loop over ``read``: each batch holds at most ``size`` events, the resume offset
        is where the next read starts.  ``prefetch``: the next batch is read on a thread while
        the caller works on this one (SQLite releases the GIL while it reads).
        """
        if to_offset is not None and from_offset >= to_offset:
            return
        if not prefetch:
            offset = from_offset
            while True:
                batch, offset = self.read(offset, size, to_offset=to_offset)
                if not len(batch):
                    return
                yield batch, offset
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1, thread_name_prefix="log-read") as pool:
            pending = pool.submit(self.read, from_offset, size, to_offset=to_offset)
            while True:
                batch, resume = pending.result()
                if not len(batch):
                    return
                done = to_offset is not None and resume >= to_offset
                if not done:
                    pending = pool.submit(self.read, resume, size, to_offset=to_offset)
                yield batch, resume
                if done:
                    return

    def read_partitions(
        self,
        partitions: int | Iterable[int],
        from_offset: int = 0,
        limit: int = 100_000,
        *,
        to_offset: int | None = None,
    ) -> tuple[EventBatch, int]:
        """Like ``read``, restricted to one partition or a set (through the partition index).

        The resume offset is one past the last event returned (``from_offset`` when none).
        A set is read partition by partition and merged by offset, so each call costs at most
        ``limit`` rows per partition; work that needs no global order (a replay: users never
        span partitions) is cheaper reading one partition at a time.
        """
        parts = sorted({int(partitions)} if isinstance(partitions, int) else set(partitions))
        bad = [p for p in parts if not 0 <= p < self.partitions]
        if bad:
            raise ValueError(f"partitions: expected values in [0, {self.partitions}), got {bad}")
        if limit <= 0 or not parts:
            return EventBatch.empty(), from_offset
        upper = _MAX_INT64 if to_offset is None else to_offset
        rows: list[tuple] = []
        with self._reading() as conn:
            for part in parts:
                rows += conn.execute(
                    f'{_SELECT} WHERE part = ? AND "offset" >= ? AND "offset" < ?'
                    ' ORDER BY "offset" LIMIT ?',
                    (part, from_offset, upper, limit),
                ).fetchall()
        if not rows:
            return EventBatch.empty(), from_offset
        if len(parts) > 1:
            rows.sort(key=lambda r: r[0])  # column 0 is the offset
            del rows[limit:]
        return EventBatch.from_rows(rows), rows[-1][0] + 1

    def partition_counts(self) -> list[int]:
        """Events held per partition (index ``p`` = partition ``p``)."""
        counts = [0] * self.partitions
        with self._reading() as conn:
            for part, n in conn.execute("SELECT part, COUNT(*) FROM events GROUP BY part"):
                counts[part] = n
        return counts

    def read_user(
        self,
        user_id: str,
        *,
        until_ts_us: int | None = None,
        limit: int | None = None,
        before_ts_us: int | None = None,
        before_offset: int | None = None,
    ) -> EventBatch:
        """A user's events in offset order (``user_id`` as stored).

        ``until_ts_us`` keeps ``ts <= until``, ``before_ts_us`` keeps ``ts < before`` (raw event
        times: with late events this is a superset of the "as of" prefix, which the caller
        cuts by effective time). ``limit`` keeps the newest ``limit`` events (highest offsets);
        ``before_offset`` keeps ``offset < before_offset``, the next page of such a read
        (offsets are unique, times are not: many events may share one).
        """
        where, args = ["user_id = ?"], [user_id]
        if before_offset is not None:
            where.append('"offset" < ?')
            args.append(before_offset)
        if until_ts_us is not None:
            where.append("ts <= ?")
            args.append(until_ts_us)
        if before_ts_us is not None:
            where.append("ts < ?")
            args.append(before_ts_us)
        sql = f"{_SELECT} WHERE {' AND '.join(where)}"
        if limit is not None:
            sql = f'SELECT * FROM ({sql} ORDER BY "offset" DESC LIMIT ?) ORDER BY "offset"'
            args.append(max(limit, 0))
        else:
            sql += ' ORDER BY "offset"'
        with self._reading() as conn:
            rows = conn.execute(sql, args).fetchall()
        return EventBatch.from_rows(rows)

    def read_quarantine(self, from_id: int = 0, limit: int = 1_000) -> list[dict[str, Any]]:
        """Quarantined payloads (oldest first), each with its reason and the raw JSON."""
        with self._reading() as conn:
            cur = conn.execute(
                "SELECT id, received_at, source, batch_index, raw, field, reason"
                " FROM quarantine WHERE id >= ? ORDER BY id LIMIT ?",
                (from_id, limit),
            )
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    @property
    def next_offset(self) -> int:
        """The offset the next accepted event will get (one past the newest ever appended)."""
        with self._reading() as conn:
            return conn.execute("SELECT value FROM meta WHERE key = 'next_offset'").fetchone()[0]

    def count(self) -> int:
        """The number of events held (offsets minus erased events)."""
        with self._reading() as conn:
            return conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def stats(self) -> dict[str, Any]:
        """Size and extent of the log, for operators and ``/metrics``."""
        with self._reading() as conn:
            events, users, first, last = conn.execute(
                "SELECT COUNT(*), COUNT(DISTINCT user_id), MIN(ts), MAX(ts) FROM events"
            ).fetchone()
            quarantined = conn.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
            next_offset = conn.execute(
                "SELECT value FROM meta WHERE key = 'next_offset'"
            ).fetchone()[0]
        size = 0
        if not self._memory:
            for suffix in ("", "-wal"):
                f = Path(f"{self.path}{suffix}")
                size += f.stat().st_size if f.exists() else 0
        return {
            "path": str(self.path), "events": events, "users": users,
            "next_offset": next_offset, "quarantined": quarantined,
            "first_ts_us": first, "last_ts_us": last, "size_bytes": size,
            "partitions": self.partitions,
        }  # fmt: skip


_MAX_INT64 = 2**63 - 1


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
_DUP_IN_LOG = "event_id already in the log"
_DUP_IN_BATCH = "event_id repeated within the batch"


def _existing_offsets(conn: sqlite3.Connection, event_ids: set[str]) -> dict[str, int]:
    """event_id -> offset for those of ``event_ids`` already in the log."""
    ids = list(event_ids)
    found: dict[str, int] = {}
    for start in range(0, len(ids), _LOOKUP_CHUNK):
        chunk = ids[start : start + _LOOKUP_CHUNK]
        marks = ",".join("?" * len(chunk))
        found.update(
            conn.execute(
                f'SELECT event_id, "offset" FROM events WHERE event_id IN ({marks})', chunk
            ).fetchall()
        )
    return found


def _drop_duplicates(
    idx: list[int], events: list[Event], seen: dict[str, int], first: int, outcomes: list
) -> tuple[list[int], list[Event]]:
    """The events not in ``seen`` (first occurrence wins); fills the duplicates' outcomes."""
    keep_idx: list[int] = []
    keep: list[Event] = []
    for index, e in zip(idx, events, strict=True):
        held = seen.get(e.event_id)
        if held is None:
            seen[e.event_id] = first + len(keep)  # a later repeat in the batch is a duplicate
            keep_idx.append(index)
            keep.append(e)
        else:
            why = _DUP_IN_BATCH if held >= first else _DUP_IN_LOG
            outcomes[index] = Outcome(index, "duplicate", held, e.event_id, why)
    return keep_idx, keep


def _event_id_of(payload: Any) -> str | None:
    event_id = payload.get("event_id") if isinstance(payload, Mapping) else None
    if not (isinstance(event_id, str) and 0 < len(event_id) <= 128):
        return None
    return event_id if _text(event_id) is event_id else None  # a lone surrogate is no id


def _text(value: str) -> str:
    """``value``, or with lone surrogates written as ``\\udXXX`` escapes (storable as UTF-8)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` made JSON-safe for SQLite's json1 (no NaN/inf, string keys, repr fallback)."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, int) and value.bit_length() > 256:  # str() refuses > 4,300 digits
        return f"<int of {value.bit_length()} bits>"
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if depth < 20 and isinstance(value, Mapping):
        return {_text(str(k)): _jsonable(v, depth + 1) for k, v in value.items()}
    if depth < 20 and isinstance(value, list | tuple):
        return [_jsonable(v, depth + 1) for v in value]
    try:  # a container nested deeper than repr can recurse, or a hostile __repr__
        text = repr(value)[:1000]
    except Exception:
        text = f"<{type(value).__name__} nested too deep to show>"
    return _text(text)
