"""The REST API of portrait: FastAPI app factory, bind check and the consistency report."""

from __future__ import annotations

from .auth import InsecureBind, check_bind
from .consistency import check_consistency
from .main import create_app
from .settings import ApiSettings, get_api_settings

__all__ = [
    "ApiSettings",
    "InsecureBind",
    "check_bind",
    "check_consistency",
    "create_app",
    "get_api_settings",
]
