"""Runtime settings of portrait: environment (prefix ``PORTRAIT_``), then an optional TOML file.

Every part (CLI, projector, API) reads its paths and switches from one `Settings` object, so a
data dir named once (``--data-dir`` or ``PORTRAIT_DATA_DIR``) is the data dir everywhere.

Precedence: explicit arguments (``--data-dir``), then ``PORTRAIT_*`` environment variables, then
the file named by ``PORTRAIT_CONFIG`` (keys are the setting names without the prefix, e.g.
``online_store = "redis"``), then the defaults. The default data dir is ``data/`` at the project
root (beside ``feature_repo/``), whatever the current directory: the same folder Feast's CLI
uses in ``feature_repo/`` when ``PORTRAIT_DATA_DIR`` is unset.
"""

from __future__ import annotations

import os
import re
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_DATA_DIR",
    "Settings",
    "SettingsInvalid",
    "get_settings",
    "load_settings",
]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = PROJECT_ROOT / "data"
CONFIG_ENV = "PORTRAIT_CONFIG"
_ENV_PREFIX = "PORTRAIT_"


class SettingsInvalid(ValueError):
    """A setting has a bad value (or the config file is unusable); the message is one line."""


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise SettingsInvalid(f"{CONFIG_ENV}={path}: no such file") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsInvalid(f"{CONFIG_ENV}={path}: not readable TOML ({exc})") from None


class _ConfigFile(PydanticBaseSettingsSource):
    """Settings from the TOML file named by ``PORTRAIT_CONFIG`` (only this class's fields)."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = os.environ.get(CONFIG_ENV)
        self.path = Path(path) if path else None
        self.data = _read_config_file(self.path) if self.path else {}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        # the API's settings extend these: each class takes its own keys from the shared file
        return {k: v for k, v in self.data.items() if k in self.settings_cls.model_fields}


class Settings(BaseSettings):
    """Where portrait keeps its data and how its parts are wired.

    >>> s = Settings(data_dir="/tmp/shop")
    >>> s.event_log_path.as_posix()
    '/tmp/shop/events.db'
    """

    model_config = SettingsConfigDict(env_prefix="PORTRAIT_", extra="forbid")

    config: Path | None = Field(
        None, description="TOML file of settings (keys without the prefix); env vars win."
    )
    data_dir: Path = Field(
        DEFAULT_DATA_DIR,
        description="Root of every store portrait writes (relative: from the current directory).",
    )
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
    log_partitions: int | None = Field(
        None, ge=1, le=65_536,
        description="Partitions of a new event log (default 16); a log keeps the count it has.",
    )
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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _ConfigFile(settings_cls)

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


S = TypeVar("S", bound=BaseSettings)


def _source_of(name: str) -> str:
    """Where a setting's value came from, as the user would name it."""
    var = _ENV_PREFIX + name.upper()
    if var in os.environ:
        return var
    config = os.environ.get(CONFIG_ENV)
    if config:
        return f"{name} in {config}"
    return var


def _field_rule(cls: type[BaseSettings], name: str) -> str:
    field = cls.model_fields.get(name)
    annotation = str(field.annotation) if field is not None else ""
    if "list" in annotation:
        return 'a JSON list of strings, e.g. ["key-1", "key-2"]'
    return "a valid value"


def describe_error(exc: ValidationError | SettingsError, cls: type[BaseSettings]) -> str:
    """One line naming the setting at fault and the rule it breaks.

    >>> try:
    ...     Settings(online_store="redis2")
    ... except ValidationError as exc:
    ...     print(describe_error(exc, Settings))
    PORTRAIT_ONLINE_STORE='redis2': Input should be 'sqlite' or 'redis'
    """
    if isinstance(exc, ValidationError):
        errors = exc.errors()
        first = errors[0]
        loc = [str(p) for p in first.get("loc", ())]
        name = loc[0] if loc else "?"
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        if first.get("type") == "extra_forbidden":
            return f"{_source_of(name)}: unknown setting{more}"
        value = first.get("input")
        shown = "" if isinstance(value, dict) or "key" in name else f"={value!r}"
        return f"{_source_of(name)}{shown}: {first['msg']}{more}"
    match = re.search(r'field "([a-z_]+)"', str(exc))
    name = match.group(1) if match else "?"
    return f"{_source_of(name)}: must be {_field_rule(cls, name)}"


def load_settings(cls: type[S] = Settings, **overrides: Any) -> S:  # type: ignore[assignment]
    """``cls(**overrides)`` from the environment and config file, or `SettingsInvalid`."""
    try:
        return cls(**overrides)
    except (ValidationError, SettingsError) as exc:
        raise SettingsInvalid(describe_error(exc, cls)) from None


def unknown_config_keys(known: type[BaseSettings]) -> list[str]:
    """Keys of the ``PORTRAIT_CONFIG`` file that no setting of ``known`` has (typos)."""
    path = os.environ.get(CONFIG_ENV)
    if not path:
        return []
    return sorted(set(_read_config_file(Path(path))) - set(known.model_fields))


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests and the CLI override with `get_settings.cache_clear()`."""
    return Settings()
