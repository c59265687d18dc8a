"""The REST API of portrait: FastAPI app factory, bind check and the consistency report."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ApiSettings",
    "InsecureBind",
    "check_bind",
    "check_consistency",
    "create_app",
    "get_api_settings",
]

# Names resolve on first use (PEP 562), so `import online.api.settings` (the CLI validates
# settings at start) does not pull in the app, its projector and numba.
_HOME = {
    "ApiSettings": "settings",
    "get_api_settings": "settings",
    "InsecureBind": "auth",
    "check_bind": "auth",
    "check_consistency": "consistency",
    "create_app": "main",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
