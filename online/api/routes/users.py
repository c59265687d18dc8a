"""A user's event history and erasure."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ..deps import ReadAccess, ServiceDep, WriteAccess
from ..schemas import TIME_SCHEMA, ErasureResponse, EventRecord, UserEvents, problem_responses
from .profiles import UserId, parse_as_of

router = APIRouter(prefix="/v1/users", tags=["users"], responses=problem_responses(401, 403, 422))
# An opaque token to clients; inside, "c" and the offset in hex. Every string the pattern
# admits is a valid cursor, so the OpenAPI schema describes the parameter exactly.
CURSOR_PATTERN = "^c[0-9a-f]{1,15}$"


def encode_cursor(offset: int) -> str:
    """The cursor of the page after the event at ``offset`` (the events below it).

    >>> encode_cursor(1234), decode_cursor(encode_cursor(1234))
    ('c4d2', 1234)
    """
    return f"c{offset:x}"


def decode_cursor(cursor: str | None) -> int | None:
    """The log offset a cursor pages below (None when absent); FastAPI checked the pattern."""
    return None if cursor is None else int(cursor[1:], 16)


@router.get(
    "/{user_id}/events",
    dependencies=[ReadAccess],
)
def get_user_events(
    user_id: UserId,
    service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most events returned.")] = 100,
    before: Annotated[
        str | None,
        Query(description="Only events with a time strictly before this (ISO 8601 with a zone).",
              json_schema_extra=TIME_SCHEMA),
    ] = None,
    cursor: Annotated[
        str | None,
        Query(pattern=CURSOR_PATTERN, description="`next_cursor` of the previous page: the "
              "next, older page."),
    ] = None,
) -> UserEvents:
    """The user's recent events, newest first (log order); page with `next_cursor`.

    Pages are cut by log offset, so events that share a time are never skipped or repeated,
    and events appended while paging do not shift later pages. `before` filters by time.
    An unknown user has an empty history (not a 404): no events is a valid answer here.
    """
    before_us = parse_as_of(before, "before")
    below = decode_cursor(cursor)
    # one more than the page: whether a next page exists is known without another query
    rows = service.history(user_id, limit=limit + 1, before_us=before_us, before_offset=below)
    events = [EventRecord.model_validate(r) for r in rows[:limit]]
    next_cursor = encode_cursor(events[-1].offset) if len(rows) > limit else None
    return UserEvents(user_id=user_id, events=events, next_cursor=next_cursor)


@router.delete(
    "/{user_id}",
    dependencies=[WriteAccess],
    responses=problem_responses(404),
)
def delete_user(user_id: UserId, service: ServiceDep) -> ErasureResponse:
    """Erase a user across every store; the body is the erasure receipt, store by store.

    Served by `portrait serve`, this reaches the event log and its quarantine, the live
    projection and its checkpoints, the offline snapshot, the online store and the sampled
    profiles (``offline.privacy.erasure``); the bare app reaches the log and the projection.
    """
    erased, offset = service.erase(user_id)
    return ErasureResponse(user_id=user_id, erased=erased, offset=offset)
