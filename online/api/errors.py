"""Problem details (RFC 9457): the one error body of the API, and the domain-error mapping.

Routes and services raise domain errors (`UnknownUser`, `InvalidEvent`, ...) or the `ApiError`
subclasses below; only the handlers here turn them into HTTP responses, so every error a client
sees has the same shape: ``{"type", "title", "status", "detail", "field"?}`` with the media type
``application/problem+json``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from online.extras import MissingExtra

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "ApiError",
    "BadAsOf",
    "Forbidden",
    "NotReady",
    "PayloadTooLarge",
    "Unauthorized",
    "UnknownFeature",
    "UnsupportedMediaType",
    "UnknownUserError",
    "install_error_handlers",
    "problem_response",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"
_log = logging.getLogger("portrait.api")


class ApiError(Exception):
    """An error with an HTTP meaning; subclasses fix the status, slug and title."""

    status: int = 400
    slug: str = "bad-request"
    title: str = "Bad request"

    def __init__(self, detail: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.extra = extra
        self.headers: dict[str, str] | None = None


class UnknownUserError(ApiError):
    status, slug, title = 404, "unknown-user", "Unknown user"

    def __init__(self, user_id: str) -> None:
        super().__init__(f"no events for user {user_id!r} in the log", field="user_id")


class AsOfWorkLimit(ApiError):
    """An as-of request would recompute more events than ``max_asof_events`` allows."""

    status, slug, title = 422, "as-of-work-limit", "Too much as-of work in one request"

    def __init__(self, exc: Exception) -> None:
        limit = getattr(exc, "limit", None)
        super().__init__(f"{exc} (PORTRAIT_MAX_ASOF_EVENTS)", field="user_ids", limit=limit)


class UnknownFeature(ApiError):
    status, slug, title = 422, "unknown-feature", "Unknown feature"

    def __init__(self, names: list[str]) -> None:
        listed = ", ".join(repr(n) for n in names)
        super().__init__(f"unknown feature(s) {listed}; see GET /v1/features", field="features",
                         unknown=names)


class BadAsOf(ApiError):
    status, slug, title = 422, "bad-as-of", "Invalid as_of"

    def __init__(self, reason: str, field: str = "as_of") -> None:
        super().__init__(f"{field}: {reason}", field=field)
        if field != "as_of":  # the same time rules, another parameter (e.g. ``before``)
            self.slug, self.title = "bad-time", f"Invalid {field}"


class PayloadTooLarge(ApiError):
    status, slug, title = 413, "payload-too-large", "Payload too large"


class UnsupportedMediaType(ApiError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"

    def __init__(self, got: str | None, expected: str = "application/json") -> None:
        super().__init__(f"send the body as {expected}; got Content-Type {got or '(none)'}",
                         field="content-type", expected=expected)


class Unauthorized(ApiError):
    status, slug, title = 401, "unauthorized", "API key required"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.headers = {"WWW-Authenticate": 'Bearer realm="portrait"'}


class Forbidden(ApiError):
    status, slug, title = 403, "forbidden", "Insufficient scope"


class NotReady(ApiError):
    status, slug, title = 503, "not-ready", "Not ready"


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    slug: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A problem-details response."""
    body: dict[str, Any] = {
        "type": f"/problems/{slug}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if field is not None:
        body["field"] = field
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _from_api_error(exc: ApiError) -> JSONResponse:
    return problem_response(exc.status, exc.title, exc.detail, slug=exc.slug, field=exc.field,
                            headers=exc.headers, **exc.extra)


_HTTP_TITLES = {
    404: ("Not found", "not-found"),
    405: ("Method not allowed", "method-not-allowed"),
    413: ("Payload too large", "payload-too-large"),
}


def _field_of(loc: Sequence[str | int]) -> str | None:
    # ("query", "limit") -> "limit"; ("body", "user_ids", 3) -> "user_ids[3]"
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    if not parts:
        return None
    out = str(parts[0])
    for p in parts[1:]:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem body."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _from_api_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        field = _field_of(first.get("loc", ()))
        detail = f"{field}: {first['msg']}" if field else str(first["msg"])
        if len(errors) > 1:
            detail += f" (+{len(errors) - 1} more)"
        return problem_response(422, "Invalid request", detail, slug="invalid-request",
                                field=field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title, slug = _HTTP_TITLES.get(exc.status_code, ("HTTP error", f"http-{exc.status_code}"))
        return problem_response(exc.status_code, title, str(exc.detail), slug=slug,
                                headers=getattr(exc, "headers", None))

    @app.exception_handler(MissingExtra)
    async def _missing_extra(request: Request, exc: MissingExtra) -> JSONResponse:
        # this server's install lacks an optional part: the operator's fix, named in the body
        return problem_response(501, "Not installed", str(exc), slug="not-installed")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # the traceback goes to the server log, never to the client
        # the route template: a raw path may hold a user id
        route = getattr(request.scope.get("route"), "path", "<unmatched>")
        _log.exception("unhandled error on %s %s", request.method, route)
        return problem_response(500, "Internal error", "the server failed; see its log",
                                slug="internal")
