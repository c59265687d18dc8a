"""A user's event history and erasure."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ..deps import ReadAccess, ServiceDep, WriteAccess
from ..schemas import TIME_SCHEMA, ErasureResponse, EventRecord, UserEvents, problem_responses
from .profiles import UserId, parse_as_of

router = APIRouter(prefix="/v1/users", tags=["users"], responses=problem_responses(401, 403, 422))


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
) -> UserEvents:
    """The user's recent events, newest first (log order); page with `next_before`.

    An unknown user has an empty history (not a 404): no events is a valid answer here.
    """
    before_us = parse_as_of(before)
    rows = service.history(user_id, limit=limit, before_us=before_us)
    events = [EventRecord.model_validate(r) for r in rows]
    next_before = events[-1].ts if len(events) == limit else None
    return UserEvents(user_id=user_id, events=events, next_before=next_before)


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
