"""Dependencies of the routes, as ``Annotated`` aliases (FastAPI's dependency injection).

The small ones are ``async def``: FastAPI runs a sync dependency in the thread pool, one hop
per dependency per request, which costs more than the work they do.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from .auth import require_privacy, require_read, require_write
from .metrics import ApiMetrics
from .service import ProfileService
from .settings import ApiSettings

__all__ = [
    "MetricsDep",
    "PrivacyAccess",
    "ReadAccess",
    "ServiceDep",
    "SettingsDep",
    "WriteAccess",
    "app_settings",
    "get_metrics",
    "get_service",
]


async def get_service(request: Request) -> ProfileService:
    """The app's live service (opened by the lifespan)."""
    return request.app.state.service


async def get_metrics(request: Request) -> ApiMetrics:
    """The app's metrics registry."""
    return request.app.state.metrics


async def app_settings(request: Request) -> ApiSettings:
    """The settings the app was built with (`create_app(settings)`, else `get_api_settings()`)."""
    return request.app.state.settings


ServiceDep = Annotated[ProfileService, Depends(get_service)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
SettingsDep = Annotated[ApiSettings, Depends(app_settings)]
# router-level guards: `APIRouter(dependencies=[ReadAccess])`
ReadAccess = Depends(require_read)
WriteAccess = Depends(require_write)
PrivacyAccess = Depends(require_privacy)
