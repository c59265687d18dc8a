"""Profiles: one user's (latest or as of a past time) and many users' in one call."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from online.clock import parse_time

from ..deps import MetricsDep, ReadAccess, ServiceDep, SettingsDep
from ..errors import BadAsOf, PayloadTooLarge, UnknownUserError
from ..profile_cache import batch_json, profile_json
from ..schemas import (
    FEATURE_LIST_PATTERN,
    TIME_SCHEMA,
    BatchProfilesRequest,
    BatchProfilesResponse,
    Profile,
    problem_responses,
)

router = APIRouter(prefix="/v1", tags=["profiles"], dependencies=[ReadAccess],
                   responses=problem_responses(401, 403, 422))
UserId = Annotated[str, Path(min_length=1, max_length=128, description="The user's id.")]
AsOf = Annotated[
    str | None,
    Query(description="ISO 8601 time with a zone (or a date): the profile as of that time, "
          "recomputed from the log. Latest when absent.",
          examples=["2011-06-01T00:00:00+00:00"], json_schema_extra=TIME_SCHEMA),
]  # fmt: skip
Features = Annotated[
    str | None,
    Query(description="Comma-separated feature names to return (all when absent).",
          examples=["event_count,spend_total"],
          # documented, not enforced here: the service's 422 names the unknown feature
          json_schema_extra={"pattern": FEATURE_LIST_PATTERN}),
]  # fmt: skip


def parse_as_of(text: str | None, field: str = "as_of") -> int | None:
    """``as_of`` (or another time parameter's) text in µs (None when absent), or `BadAsOf`
    naming the parameter and the rule."""
    if text is None:
        return None
    try:
        return parse_time(text)
    except (ValueError, OverflowError) as exc:
        raise BadAsOf(str(exc), field) from None


def parse_features(text: str | None) -> list[str] | None:
    """``a,b`` -> ["a", "b"] (None when absent; blanks ignored)."""
    if text is None:
        return None
    return [name.strip() for name in text.split(",") if name.strip()]


@router.get("/users/{user_id}/profile", response_model=Profile,
            responses=problem_responses(404))
async def get_profile(
    user_id: UserId,
    service: ServiceDep,
    metrics: MetricsDep,
    as_of: AsOf = None,
    features: Features = None,
) -> Response:
    """A user's profile: features, segment, propensity, and the offset and time they reflect.

    Latest profiles come from the projector's state (every field from one log offset, which
    includes every event acknowledged by `POST /v1/events`); `as_of` profiles are recomputed
    from the log by the same kernels, using only events with time <= `as_of`.
    """
    # The body is written here (`profile_json`: the response model's own serialization), so
    # FastAPI neither validates nor serializes it again. A latest profile already serialized
    # at the projector's offset is answered on the event loop; any other work goes to the
    # thread pool (it may wait for the projector's lock or read the log).
    if as_of is None and features is None:
        data = service.cached_profile(user_id)
        if data is None:
            data = await run_in_threadpool(_latest_json, service, user_id)
        metrics.latest_profiles.inc()
        return Response(data, media_type="application/json")
    at_us = parse_as_of(as_of)
    names = parse_features(features)
    body = await run_in_threadpool(service.profile, user_id, as_of_us=at_us, features=names)
    metrics.profiles.labels("latest" if at_us is None else "as_of").inc()
    return Response(profile_json(body), media_type="application/json")


def _latest_json(service, user_id: str) -> bytes:
    _, bodies, missing = service.profiles_json([user_id])
    if not bodies:
        raise UnknownUserError(user_id)
    return bodies[0]


@router.post("/profiles:batch", response_model=BatchProfilesResponse,
             responses=problem_responses(413))
def post_profiles_batch(
    request: BatchProfilesRequest,
    service: ServiceDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> Response:
    """Many users' profiles in one call, all from one log offset; unknown users are listed.

    A read: a key with the read scope suffices although the method is POST (the user list
    does not fit a URL).
    """
    if len(request.user_ids) > settings.max_batch_users:
        raise PayloadTooLarge(
            f"{len(request.user_ids)} users in one request; at most {settings.max_batch_users}",
            field="user_ids", limit=settings.max_batch_users,
        )  # fmt: skip
    at_us = parse_as_of(request.as_of)
    if at_us is None and request.features is None:  # latest: serialized bodies, cached
        offset, profiles, missing = service.profiles_json(request.user_ids)
    else:
        offset, bodies, missing = service.profiles(
            request.user_ids, as_of_us=at_us, features=request.features
        )
        profiles = [profile_json(b) for b in bodies]
    metrics.profiles.labels("latest" if at_us is None else "as_of").inc(len(profiles))
    return Response(batch_json(offset, profiles, missing), media_type="application/json")
