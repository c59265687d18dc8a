"""Online writes from stored columns (`OnlineWriter.push_stored`) store what Feast's push does."""

from __future__ import annotations

import sqlite3

import numpy as np
from helpers import shoplogs
from helpers.stored import projected

from offline import feast_online as fo
from offline import feast_store as fs
from online.settings import Settings

EVENTS = shoplogs.make_events(400, seed=5, users=9)


def _stored(tmp_path):
    """Stored rows of every user of a projected log, plus one row of nulls (NaT, NaN, None)."""
    ids, stored = projected(tmp_path / "log", EVENTS)
    return ids, stored, np.arange(len(ids), dtype=np.int64) * 7 + 3


def _tables(settings: Settings) -> dict[str, list]:
    with sqlite3.connect(settings.online_store_path) as con:
        names = [t for (t,) in con.execute("select name from sqlite_master where type='table'")]
        return {t: sorted(con.execute(f'select * from "{t}"').fetchall()) for t in names}


def test_push_stored_writes_the_rows_feasts_push_writes(tmp_path):
    ids, stored, offsets = _stored(tmp_path)
    pushed, direct = Settings(data_dir=tmp_path / "push"), Settings(data_dir=tmp_path / "rows")
    fs.apply(pushed)
    fs.apply(direct)
    old, new = fo.OnlineWriter(pushed), fo.OnlineWriter(direct)
    assert old.push(fo.stored_frame(ids, stored, offsets)).pushed == len(ids)
    assert new.push_stored(ids, stored, offsets).pushed == len(ids)
    tables = _tables(pushed)
    assert sum(len(rows) for rows in tables.values()) > len(ids) * 10
    assert _tables(direct) == tables
    service = new.store.get_feature_service(fs.FEATURE_SERVICE)
    rows = [{"user_id": u} for u in ids]
    assert (new.store.get_online_features(features=service, entity_rows=rows).to_dict()
            == old.store.get_online_features(features=service, entity_rows=rows).to_dict())


def test_push_stored_never_goes_back(tmp_path):
    ids, stored, offsets = _stored(tmp_path)
    settings = Settings(data_dir=tmp_path / "rows")
    fs.apply(settings)
    writer = fo.OnlineWriter(settings)
    assert writer.push_stored(ids, stored, offsets).pushed == len(ids)
    older = writer.push_stored(ids, stored, offsets - 1)
    assert (older.pushed, older.skipped) == (0, len(ids))
    # one user twice in one call: only the newer row counts
    twice = writer.push_stored([ids[0], ids[0]], {k: v[[0, 0]] for k, v in stored.items()},
                               np.array([offsets[0] + 9, offsets[0] + 5]))
    assert (twice.offered, twice.pushed, twice.skipped) == (2, 1, 1)
    assert writer.stored_versions([ids[0]])[ids[0]][0] == offsets[0] + 9


def test_push_stored_through_another_stores_own_write(tmp_path):
    """Redis: the rows go through the store's ``online_write_batch``; reads match sqlite's."""
    from helpers.services import require_redis

    ids, stored, offsets = _stored(tmp_path)
    ids = [f"rows-{tmp_path.name}-{u}" for u in ids]  # this test's own keys
    on_redis = Settings(data_dir=tmp_path / "redis", online_store="redis")
    require_redis(on_redis.redis_url)
    on_sqlite = Settings(data_dir=tmp_path / "sqlite")
    fs.apply(on_redis)
    fs.apply(on_sqlite)
    redis_writer, sqlite_writer = fo.OnlineWriter(on_redis), fo.OnlineWriter(on_sqlite)
    try:
        assert redis_writer.push_stored(ids, stored, offsets).pushed == len(ids)
        sqlite_writer.push_stored(ids, stored, offsets)
        rows = [{"user_id": u} for u in ids]

        def read(writer):
            store = writer.store
            return store.get_online_features(
                features=store.get_feature_service(fs.FEATURE_SERVICE),
                entity_rows=rows).to_dict()

        assert read(redis_writer) == read(sqlite_writer)
        assert read(redis_writer)["offset"] == offsets.tolist()
    finally:
        import redis
        from feast.infra.online_stores.helpers import _redis_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        host, port = on_redis.redis_url.split(":")
        client = redis.Redis(host=host, port=int(port))
        for u in ids:
            client.delete(_redis_key(redis_writer.store.project, EntityKey(
                join_keys=["user_id"], entity_values=[Value(string_val=u)]), 3))
