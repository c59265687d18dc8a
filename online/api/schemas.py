"""Request and response bodies of the REST API (pydantic models: validation and OpenAPI).

Events themselves are *not* validated here: an ingest batch is per-event (good events accepted,
bad ones reported by index), so the raw payloads go to `EventLog.append`, which validates each
with `online.events.validate_event`. The OpenAPI schema still documents their shape.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from online import catalogue
from online.events import Event

__all__ = [
    "FEATURE_LIST_PATTERN",
    "TIME_SCHEMA",
    "problem_responses",
    "BatchProfilesRequest",
    "BatchProfilesResponse",
    "ErasureResponse",
    "EventRecord",
    "FeatureInfo",
    "HealthResponse",
    "IngestOutcome",
    "IngestResponse",
    "Problem",
    "Profile",
    "Propensity",
    "ReadyResponse",
    "Segment",
    "UserEvents",
    "ingest_request_schema",
]

FeatureValue = int | float | str | list[str] | None


class Problem(BaseModel):
    """An error (RFC 9457 problem details)."""

    type: str = Field(examples=["/problems/unknown-user"])
    title: str
    status: int
    detail: str
    field: str | None = Field(None, description="The request field at fault, when one is.")


_PROBLEM_DESCRIPTIONS: dict[int | str, str] = {
    401: "No API key, or an unknown one",
    403: "The API key lacks the scope",
    404: "No events for this user",
    413: "Too large a request",
    415: "The body is not sent as application/json",
    422: "Invalid request (the `field` names what)",
    503: "Not ready",
}


def problem_responses(*statuses: int | str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for problem bodies (``application/problem+json``)."""
    schema = Problem.model_json_schema()
    return {
        status: {
            "description": _PROBLEM_DESCRIPTIONS.get(status, "Problem details (RFC 9457)"),
            "content": {"application/problem+json": {"schema": schema}},
        }
        for status in statuses
    }


# Times are ISO 8601 with a zone; the schema says RFC 3339 date-time, which every client
# library writes (a bare date, meaning its UTC midnight, is accepted too).
TIME_SCHEMA = {"type": "string", "format": "date-time"}
FEATURE_NAMES = tuple(catalogue.served_names())
FEATURE_LIST_PATTERN = "^({0})(,({0}))*$".format("|".join(FEATURE_NAMES))


class IngestOutcome(BaseModel):
    """What happened to one event of the request (by its position in the request)."""

    index: int
    status: Literal["accepted", "duplicate", "rejected"]
    offset: int | None = Field(None, description="Log offset (for a duplicate: the original's).")
    event_id: str | None = None
    field: str | None = Field(None, description="For a rejection: the field at fault.")
    reason: str | None = Field(None, description="For a rejection: the rule broken.")


class IngestResponse(BaseModel):
    """Counts and per-event outcomes of one ingest request."""

    accepted: int
    duplicates: int
    rejected: int
    offset: int = Field(description="The log offset reached: every event below it is projected.")
    first_offset: int | None = Field(None, description="Offset of the first accepted event.")
    last_offset: int | None = Field(None, description="Offset of the last accepted event.")
    outcomes: list[IngestOutcome] = Field(
        description="Duplicates and rejections by index (every event with ?outcomes=all)."
    )


class Segment(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: int | None = None
    label: str | None = None


class Propensity(BaseModel):
    model_config = ConfigDict(extra="allow")

    score: float | None = None
    horizon: str | None = None
    top_features: list[dict[str, Any]] = Field(default_factory=list)


class Profile(BaseModel):
    """A user's profile: feature values, segment and propensity, and what they reflect."""

    model_config = ConfigDict(extra="allow")

    user_id: str
    as_of: str | None = Field(description="The time the values are evaluated at (ISO 8601 UTC).")
    offset: int = Field(description="The log offset the values reflect (events below it).")
    features: dict[str, FeatureValue]
    segment: Segment | dict[str, Any] | None = None
    propensity: Propensity | dict[str, Any] | None = None
    model_version: str | None = None
    model_source: Literal["current", "as_of", "checkpoint"] = Field(
        "current",
        description="Where segment/propensity come from: the models at `offset` (current), or "
        "the models as they were at `as_of` (as_of / checkpoint).",
    )
    event_time: str | None = Field(
        None, description="Newest (effective) event time of the user reflected (ISO 8601 UTC)."
    )
    event_age_s: float | None = Field(
        None, description="Seconds from event_time to as_of: how old the newest event is."
    )


class BatchProfilesRequest(BaseModel):
    """Many users' profiles in one call, all from one log offset."""

    model_config = ConfigDict(extra="forbid")

    user_ids: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        min_length=1, description="Users to look up (at most PORTRAIT_MAX_BATCH_USERS, 1,000)."
    )
    as_of: Annotated[str, Field(json_schema_extra=TIME_SCHEMA)] | None = Field(
        None, description="ISO 8601 time with a zone; latest when absent."
    )
    features: (
        Annotated[list[str], Field(json_schema_extra={"items": {"enum": list(FEATURE_NAMES)}})]
        | None
    ) = Field(None, description="Only these features (all when absent); see GET /v1/features.")


class BatchProfilesResponse(BaseModel):
    offset: int = Field(description="The log offset every profile reflects.")
    profiles: list[Profile]
    missing: list[str] = Field(description="Requested users with no events (as of as_of).")


class EventRecord(BaseModel):
    """One event as stored in the log."""

    offset: int
    event_id: str
    user_id: str
    type: str
    ts: str
    item_id: str | None = None
    category: str | None = None
    session_id: str | None = None
    price: float | None = None
    quantity: int


class UserEvents(BaseModel):
    user_id: str
    events: list[EventRecord] = Field(description="Newest first (log order).")
    next_cursor: str | None = Field(
        None, description="Pass as ?cursor= (with the same limit and before) for the next, older "
        "page; None on the last page."
    )


class ErasureResponse(BaseModel):
    user_id: str
    erased: dict[str, Any]
    offset: int


class FeatureInfo(BaseModel):
    name: str
    dtype: str
    unit: str
    view: str
    kind: str
    description: str


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    status: Literal["ready", "not_ready"]
    log_open: bool
    offset: int = Field(description="Offset the projector has reached.")
    log_next_offset: int
    lag_events: int
    max_lag_events: int


def ingest_request_schema() -> dict[str, Any]:
    """OpenAPI request body of POST /v1/events: one event, or {"events": [...]}."""
    event = Event.model_json_schema(mode="validation")
    event.pop("title", None)
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        event,
                        {
                            "type": "object",
                            "properties": {
                                "events": {"type": "array", "items": event, "maxItems": 10_000}
                            },
                            "required": ["events"],
                            "additionalProperties": False,
                        },
                    ]
                },
                "example": {
                    "event_id": "e-1", "user_id": "u-42", "type": "purchase",
                    "ts": "2011-06-01T10:00:00+00:00", "item_id": "sku-7", "price": 12.5,
                    "quantity": 2,
                },  # fmt: skip
            }
        },
    }
