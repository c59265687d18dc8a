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

__all__ = ["ApiSettings", "OTHER_VARIABLES", "get_api_settings", "settings_table"]


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
    profile_cache_users: int = Field(
        100_000, ge=0,
        description="Latest profiles kept serialized until the projector moves (0: none).",
    )
    gc_freeze: bool = Field(
        True,
        description="After the server opens, move its startup heap out of the cyclic "
        "collector's scans (gc.freeze): a full collection then pauses lookups for about 1 ms "
        "instead of 100-300 ms.",
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
        1.0, gt=0, description="Deferred online-store writes are pushed this often..."
    )
    online_flush_idle_seconds: float = Field(
        0.05, gt=0, description="...and once ingestion has paused this long (the store "
        "then holds a burst's rows right after it)."
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


# Read outside the settings classes (by the demo, the CLI's data loaders and the test suite).
OTHER_VARIABLES = {
    "PORTRAIT_ONLINE_RETAIL": ("unset", "path of the UCI Online Retail file for `portrait demo` "
                               "and `ingest --format online-retail`"),
    "PORTRAIT_FEDERATED_BUDGET_EPSILON": ("`20.0`", "total epsilon each shop's data dir may spend "
                                          "on `portrait federate --epsilon` runs"),
    "PORTRAIT_REQUIRE_REDIS": ("unset", "tests: `1` turns a missing Redis into a failure (CI)"),
    "PORTRAIT_REQUIRE_BROWSER": ("unset", "tests: `1` turns a missing Chromium or Playwright "
                                 "into a failure (CI)"),
    "PORTRAIT_CHROMIUM": ("`/usr/bin/chromium`", "tests: the Chromium the console tests drive"),
    "PORTRAIT_CONSOLE_SCREENSHOT": ("unset", "tests: save the console test's screenshot here "
                                    "(the README's picture)"),
}  # fmt: skip


def _default_text(field) -> str:
    from online.settings import DEFAULT_DATA_DIR

    if field.default_factory is not None:
        value = field.default_factory()
    else:
        value = field.default
    if value is None:
        return "unset"
    if value == DEFAULT_DATA_DIR:
        return "`data/` at the project root"
    if isinstance(value, list):
        return "none" if not value else f"`{value}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 10_000:
        return f"`{value:_}`"
    return f"`{value}`"


def settings_table() -> str:
    """The README's table of every ``PORTRAIT_*`` setting, built from the settings classes.

    >>> print(settings_table().splitlines()[2])
    | `PORTRAIT_CONFIG` | unset | TOML file of settings (keys without the prefix); env vars win. |
    """
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in ApiSettings.model_fields.items():
        rows.append(f"| `PORTRAIT_{name.upper()}` | {_default_text(field)} | "
                    f"{field.description} |")  # fmt: skip
    for name, (default, meaning) in OTHER_VARIABLES.items():
        rows.append(f"| `{name}` | {default} | {meaning} |")
    return "\n".join(rows)


@lru_cache
def get_api_settings() -> ApiSettings:
    """The process-wide API settings; tests override it (``app.dependency_overrides``).

    A bad value raises `SettingsInvalid` with one line naming the variable and the rule.
    """
    from online.settings import load_settings

    return load_settings(ApiSettings)


if __name__ == "__main__":  # python -m online.api.settings: the README's settings table
    print(settings_table())
