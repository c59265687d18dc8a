"""A user's event history and erasure."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import APIRouter, Query

from ..deps import ReadAccess, ServiceDep, WriteAccess
from ..errors import ApiError
from ..schemas import TIME_SCHEMA, ErasureResponse, EventRecord, UserEvents, problem_responses
from .profiles import UserId, parse_as_of

router = APIRouter(prefix="/v1/users", tags=["users"], responses=problem_responses(401, 403, 422))
_CURSOR_PREFIX = "o:"


class BadCursor(ApiError):
    status, slug, title = 422, "bad-cursor", "Invalid cursor"

    def __init__(self) -> None:
        super().__init__("cursor: not a cursor this API returned (pass next_cursor as is)",
                         field="cursor")


def encode_cursor(offset: int) -> str:
    """The opaque cursor of the page after the event at ``offset`` (events below it).

    >>> encode_cursor(1234), decode_cursor(encode_cursor(1234))
    ('bzoxMjM0', 1234)
    """
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{offset}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    """The log offset a cursor pages below (None when absent), or `BadCursor`."""
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeError, ValueError):
        raise BadCursor() from None
    digits = text.removeprefix(_CURSOR_PREFIX)
    if text == digits or not digits.isdigit() or not digits.isascii() or len(digits) > 19:
        raise BadCursor()
    return int(digits)


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
        Query(max_length=64, description="`next_cursor` of the previous page: the next, older "
              "page."),
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
    profiles (``offline.erasure``); the bare app reaches the log and the projection.
    """
    erased, offset = service.erase(user_id)
    return ErasureResponse(user_id=user_id, erased=erased, offset=offset)
