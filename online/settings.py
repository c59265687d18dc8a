"""Runtime settings of portrait, read from the environment (prefix ``PORTRAIT_``).

Every part (CLI, projector, API) reads its paths and switches from one `Settings` object, so a
data dir named once (``--data-dir`` or ``PORTRAIT_DATA_DIR``) is the data dir everywhere.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where portrait keeps its data and how its parts are wired.

    >>> s = Settings(data_dir="/tmp/shop")
    >>> s.event_log_path.as_posix()
    '/tmp/shop/events.db'
    """

    model_config = SettingsConfigDict(env_prefix="PORTRAIT_", extra="forbid")

    data_dir: Path = Field(Path("data"), description="Root of every store portrait writes.")
    online_store: Literal["sqlite", "redis"] = Field(
        "sqlite", description="Feast online store type: sqlite (embedded) or redis (at scale)."
    )
    redis_url: str = Field("127.0.0.1:6379", description="Redis host:port for the online store.")
    pseudonym_key: SecretStr | None = Field(
        None, description="Secret key for HMAC-SHA256 pseudonyms of user ids."
    )
    pseudonym_key_file: Path | None = Field(None, description="File holding the pseudonym key.")
    privacy_budget_epsilon: float = Field(
        10.0, gt=0, description="Total epsilon the data dir may spend on private aggregates."
    )
    batch_size: int = Field(50_000, ge=1, description="Events per projector batch.")
    propensity_horizon: str = Field(
        "7d", description="Horizon H of the live propensity score: a purchase in (t, t+H] "
        "(7d, 30d, 12h, ...). Changing it rebuilds the models from the log (a new version)."
    )

    @field_validator("propensity_horizon")
    @classmethod
    def _duration(cls, value: str) -> str:
        from online.clock import parse_duration

        parse_duration(value)  # ValueError names the rule; pydantic names the field
        return value.strip().lower()

    @property
    def propensity_horizon_us(self) -> int:
        from online.clock import parse_duration

        return parse_duration(self.propensity_horizon)

    @property
    def event_log_path(self) -> Path:
        return self.data_dir / "events.db"

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "state"

    @property
    def offline_dir(self) -> Path:
        return self.data_dir / "offline"

    @property
    def online_store_path(self) -> Path:
        return self.data_dir / "online.db"

    @property
    def registry_path(self) -> Path:
        return self.data_dir / "registry.db"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests and the CLI override with `get_settings.cache_clear()`."""
    return Settings()
