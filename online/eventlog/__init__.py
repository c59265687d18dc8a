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

from online.eventlog.appending import Appending, AppendResult, Outcome, Unparsed
from online.eventlog.columnar import ColumnBatch, ColumnReading
from online.eventlog.reading import Reading
from online.eventlog.store import _INSERT, _SELECT  # noqa: F401 (bulk loaders use the layout)
from online.events import EventBatch

__all__ = ["AppendResult", "ColumnBatch", "EventBatch", "EventLog", "Outcome", "Unparsed"]


class EventLog(Appending, Reading, ColumnReading):
    """The event log in one SQLite file; safe to share between threads (and processes).

    ``pseudonymizer`` maps a user id to the id stored (e.g. a keyed hash); it is applied to
    accepted events and to the ``user_id`` of quarantined payloads, and ``read_user`` /
    ``erase_user`` take the stored id (``stored_user_id`` converts). The constructor is
    `LogFile`'s (``online.eventlog.store``): path, pseudonymizer, synchronous, busy timeout,
    partitions.
    """

    def __enter__(self) -> EventLog:
        return self
