"""POST /v1/events: validate, append and project events (read-your-writes on return)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from ..deps import MetricsDep, ServiceDep, SettingsDep, WriteAccess
from ..errors import ApiError, PayloadTooLarge, UnsupportedMediaType
from ..schemas import IngestOutcome, IngestResponse, ingest_request_schema, problem_responses

router = APIRouter(prefix="/v1/events", tags=["events"], dependencies=[WriteAccess],
                   responses=problem_responses(401, 403, 413, 415, 422))


class InvalidBody(ApiError):
    status, slug, title = 422, "invalid-body", "Invalid request body"


async def _raw_body(request: Request) -> bytes:
    # Only application/json: a web page can POST text/plain or a form to a keyless loopback
    # server without a CORS preflight, but not application/json.
    content_type = request.headers.get("content-type")
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise UnsupportedMediaType(content_type)
    return await request.body()


def _parse(raw: bytes) -> Any:
    # Parsed here, not by a pydantic parameter: events are validated one by one by the log (a
    # bad event is reported by index, never fails the batch), and skipping a generic dict
    # validation of 1,000 nested payloads saves most of the request's time. Parsed in the
    # route (thread pool), not in an async dependency: a 1 MB body would hold the event loop.
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidBody(f"the body is not valid JSON: {exc}", field="body") from None
    except RecursionError:  # the decoder recurses once per level: ~1,000 levels overflow it
        raise InvalidBody("the body is nested too deep to parse", field="body",
                          rule="max_depth") from None


def _payloads(body: Any, limit: int) -> list[Any]:
    if isinstance(body, dict) and "events" in body:
        if len(body) != 1:
            extra = sorted(k for k in body if k != "events")
            raise InvalidBody(f"a batch holds only 'events'; unexpected {extra}", field="body")
        events = body["events"]
        if not isinstance(events, list):
            raise InvalidBody("'events' must be a list of event objects", field="events")
        if len(events) > limit:
            raise PayloadTooLarge(
                f"{len(events)} events in one request; at most {limit} (send several batches)",
                field="events", limit=limit,
            )  # fmt: skip
        return events
    if isinstance(body, dict):
        return [body]
    raise InvalidBody("expected one event object or {\"events\": [...]}", field="body")


@router.post(
    "",
    summary="Ingest one event or a batch",
    openapi_extra={"requestBody": ingest_request_schema()},
)
def post_events(
    raw: Annotated[bytes, Depends(_raw_body)],
    service: ServiceDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    outcomes: Annotated[
        Literal["problems", "all"],
        Query(description="`problems`: only duplicates and rejections; `all`: every event."),
    ] = "problems",
) -> IngestResponse:
    """Validate, deduplicate, append and project events; bad events are reported by index.

    An event whose `event_id` is already in the log is a duplicate (not an error, applied
    once). When this returns, every accepted event is durable in the log and reflected by
    the profiles (read-your-writes).
    """
    payloads = _payloads(_parse(raw), settings.max_batch_events)
    result, offset = service.ingest(payloads)
    metrics.events.labels("accepted").inc(result.accepted)
    metrics.events.labels("duplicate").inc(result.duplicates)
    metrics.events.labels("rejected").inc(result.rejected)
    listed = [
        IngestOutcome(index=o.index, status=o.status, offset=o.offset, event_id=o.event_id,
                      field=o.field, reason=o.reason)
        for o in (result.outcomes if outcomes == "all" else result.problems)
    ]  # fmt: skip
    last = result.last_offset
    return IngestResponse(
        accepted=result.accepted,
        duplicates=result.duplicates,
        rejected=result.rejected,
        offset=offset,
        first_offset=None if last is None else last - result.accepted + 1,
        last_offset=last,
        outcomes=listed,
    )
