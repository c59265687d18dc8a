"""The Redis store's column-wise write (`offline.feast_redis`) stores what Feast's own does."""

from __future__ import annotations

import numpy as np
import pytest
from feast.infra.online_stores import redis as feast_redis
from helpers import shoplogs
from helpers.services import require_redis
from helpers.stored import projected

from offline import feast_online as fo
from offline import feast_redis as plugin
from offline import feast_store as fs
from offline.feast_rows import push_views, view_rows
from online.settings import Settings

EVENTS = shoplogs.make_events(300, seed=9, users=8)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Feast objects of a Redis data dir and the projected rows of every user, one of them
    with every value null or empty; the users' ids are this module's own keys."""
    tmp = tmp_path_factory.mktemp("feast-redis")
    settings = Settings(data_dir=tmp / "redis", online_store="redis")
    require_redis(settings.redis_url)
    store = fs.apply(settings)
    ids, stored = projected(tmp / "log", EVENTS)
    ids = [f"redis-rows-{tmp.name}-{u}" for u in ids]
    offsets = np.arange(len(ids), dtype=np.int64) * 5 + 2
    ts = np.asarray(stored["last_event_ts"], np.int64)
    batches = view_rows(push_views(store, fs.PUSH_SOURCE), ids, stored, offsets, ts)
    client = feast_redis.RedisOnlineStore()._get_client(store.config.online_store)
    keys = [fo._redis_client_and_key(settings, u)[1] for u in ids]
    yield store, batches, client, keys
    client.delete(*keys)


def _written(client, keys) -> dict:
    """Every hash of the keys, field by field in Redis's order, and whether a TTL is set."""
    out = {k: (list(client.hgetall(k).items()), client.ttl(k) > 0) for k in keys}
    client.delete(*keys)
    return out


def _config(store, **online):
    config = store.config.model_copy(deep=True)
    for name, value in online.items():
        setattr(config.online_store, name, value)
    return config


@pytest.mark.parametrize("ttl", [None, 3600])
def test_encoded_rows_are_written_as_feasts_store_writes_them(setup, ttl):
    store, batches, client, keys = setup
    config = _config(store, key_ttl_seconds=ttl)
    assert isinstance(config.online_store, plugin.RedisOnlineStoreConfig)
    feast, ours = feast_redis.RedisOnlineStore(), plugin.RedisOnlineStore()
    for view, rows in batches:  # Feast's loop, on Feast's row tuples
        feast.online_write_batch(config, view, list(rows), None)
    expected = _written(client, keys)
    assert all(len(fields) > 40 for fields, _ in expected.values())  # every view's values
    assert {has_ttl for _, has_ttl in expected.values()} == {ttl is not None}
    counted: list[int] = []
    for view, rows in batches:  # the plugin, on the columns
        ours.online_write_batch(config, view, rows, counted.append)
    assert _written(client, keys) == expected
    # one HSET per row and view (and an EXPIRE with a TTL), as Feast's progress counts them
    assert counted == [len(keys) * (2 if ttl else 1)] * len(batches)


def test_other_rows_go_through_feasts_own_write(setup):
    store, batches, client, keys = setup
    feast, ours = feast_redis.RedisOnlineStore(), plugin.RedisOnlineStore()
    for config in (_config(store), _config(store, skip_dedup=False)):
        for view, rows in batches:
            feast.online_write_batch(config, view, list(rows), None)
        expected = _written(client, keys)
        for view, rows in batches:  # Feast's tuples, not columns: Feast's method
            ours.online_write_batch(config, view, list(rows), None)
        assert _written(client, keys) == expected
    # the deduplicating path (skip_dedup off) keeps Feast's rule: an older row is skipped
    config = _config(store, skip_dedup=False)
    view, rows = batches[0]
    ours.online_write_batch(config, view, rows, None)
    before = client.hgetall(keys[0])
    older = [(k, v, t.replace(year=t.year - 1), c) for k, v, t, c in list(rows)]
    ours.online_write_batch(config, view, older, None)
    assert client.hgetall(keys[0]) == before
    client.delete(*keys)


def test_the_repo_runs_the_plugin_as_its_redis_store(setup):
    store, *_ = setup
    assert type(store.provider.online_store) is plugin.RedisOnlineStore
