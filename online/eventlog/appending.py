"""Appending to the log: validation, deduplication by event id, quarantine, erasure."""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, NamedTuple

from online import partitions as pt
from online.eventlog.store import _INSERT, LogFile
from online.events import TYPE_CODES, Event, InvalidEvent, validate_event

Status = Literal["accepted", "duplicate", "rejected"]
_LOOKUP_CHUNK = 500  # ids per IN (...) query: well under SQLite's bound-parameter limit
_MAX_RAW_CHARS = 64 * 1024  # a quarantined payload larger than this is kept truncated
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

    index: int  # type: ignore[assignment]  # the field shadows tuple.index, on purpose
    status: Status
    offset: int | None  # the event's offset (for a duplicate: the offset already holding it)
    event_id: str | None
    reason: str | None = None
    field: str | None = None


@dataclass(frozen=True)
class AppendResult:
    """The outcome of one append batch, per payload and in total.

    ``problems`` lists the payloads not accepted (duplicates, rejections) in payload order;
    ``outcomes`` every payload's, the accepted ones made on first read (a server answering
    with the problems alone never builds a thousand outcomes per batch).
    """

    problems: list[Outcome]
    accepted: int
    duplicates: int
    rejected: int
    last_offset: int | None  # offset of the last event accepted in this batch
    next_offset: int  # the log's next offset once this batch committed
    # the accepted payloads' indexes and events, in offset order
    accepted_at: tuple[list[int], list[Event]] = field(default_factory=lambda: ([], []),
                                                       repr=False)

    @cached_property
    def outcomes(self) -> list[Outcome]:
        """One outcome per payload, in payload order."""
        out: list[Any] = [None] * (self.accepted + len(self.problems))
        for o in self.problems:
            out[o.index] = o
        idx, events = self.accepted_at
        make = tuple.__new__  # Outcome(...) minus its Python-level __new__: ~30% cheaper
        first = self.next_offset - self.accepted
        for k, (index, e) in enumerate(zip(idx, events, strict=True)):
            out[index] = make(Outcome, (index, "accepted", first + k, e.event_id, None, None))
        return out




class Appending(LogFile):
    """``append`` and ``erase_user`` of ``EventLog``."""

    next_offset: int  # `Reading.next_offset`, beside it in `EventLog`

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
        if rows:  # committed: the next read of these offsets takes them from here
            self._recent = (first, rows)
        return AppendResult(
            problems=[o for o in outcomes if o is not None],
            accepted_at=(idx, events),
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
        if isinstance(uid, str | int) and not isinstance(uid, bool) and self._pseudonymize:
            obj["user_id"] = self._pseudonymize(str(uid))
        elif "user_id" in obj:
            obj["user_id"] = "<redacted>"
        return obj

    def erase_user(self, user_id: str) -> dict[str, Any]:
        """Delete a user's events and quarantined payloads (``user_id`` as stored).

        Offsets are not reused. Deleted pages are zeroed (``secure_delete``) and the WAL is
        checkpointed and truncated, so the erased rows do not linger in the database files.
        """
        self._recent = None  # no row of theirs may be served from memory after this
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
