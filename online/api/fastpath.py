"""The hot read answered before routing: a cached latest profile, for a request that may read.

``GET /v1/users/{user_id}/profile`` without a query string is most of a profile server's
traffic, and its answer is usually already serialized at the projector's offset
(`online.api.profile_cache`). Routing it through FastAPI costs several times the lookup
itself (dependency resolution for the key check, the service and the metrics, per request),
so `CachedProfiles`, a pure ASGI middleware, answers exactly those requests when:

- the method is GET, the path is ``/v1/users/<one segment of 1..128 characters>/profile``
  (the route's own path rule) and there is no query string and no root path;
- the request may read: auth is off, or its key (``X-API-Key``, else ``Authorization:
  Bearer``, as `online.api.auth` reads them) has the read scope;
- the profile is in the cache of the current offset, or no projection holds or waits for
  the projector's state: then it is computed here, on the event loop (a few hundred µs,
  what the route would compute in the thread pool) and cached. Every projection empties the
  cache (a latest profile is evaluated at the watermark, the models at the offset), so while
  events stream in most lookups are of this kind. Routed to the thread pool they saturated at
  710 a second (`bench/serve.py`, cache off, 3,000 offered); computed here, 2,304.

It writes the same status, headers and body as the route. Everything else (a miss while a
projection runs, a query string, a missing or refused key, an unknown user) goes on to the
app unchanged, which then answers as it always does (the route caches what it computes). The
request still counts in ``/metrics`` under the route's template (``RequestTimer`` wraps this
middleware).

``POST /v1/profiles:batch`` is answered the same way when its body (``Content-Length`` given,
``Content-Type: application/json``) is a valid `BatchProfilesRequest` without ``as_of`` and
``features``, within ``max_batch_users``, and every user is cached in one map (one offset):
no thread pool hop, no dependency resolution. Otherwise the body read is handed on to the
app as it came, and the route answers (a 422, a 413, a miss computed in the thread pool).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .profile_cache import batch_json
from .rwlock import LockBusy
from .schemas import BatchProfilesRequest

__all__ = ["CachedProfiles"]

_PREFIX, _SUFFIX = "/v1/users/", "/profile"
_BATCH = "/v1/profiles:batch"
_MAX_ID = 128


class _Template:
    """Stands for the route in ``scope["route"]``: only its ``path`` (template) is read."""

    def __init__(self, path: str) -> None:
        self.path = path


_ROUTE = _Template("/v1/users/{user_id}/profile")
_BATCH_ROUTE = _Template(_BATCH)
_HEADERS = [(b"content-type", b"application/json")]


def _json_with_length(headers) -> bool:
    """A ``Content-Type`` of application/json and a ``Content-Length``."""
    kind = length = False
    for name, value in headers:
        if name == b"content-type":
            kind = value.split(b";", 1)[0].strip().lower() == b"application/json"
        elif name == b"content-length":
            length = True
    return kind and length


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the body already read, then defers to ``receive``."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


def read_allowed(settings, headers) -> bool:
    """Whether the raw ASGI ``headers`` carry a key with the read scope (or auth is off)."""
    if not settings.auth_enabled:
        return True
    api_key = authorization = None
    for name, value in headers:
        if name == b"x-api-key" and api_key is None:
            api_key = value.decode("latin-1")
        elif name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
    key = api_key
    if not key and authorization:
        scheme, _, credentials = authorization.partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer" and credentials:
            key = credentials
    return bool(key) and "read" in settings.scopes_of(key)


class CachedProfiles:
    """Answer cached latest-profile lookups (one user or a batch); pass the rest to ``app``."""

    def __init__(self, app: ASGIApp, service: Callable[[], Any]) -> None:
        self.app = app
        self._service = service  # the live ProfileService (None before the lifespan opens it)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == _BATCH
                and not scope["query_string"] and not scope.get("root_path")):
            await self._batch(scope, receive, send)
            return
        if scope["type"] == "http" and scope["method"] == "GET" and not scope["query_string"]:
            path: str = scope["path"]
            if (path.startswith(_PREFIX) and path.endswith(_SUFFIX)
                    and not scope.get("root_path")):
                user_id = path[len(_PREFIX):-len(_SUFFIX)]
                service = self._service()
                if (service is not None and 0 < len(user_id) <= _MAX_ID and "/" not in user_id
                        and read_allowed(service.settings, scope["headers"])):
                    data = service.cached_profile(user_id) or _computed_now(service, user_id)
                    if data is not None:
                        scope["route"] = _ROUTE  # what RequestTimer labels it by
                        service.metrics.latest_profiles.inc()
                        await _answer(send, data)
                        return
        await self.app(scope, receive, send)

    async def _batch(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = self._service()
        if (service is None or not _json_with_length(scope["headers"])
                or not read_allowed(service.settings, scope["headers"])):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []  # BodySizeLimit (outside) has checked the declared length
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        data = _cached_batch(service, body)
        if data is None:
            await self.app(scope, _replay(body, receive), send)
            return
        scope["route"] = _BATCH_ROUTE
        await _answer(send, data)


def _cached_batch(service, body: bytes) -> bytes | None:
    """The batch response body when the request is a latest batch all cached, else None."""
    try:
        request = BatchProfilesRequest.model_validate_json(body)
    except ValidationError:
        return None
    if (request.as_of is not None or request.features is not None
            or len(request.user_ids) > service.settings.max_batch_users):
        return None
    cached = service.cached_batch(request.user_ids)
    if cached is None:
        return None
    offset, profiles = cached
    service.metrics.latest_profiles.inc(len(profiles))
    return batch_json(offset, profiles, [])


def _computed_now(service, user_id: str) -> bytes | None:
    """The latest profile computed and cached here, on the event loop, when no projection
    holds or waits for the state (a few hundred µs: no thread-pool hop, no routing); None
    when one does or the user has no events (the route answers: thread pool, 404)."""
    try:
        _, bodies, _ = service.profiles_json([user_id], wait=False)
    except LockBusy:
        return None
    except Exception:  # the route computes it again and answers the error as the app does
        return None
    return bodies[0] if bodies else None


async def _answer(send: Send, data: bytes) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(data)).encode()), *_HEADERS]})
    await send({"type": "http.response.body", "body": data})
