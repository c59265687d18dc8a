"""Feast's online store: the projector's writes into it, the stored versions, erasure.

`OnlineWriter` pushes the projector's rows to the online store: `push_stored` builds them
from the stored columns and hands them to the store's own ``online_write_batch``
(`offline.feast_rows`), `push` takes a frame through ``FeatureStore.push``.  Online writes
never go back in time: Feast's sqlite store upserts unconditionally and its Redis store
drops a write whose event time equals the stored one (which would lose a late event's
update), so the writer reads each user's stored ``(offset, event_timestamp)`` version from
the ``snapshot`` view first and pushes only strictly newer rows (Redis runs with
``skip_dedup`` so this is the one rule).  It assumes one writer at a time (the projector).

`erase_user_sqlite` and `erase_user_redis` remove one user's rows (every feature view) from
the store of each kind; ``offline.privacy.erasure`` calls them.  ``import feast`` happens on
first use, never at import of this module.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from offline.feast_store import PUSH_SOURCE, VERSION_VIEW, feature_store, repo_config, utc_times
from online import catalogue as cat
from online.projector import ProfileContributor
from online.settings import Settings
from online.state import last_per_user

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey

__all__ = ["OnlineWriter", "PushResult", "erase_user_redis", "erase_user_sqlite",
           "stored_frame"]


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
        "event_timestamp": utc_times(ts),
        "created": utc_times(offsets),
        "offset": offsets,
    }
    for f in cat.stored_features():
        values = stored[f.name]
        cols[f.name] = utc_times(np.asarray(values, np.int64)) if f.dtype == "timestamp" else values
    return pd.DataFrame(cols)


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
        users, last = last_per_user(np.asarray(user_idx, np.int64))
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
        if not len(user_ids):
            return {}
        store = self.store
        view = store.get_feature_view(VERSION_VIEW)
        keys = [_entity_key(u) for u in user_ids]
        rows = store.provider.online_read(config=store.config, table=view, entity_keys=keys,
                                          requested_features=["offset"])
        out = {}
        for u, (ts, values) in zip(user_ids, rows, strict=True):
            # a missing row: (None, None) from sqlite, (epoch, empty values) from Redis
            if ts is not None and values and values["offset"].WhichOneof("val") == "int64_val":
                when = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
                out[u] = (int(values["offset"].int64_val), _us_of(when))
        return out


def _us(ts: pd.Series) -> np.ndarray:
    return ts.dt.tz_convert(UTC).dt.tz_localize(None).to_numpy("datetime64[us]").view(np.int64)


def _us_of(when: datetime) -> int:
    from online.clock import to_us

    return to_us(when)


# -- erasure ---------------------------------------------------------------------------------


def _entity_key(stored_id: str) -> EntityKey:
    key, value = _key_protos()
    return key(join_keys=["user_id"], entity_values=[value(string_val=stored_id)])


@functools.cache
def _key_protos() -> tuple[type, type]:
    """Feast's EntityKey and Value protos (imported once: a flush makes a key per user)."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return EntityKey, Value


def erase_user_sqlite(settings: Settings, stored_id: str) -> dict[str, int]:
    """Delete the user's rows from Feast's sqlite online store (every feature view's table).

    Rows are matched by Feast's serialized entity key, which is how its sqlite store keys
    them; deleted cells are zeroed (``secure_delete``), not only unlinked.
    """
    from feast.infra.key_encoding_utils import serialize_entity_key

    path = Path(settings.online_store_path)
    if not path.exists():
        return {"rows": 0}
    version = repo_config(settings).entity_key_serialization_version
    key = serialize_entity_key(_entity_key(stored_id), entity_key_serialization_version=version)
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA secure_delete=ON")
        rows = 0
        with conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master "
                                                 "WHERE type = 'table'")]
            for table in tables:
                columns = {r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')}
                if "entity_key" in columns:
                    rows += conn.execute(f'DELETE FROM "{table}" WHERE entity_key = ?',
                                         (key,)).rowcount
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # a no-op unless in WAL mode
    finally:
        conn.close()
    return {"rows": rows}


def erase_user_redis(settings: Settings, stored_id: str) -> dict[str, Any]:
    """Delete the user's Redis key (Feast keeps one hash per entity, all views in it)."""
    if settings.online_store != "redis":
        return {"keys": 0, "skipped": "the online store is not redis"}
    client, key = _redis_client_and_key(settings, stored_id)
    return {"keys": int(client.delete(key))}


def _redis_client_and_key(settings: Settings, stored_id: str) -> tuple[Any, bytes]:
    """Feast's Redis client for the data dir and the key of one entity's hash.

    Feast-private on purpose, and only here: Feast offers no public call that deletes one
    entity (``delete_entity_values`` scans and deletes every entity of the join keys), so
    we take the client and key function its Redis store itself writes with; a Feast that
    keys rows otherwise fails the erasure tests instead of leaving the user's hash behind.
    """
    from feast.infra.online_stores.helpers import _redis_key
    from feast.infra.online_stores.redis import RedisOnlineStore

    config = repo_config(settings)
    client = RedisOnlineStore()._get_client(config.online_store)
    key = _redis_key(config.project, _entity_key(stored_id),
                     config.entity_key_serialization_version)
    return client, key
