"""API keys with read and write scopes, and the loopback-only rule for an open server.

A key comes in ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``. Write keys can
read too. Spending the privacy budget (a new private release) is its own scope,
``privacy``, held only by privacy keys (which can read too): a read or write key cannot.
With no key configured the API is open, which is safe only on loopback: `check_bind`
refuses any other address, and `portrait serve` calls it before binding.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from .errors import Forbidden, Unauthorized
from .settings import ApiSettings

__all__ = ["InsecureBind", "check_bind", "require_metrics_read", "require_privacy",
           "require_read", "require_write"]

# auto_error=False: a missing key is our decision (auth may be off), and our problem body
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKey")
_bearer = HTTPBearer(auto_error=False, scheme_name="Bearer")


class InsecureBind(ValueError):
    """Serving without API keys on a non-loopback address."""

    def __init__(self, host: str) -> None:
        super().__init__(
            f"refusing to serve on {host!r} without API keys: set PORTRAIT_API_WRITE_KEYS / "
            "PORTRAIT_API_READ_KEYS (JSON lists) or bind to 127.0.0.1"
        )


def is_loopback(host: str) -> bool:
    """True for loopback addresses and ``localhost``.

    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("localhost")
    (True, True, True)
    >>> is_loopback("0.0.0.0"), is_loopback("192.168.1.5"), is_loopback("example.com")
    (False, False, False)
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def check_bind(host: str, settings: ApiSettings) -> None:
    """Raise `InsecureBind` unless ``host`` is loopback or API keys are configured.

    >>> check_bind("127.0.0.1", ApiSettings())
    >>> check_bind("0.0.0.0", ApiSettings(api_write_keys=["k"]))
    >>> check_bind("0.0.0.0", ApiSettings())
    Traceback (most recent call last):
    ...
    online.api.auth.InsecureBind: refusing to serve on '0.0.0.0' without API keys: ...
    """
    if not settings.auth_enabled and not is_loopback(host):
        raise InsecureBind(host)


async def _settings(request: Request) -> ApiSettings:
    return request.app.state.settings


async def _scopes(
    settings: Annotated[ApiSettings, Depends(_settings)],
    api_key: Annotated[str | None, Depends(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> frozenset[str]:
    if not settings.auth_enabled:
        return frozenset({"read", "write", "privacy"})
    key = api_key or (bearer.credentials if bearer is not None else None)
    if not key:
        raise Unauthorized("send an API key in X-API-Key or Authorization: Bearer")
    scopes = settings.scopes_of(key)
    if not scopes:
        raise Unauthorized("the API key is not valid")
    return scopes


async def require_read(scopes: Annotated[frozenset[str], Depends(_scopes)]) -> None:
    """Dependency: the request carries a key with the read scope (or auth is off)."""
    if "read" not in scopes:
        raise Forbidden("this API key lacks the read scope")


async def require_write(scopes: Annotated[frozenset[str], Depends(_scopes)]) -> None:
    """Dependency: the request carries a key with the write scope (or auth is off)."""
    if "write" not in scopes:
        raise Forbidden("this API key lacks the write scope", field=None)


async def require_metrics_read(
    settings: Annotated[ApiSettings, Depends(_settings)],
    api_key: Annotated[str | None, Depends(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Dependency of /metrics: a read key unless ``metrics_require_key`` is off (or auth is)."""
    if settings.metrics_require_key:
        await require_read(await _scopes(settings, api_key, bearer))


async def require_privacy(scopes: Annotated[frozenset[str], Depends(_scopes)]) -> None:
    """Dependency: the key may spend the privacy budget (``PORTRAIT_API_PRIVACY_KEYS``)."""
    if "privacy" not in scopes:
        raise Forbidden("this API key lacks the privacy scope (spending the privacy budget "
                        "needs a key from PORTRAIT_API_PRIVACY_KEYS)", field=None)
