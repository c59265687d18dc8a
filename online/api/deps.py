"""Dependencies of the routes, as ``Annotated`` aliases (FastAPI's dependency injection)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from .auth import require_read, require_write
from .metrics import ApiMetrics
from .service import ProfileService
from .settings import ApiSettings, get_api_settings

__all__ = [
    "MetricsDep",
    "ReadAccess",
    "ServiceDep",
    "SettingsDep",
    "WriteAccess",
    "get_metrics",
    "get_service",
]


def get_service(request: Request) -> ProfileService:
    """The app's live service (opened by the lifespan)."""
    return request.app.state.service


def get_metrics(request: Request) -> ApiMetrics:
    """The app's metrics registry."""
    return request.app.state.metrics


ServiceDep = Annotated[ProfileService, Depends(get_service)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
SettingsDep = Annotated[ApiSettings, Depends(get_api_settings)]
# router-level guards: `APIRouter(dependencies=[ReadAccess])`
ReadAccess = Depends(require_read)
WriteAccess = Depends(require_write)
