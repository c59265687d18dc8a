"""Request body size limit, enforced before an oversized body is read into memory.

Pure ASGI middleware: a ``Content-Length`` over the limit is refused at once; a body without
one (chunked) is counted as it streams, and the read that passes the limit raises a 413
``HTTPException``, which the error handlers render as a problem body.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import problem_response

__all__ = ["BodySizeLimit"]


class BodySizeLimit:
    """Answer 413 (problem body) to any request whose body exceeds ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _detail(self) -> str:
        return f"request body exceeds {self.max_bytes} bytes (PORTRAIT_MAX_BODY_BYTES)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    response = problem_response(413, "Payload too large", self._detail(),
                                                slug="payload-too-large")
                    await response(scope, receive, send)
                    return
                break
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # an HTTPException: FastAPI's body parsing re-raises it as it is
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, counting_receive, send)
