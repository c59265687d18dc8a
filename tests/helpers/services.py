"""The real services some tests need: a missing one skips locally and fails in CI."""

from __future__ import annotations

import os
import socket

import pytest


def redis_reachable(url: str) -> bool:
    """Whether a server answers at ``host:port`` (the first of a comma-separated list)."""
    host, port = url.split(",")[0].split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def require_redis(url: str = "127.0.0.1:6379") -> None:
    """Skip when no Redis answers at ``url``; fail instead under ``PORTRAIT_REQUIRE_REDIS=1``."""
    if redis_reachable(url):
        return
    if os.environ.get("PORTRAIT_REQUIRE_REDIS") == "1":
        pytest.fail(f"Redis is required (PORTRAIT_REQUIRE_REDIS=1) but not reachable at {url}")
    pytest.skip(f"Redis is not reachable at {url}")
