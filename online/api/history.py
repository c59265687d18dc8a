"""A user's events as `GET /v1/users/{id}/events` lists them: newest first, paged."""

from __future__ import annotations

from typing import Any

from online.catalogue import iso_utc
from online.eventlog import EventLog
from online.events import EventType

__all__ = ["history_rows"]

_TYPE_NAMES = {int(t): t.wire_name for t in EventType}


def history_rows(log: EventLog, user_id: str, *, limit: int, before_us: int | None = None,
                 before_offset: int | None = None) -> list[dict[str, Any]]:
    """The user's newest ``limit`` events (time before ``before_us``, offset before
    ``before_offset``), newest first, under the id the caller gave."""
    batch = log.read_user(log.stored_user_id(user_id), limit=limit, before_ts_us=before_us,
                          before_offset=before_offset)
    rows = []
    for i in range(len(batch) - 1, -1, -1):
        price = float(batch.price[i])
        rows.append({
            "offset": int(batch.offset[i]), "event_id": batch.event_id[i],
            "user_id": user_id, "type": _TYPE_NAMES[int(batch.type[i])],
            "ts": iso_utc(int(batch.ts[i])), "item_id": batch.item_id[i],
            "category": batch.category[i], "session_id": batch.session_id[i],
            "price": None if price != price else price, "quantity": int(batch.quantity[i]),
        })  # fmt: skip
    return rows
