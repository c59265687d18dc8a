"""Settings of the REST API: access keys, request limits, readiness and profile sampling.

`ApiSettings` extends the lead's `Settings` (same ``PORTRAIT_`` environment prefix, same data
dir), so one object configures the stores and the serving layer alike.

>>> s = ApiSettings(data_dir="/tmp/shop", api_read_keys=["r1"], api_write_keys=["w1"],
...                 api_privacy_keys=["p1"])
>>> s.auth_enabled, sorted(s.scopes_of("w1")), sorted(s.scopes_of("r1")), s.scopes_of("nope")
(True, ['read', 'write'], ['read'], frozenset())
>>> sorted(s.scopes_of("p1"))
['privacy', 'read']
"""

from __future__ import annotations

import hmac
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from online.settings import Settings

__all__ = ["ApiSettings", "get_api_settings"]


class ApiSettings(Settings):
    """The lead's `Settings` plus what the API needs (env ``PORTRAIT_API_*`` and friends)."""

    model_config = SettingsConfigDict(env_prefix="PORTRAIT_", extra="forbid")

    api_read_keys: list[SecretStr] = Field(
        default_factory=list,
        description="API keys allowed to read (JSON list in the environment).",
    )
    api_write_keys: list[SecretStr] = Field(
        default_factory=list,
        description="API keys allowed to read and write (POST, DELETE).",
    )
    api_privacy_keys: list[SecretStr] = Field(
        default_factory=list,
        description="API keys allowed to read and to spend the privacy budget "
                    "(POST /v1/segments); neither read nor write keys may spend it.",
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest request body accepted (bytes)."
    )
    max_batch_events: int = Field(10_000, ge=1, description="Most events in one POST.")
    max_batch_users: int = Field(1_000, ge=1, description="Most users in one profiles:batch.")
    max_asof_events: int = Field(
        1_000_000, ge=1,
        description="Most log events one as-of request (a profile or a batch) recomputes.",
    )
    ready_max_lag_events: int = Field(
        10_000, ge=0, description="/readyz fails when the projector is this many events behind."
    )
    checkpoint_every_events: int = Field(
        100_000, ge=1, description="Checkpoint the projector after this many new events..."
    )
    checkpoint_every_seconds: float = Field(
        60.0, gt=0, description="...or after this many seconds with new events, whichever first."
    )
    online_flush_seconds: float = Field(
        1.0, gt=0, description="Deferred online-store writes are pushed this often."
    )
    metrics_require_key: bool = Field(
        True,
        description="With API keys configured, /metrics needs a read key too (false: scrapers "
        "need none; the figures say how busy the shop is, so only on a private network).",
    )
    profile_sample_path: Path | None = Field(
        None, description="JSONL file that a sample of served profiles is appended to."
    )
    profile_sample_rate: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of served profiles written to the sample log."
    )

    @property
    def auth_enabled(self) -> bool:
        """True when any key is configured: then every /v1 request needs one."""
        return bool(self.api_read_keys or self.api_write_keys or self.api_privacy_keys)

    def scopes_of(self, key: str) -> frozenset[str]:
        """The scopes a presented key grants (empty when it matches no configured key)."""
        # compare_digest on every key: the time taken does not tell which prefix matched
        given = key.encode()

        def matches(keys: list[SecretStr]) -> bool:
            return any([hmac.compare_digest(given, k.get_secret_value().encode())
                        for k in keys])  # a list, not a generator: every key is compared

        scopes: set[str] = set()
        if matches(self.api_write_keys):
            scopes |= {"read", "write"}
        if matches(self.api_privacy_keys):
            scopes |= {"read", "privacy"}
        if matches(self.api_read_keys):
            scopes.add("read")
        return frozenset(scopes)


@lru_cache
def get_api_settings() -> ApiSettings:
    """The process-wide API settings; tests override it (``app.dependency_overrides``)."""
    return ApiSettings()
