"""Feast wiring: the feature store of a data dir, materialize, point-in-time reads.

``feature_repo/`` holds the declarations; this module points them at a data dir (the
``PORTRAIT_DATA_DIR`` they read, made absolute), picks the online store from the settings
(sqlite file, or Redis at ``Settings.redis_url``), and works through Feast's own APIs:
``feast apply``, ``materialize_incremental`` for the replay's rows, and
``get_historical_features``.  The projector's online writes, and erasure from the online
store, are in ``offline.feast_online``.  ``import feast`` (3-8 s) happens on first use,
never at import of this module.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from offline.backfill.rows import schema as snapshot_schema
from online import catalogue as cat
from online.durable import replace_file
from online.extras import require
from online.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

FEATURE_REPO = Path(__file__).resolve().parents[1] / "feature_repo"
DEFINITIONS = FEATURE_REPO / "user_profile.py"
PUSH_SOURCE = "user_profile_push"
FEATURE_SERVICE = "user_profile"
VERSION_VIEW = "snapshot"  # the view holding each online row's log offset
_ENV = "PORTRAIT_DATA_DIR"
_env_lock = threading.Lock()


@contextmanager
def _data_dir_env(settings: Settings) -> Iterator[Path]:
    """PORTRAIT_DATA_DIR set to the settings' data dir (absolute) while Feast reads config."""
    data_dir = Path(settings.data_dir).resolve()
    with _env_lock:
        before = os.environ.get(_ENV)
        os.environ[_ENV] = str(data_dir)
        try:
            yield data_dir
        finally:
            if before is None:
                os.environ.pop(_ENV, None)
            else:
                os.environ[_ENV] = before


def repo_config(settings: Settings, engine: str = "local", *, ray_address: str | None = None,
                workers: int | None = None) -> RepoConfig:
    """Feast's RepoConfig for the data dir: feature_store.yaml, online store per settings.

    ``engine="ray"`` sets Feast's Ray compute engine as the batch engine (``batch_engine:
    {type: ray.engine}``) for materialize: it reads the FileSource through the duckdb offline
    store on the driver, then deduplicates and writes to the online store in Ray tasks
    (one writer for sqlite, which takes one writer at a time; ``workers`` for Redis).
    """
    import yaml
    from feast.repo_config import RepoConfig

    with _data_dir_env(settings):
        raw = yaml.safe_load(os.path.expandvars((FEATURE_REPO / "feature_store.yaml").read_text()))
    if settings.online_store == "redis":
        require("redis", extra="redis", purpose="the Redis online store (PORTRAIT_ONLINE_STORE)")
        # Feast's Redis store with a column-wise write (offline/feast_redis.py: same keys and
        # hashes); versions are compared by `OnlineWriter` before a write, hence skip_dedup
        raw["online_store"] = {"type": "offline.feast_redis.RedisOnlineStore",
                               "connection_string": settings.redis_url, "skip_dedup": True}
    if engine == "ray":
        raw["batch_engine"] = {
            "type": "ray.engine", "ray_address": ray_address, "max_workers": workers,
            "write_concurrency": 1 if settings.online_store == "sqlite" else (workers or 2),
            "ray_conf": {"num_cpus": workers, "include_dashboard": False} if workers else None,
        }
    elif engine != "local":
        raise ValueError(f"engine: expected 'local' or 'ray', got {engine!r}")
    config = RepoConfig(**raw)
    config.repo_path = FEATURE_REPO
    return config


def definitions(settings: Settings) -> dict[str, Any]:
    """The Feast objects of ``feature_repo/user_profile.py``, loaded for this data dir."""
    import importlib.util

    with _data_dir_env(settings):
        spec = importlib.util.spec_from_file_location("portrait_feature_repo", DEFINITIONS)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return vars(module)


def feature_store(settings: Settings, engine: str = "local", **engine_options: Any,
                  ) -> FeatureStore:
    """A FeatureStore for the data dir (the registry must exist: see `apply`)."""
    from feast import FeatureStore

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(FEATURE_REPO),
                        config=repo_config(settings, engine, **engine_options))


def apply(settings: Settings, engine: str = "local", **engine_options: Any) -> FeatureStore:
    """``feast apply`` for the data dir: registers entity, sources, views and the service."""
    from feast import Entity, FeatureService, FeatureView, OnDemandFeatureView
    from feast.data_source import DataSource

    objs = definitions(settings)
    store = feature_store(settings, engine, **engine_options)
    kinds = (Entity, DataSource, FeatureView, OnDemandFeatureView, FeatureService)
    with warnings.catch_warnings():
        # Feast flags on-demand views as experimental at every apply; the one we declare
        # (served values, `online.served`) is tested against the API, so the notice is noise
        warnings.filterwarnings("ignore", message="On demand feature view is an experimental",
                                category=RuntimeWarning)
        store.apply([o for o in objs.values() if isinstance(o, kinds)])
    return store


class SnapshotBehindLog(RuntimeError):
    """Materializing a snapshot that misses log events could regress online rows."""

    def __init__(self, replayed_end: int, log_end: int) -> None:
        self.replayed_end, self.log_end = replayed_end, log_end
        super().__init__(
            f"the offline snapshot reflects log offsets < {replayed_end} but the log reaches "
            f"{log_end}: run `portrait replay` first (materializing it could overwrite newer "
            f"online rows with older ones), or pass force")


def materialize(settings: Settings, end: datetime | None = None, *, force: bool = False,
                full: bool = False, engine: str = "local", ray_address: str | None = None,
                workers: int | None = None) -> dict[str, Any]:
    """``feast apply`` + ``feast materialize-incremental`` up to ``end`` (default now, UTC).

    Refuses (`SnapshotBehindLog`) when the replay has not caught up with the log, unless
    ``force``: Feast's materialize writes without our newer-than check.  Incremental runs
    start where the previous one ended; ``full`` reloads everything (after a backfill that
    rewrote old rows, e.g. a new feature).  Feast keeps where the last run ended in the
    registry, not per online store, so a run into a store other than the last one
    materialized (``PORTRAIT_ONLINE_STORE`` switched, another Redis, a deleted online.db) is
    full as well: `online_target` is recorded after each run and compared.
    ``engine="ray"``: Feast's Ray compute engine does the work (see ``repo_config``); the
    online rows are the same.
    """
    from offline.backfill.replay import replayed_end
    from online.eventlog import EventLog

    replayed = replayed_end(settings)
    log_end = 0
    if settings.event_log_path.exists():
        with EventLog(settings.event_log_path) as log:
            log_end = log.next_offset
    if replayed < log_end and not force:
        raise SnapshotBehindLog(replayed, log_end)
    end = end or datetime.now(UTC)
    options = {"ray_address": ray_address, "workers": workers} if engine == "ray" else {}
    store = apply(settings, engine, **options)
    target, last = online_target(settings, store.project), _last_target(settings)
    reason = "asked" if full else None
    if reason is None and last != target:
        reason = ("first run recorded for this online store" if last is None
                  else f"the online store changed since the last run (was {last['store']})")
    if replayed > 0 and reason is not None:
        store.materialize(start_date=datetime(1970, 1, 1, tzinfo=UTC), end_date=end)
    elif replayed > 0:
        store.materialize_incremental(end_date=end)
    if replayed > 0:
        _record_target(settings, target)
    return {"project": store.project, "end": end.isoformat(), "replayed_end": replayed,
            "log_end": log_end, "online_store": settings.online_store,
            "full": replayed > 0 and reason is not None, "full_reason": reason,
            "engine": engine,
            "feature_views": sorted(v.name for v in store.list_feature_views())}


def online_target(settings: Settings, project: str) -> dict[str, str]:
    """What identifies the online store materialized into: its type and where it is."""
    if settings.online_store == "redis":
        return {"store": "redis", "at": settings.redis_url, "project": project}
    path = Path(settings.online_store_path).resolve()
    # a new or deleted-and-recreated file is another store: its inode and creation say so
    stat = path.stat() if path.exists() else None
    ident = f"{stat.st_dev}:{stat.st_ino}" if stat is not None else "absent"
    return {"store": "sqlite", "at": str(path), "file": ident, "project": project}


def _target_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / "online_materialized.json"


def _last_target(settings: Settings) -> dict[str, str] | None:
    try:
        return json.loads(_target_path(settings).read_text("utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def _record_target(settings: Settings, project_target: dict[str, str]) -> None:
    target = dict(project_target)
    if target["store"] == "sqlite":  # the file exists now: record the one just written
        target = online_target(settings, target["project"])
    path = _target_path(settings)
    replace_file(path, json.dumps(target).encode("utf-8"))


def historical_stored(settings: Settings, user_ids: np.ndarray, t_us: np.ndarray,
                      columns: Sequence[str]) -> pa.Table:
    """Stored ``columns`` as of each (user, T) through Feast's ``get_historical_features``.

    One row per query in query order (null where the user has no row at T), typed like the
    snapshot (µs UTC timestamps, plain strings).
    """
    if not settings.registry_path.exists():
        apply(settings)
    store = feature_store(settings)
    refs = [f"{VERSION_VIEW if c == 'offset' else cat.feature(c).view}:{c}" for c in columns]
    entity_df = pd.DataFrame({"user_id": np.asarray(user_ids, dtype=object),
                              "event_timestamp": utc_times(t_us),
                              "query_row": np.arange(len(t_us), dtype=np.int64)})
    table = store.get_historical_features(entity_df=entity_df, features=refs).to_arrow()
    table = table.take(pa.compute.sort_indices(table.column("query_row")))
    schema = snapshot_schema()
    return pa.table({c: table.column(c).cast(schema.field(c).type) for c in columns})


def utc_times(us: np.ndarray) -> pd.DatetimeIndex:
    """µs since the epoch as UTC timestamps (``NO_TS`` becomes NaT)."""
    # NO_TS is numpy's NaT bit pattern, so nulls survive the view
    return pd.DatetimeIndex(np.asarray(us, np.int64).view("datetime64[us]")).tz_localize(UTC)
