"""Feast wiring: the feature store of a data dir, online writes from the projector, materialize.

``feature_repo/`` holds the declarations; this module points them at a data dir (the
``PORTRAIT_DATA_DIR`` they read, made absolute), picks the online store from the settings
(sqlite file, or Redis at ``Settings.redis_url``), and writes through Feast's own APIs:
``FeatureStore.push`` for the projector's rows, ``materialize_incremental`` for the replay's.

Online writes never go back in time: Feast's sqlite store upserts unconditionally and its
Redis store drops a write whose event time equals the stored one (which would lose a late
event's update), so `OnlineWriter` reads each user's stored ``(offset, event_timestamp)``
version from the ``snapshot`` view first and pushes only strictly newer rows (Redis runs
with ``skip_dedup`` so this is the one rule).  It assumes one writer at a time (the
projector).  ``import feast`` (3-8 s) happens on first use, never at import of this module.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from offline.backfill.rows import schema as snapshot_schema
from online import catalogue as cat
from online.extras import require
from online.projector import ProfileContributor
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
        raw["online_store"] = {"type": "redis", "connection_string": settings.redis_url,
                               "skip_dedup": True}
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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(target), "utf-8")
    os.replace(tmp, path)


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
                              "event_timestamp": _utc(t_us),
                              "query_row": np.arange(len(t_us), dtype=np.int64)})
    table = store.get_historical_features(entity_df=entity_df, features=refs).to_arrow()
    table = table.take(pa.compute.sort_indices(table.column("query_row")))
    schema = snapshot_schema()
    return pa.table({c: table.column(c).cast(schema.field(c).type) for c in columns})


# -- online writes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PushResult:
    """One push: rows offered, rows written, rows skipped as not newer than the stored ones."""

    offered: int
    pushed: int
    skipped: int


def stored_frame(user_ids: Sequence[str], stored: Mapping[str, np.ndarray],
                 offsets: np.ndarray, event_ts_us: np.ndarray | None = None) -> pd.DataFrame:
    """The push/parquet row layout from stored values (``kernels.stored_values`` form)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    ts = np.asarray(stored["last_event_ts"] if event_ts_us is None else event_ts_us, np.int64)
    cols: dict[str, Any] = {
        "user_id": np.asarray(user_ids, dtype=object),
        "event_timestamp": _utc(ts),
        "created": _utc(offsets),
        "offset": offsets,
    }
    for f in cat.stored_features():
        values = stored[f.name]
        cols[f.name] = _utc(np.asarray(values, np.int64)) if f.dtype == "timestamp" else values
    return pd.DataFrame(cols)


def _utc(us: np.ndarray) -> pd.DatetimeIndex:
    # NO_TS is numpy's NaT bit pattern, so nulls survive the view
    return pd.DatetimeIndex(np.asarray(us, np.int64).view("datetime64[us]")).tz_localize(UTC)


class OnlineWriter(ProfileContributor):
    """Pushes each projector batch's updated users (newest row each) to the online store.

    Wire it as a projector contributor (``Projector(..., contributors=[OnlineWriter(s)])``);
    ``push`` / ``push_state`` can also be called directly.  The store must be applied.
    """

    name = "online_store"

    def __init__(self, settings: Settings, *, store: FeatureStore | None = None) -> None:
        self.settings = settings
        self._store = store
        self._views: list | None = None  # the views the push source feeds

    @property
    def store(self) -> FeatureStore:
        if self._store is None:
            self._store = feature_store(self.settings)
        return self._store

    def on_batch(self, projector, batch, user_idx: np.ndarray, eff_ts: np.ndarray) -> None:
        users, last = _last_per_user(np.asarray(user_idx, np.int64))
        self.push_state(projector.state, users, np.asarray(batch.offset)[last] + 1)

    def contribute(self, body: dict[str, Any], features) -> None:
        """Nothing: the writer adds no profile keys."""

    def push_state(self, state, user_idx: np.ndarray, offsets: np.ndarray) -> PushResult:
        """Push the stored rows of ``user_idx`` (state rows) reflecting offsets < ``offsets``."""
        from online import kernels

        user_idx = np.asarray(user_idx, np.int64)
        stored = kernels.stored_values(state, user_idx)
        ids = [state.users.values[u] for u in user_idx]
        return self.push_stored(ids, stored, offsets)

    def push_stored(self, user_ids: Sequence[str], stored: Mapping[str, np.ndarray],
                    offsets: np.ndarray) -> PushResult:
        """`push` of stored values (``kernels.stored_values`` form), without a frame: the
        rows go to the online store's write in one batch (`offline.feast_rows`)."""
        from offline.feast_rows import no_gc_pauses, push_views, take, view_rows, write_rows

        offsets = np.asarray(offsets, np.int64)
        ts = np.asarray(stored["last_event_ts"], np.int64)
        newest: dict[str, int] = {}  # user -> position of the newest row (offset, then time)
        for i in np.lexsort((ts, offsets)).tolist():
            newest[user_ids[i]] = i
        held, second = self.stored_versions(list(newest)), cat.SECOND_US
        keep = [i for u, i in newest.items()
                if (int(offsets[i]), int(ts[i]) // second)
                > (lambda h: (h[0], h[1] // second))(held.get(u, (-1, -1)))]
        if keep:
            at = np.asarray(sorted(keep), np.int64)
            columns = {n: take(v, at) for n, v in stored.items()}
            if self._views is None:
                self._views = push_views(self.store, PUSH_SOURCE)
            with no_gc_pauses():
                write_rows(self.store, view_rows(self._views, [user_ids[i] for i in at],
                                                 columns, offsets[at], ts[at]))
        return PushResult(len(user_ids), len(keep), len(user_ids) - len(keep))

    def push(self, frame: pd.DataFrame) -> PushResult:
        """Push rows (``stored_frame`` layout), newest per user, skipping not-newer ones."""
        from feast.data_source import PushMode

        offered = len(frame)
        frame = frame.sort_values(["offset", "event_timestamp"], kind="stable")
        frame = frame.drop_duplicates("user_id", keep="last")
        held = self.stored_versions(frame["user_id"].tolist())
        # offsets order states; equal offsets differ only in the time windows were evaluated
        # at, compared in whole seconds (the precision Feast's sqlite store keeps)
        second = cat.SECOND_US
        newer = [(o, t // second) > (lambda h: (h[0], h[1] // second))(held.get(u, (-1, -1)))
                 for u, o, t in zip(frame["user_id"], frame["offset"],
                                    _us(frame["event_timestamp"]), strict=True)]
        frame = frame[np.asarray(newer, dtype=bool)]
        if len(frame):
            self.store.push(PUSH_SOURCE, frame, to=PushMode.ONLINE)
        return PushResult(offered, len(frame), offered - len(frame))

    def stored_versions(self, user_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """``(offset, event_timestamp µs)`` of each user's online row (absent: no row).

        The sqlite store keeps event times in whole seconds, so these are too.
        """
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        if not len(user_ids):
            return {}
        store = self.store
        view = store.get_feature_view(VERSION_VIEW)
        keys = [EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=u)])
                for u in user_ids]
        rows = store._get_provider().online_read(config=store.config, table=view,
                                                  entity_keys=keys, requested_features=["offset"])
        out = {}
        for u, (ts, values) in zip(user_ids, rows, strict=True):
            # a missing row: (None, None) from sqlite, (epoch, empty values) from Redis
            if ts is not None and values and values["offset"].WhichOneof("val") == "int64_val":
                when = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
                out[u] = (int(values["offset"].int64_val), _us_of(when))
        return out


def _last_per_user(user_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct users of a batch and the position of each one's last event."""
    users, first_from_end = np.unique(user_idx[::-1], return_index=True)
    return users, len(user_idx) - 1 - first_from_end


def _us(ts: pd.Series) -> np.ndarray:
    return ts.dt.tz_convert(UTC).dt.tz_localize(None).to_numpy("datetime64[us]").view(np.int64)


def _us_of(when: datetime) -> int:
    from online.clock import to_us

    return to_us(when)
