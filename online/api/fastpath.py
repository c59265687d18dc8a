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
- the profile is in the cache of the current offset.

It writes the same status, headers and body as the route. Everything else (a miss, a query
string, a missing or refused key, an unknown user) goes on to the app unchanged, which then
answers as it always does (the route caches what it computes). The request still counts in
``/metrics`` under the route's template (``RequestTimer`` wraps this middleware).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["CachedProfiles"]

_PREFIX, _SUFFIX = "/v1/users/", "/profile"
_MAX_ID = 128


class _Template:
    """Stands for the route in ``scope["route"]``: only its ``path`` (template) is read."""

    path = "/v1/users/{user_id}/profile"


_ROUTE = _Template()
_HEADERS = [(b"content-type", b"application/json")]


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
    """Answer cached latest-profile lookups; pass every other request to ``app``."""

    def __init__(self, app: ASGIApp, service: Callable[[], Any]) -> None:
        self.app = app
        self._service = service  # the live ProfileService (None before the lifespan opens it)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope["query_string"]:
            path: str = scope["path"]
            if (path.startswith(_PREFIX) and path.endswith(_SUFFIX)
                    and not scope.get("root_path")):
                user_id = path[len(_PREFIX):-len(_SUFFIX)]
                service = self._service()
                if (service is not None and 0 < len(user_id) <= _MAX_ID and "/" not in user_id
                        and read_allowed(service.settings, scope["headers"])):
                    data = service.cached_profile(user_id)
                    if data is not None:
                        scope["route"] = _ROUTE  # what RequestTimer labels it by
                        service.metrics.latest_profiles.inc()
                        await send({"type": "http.response.start", "status": 200,
                                    "headers": [(b"content-length", str(len(data)).encode()),
                                                *_HEADERS]})
                        await send({"type": "http.response.body", "body": data})
                        return
        await self.app(scope, receive, send)
