"""The API's routers, one per resource."""

from __future__ import annotations

__all__ = ["events", "features", "health", "profiles", "segments", "users"]
