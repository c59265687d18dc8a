"""Materialize after switching online stores: the new store gets every row (issue 12, item 18).

Feast remembers where the last ``materialize-incremental`` ended in the registry, whatever
the online store; a data dir switched to Redis used to report ``online_store: redis`` while
Redis held no key. The store materialized into is now recorded and a switch runs full.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from click.testing import CliRunner
from helpers import shoplogs
from helpers.services import require_redis

from offline import feast_store as fs
from offline.backfill.replay import replay
from offline.cli import cli
from online.settings import Settings

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def _online(settings: Settings, users: list[str]) -> list:
    store = fs.feature_store(settings)
    rows = store.get_online_features(features=["snapshot:offset"],
                                     entity_rows=[{"user_id": u} for u in users]).to_dict()
    return rows["offset"]


def test_switching_to_redis_materializes_everything_into_it(tmp_path, monkeypatch) -> None:
    sqlite = Settings(data_dir=tmp_path / "d")
    require_redis(sqlite.redis_url)
    tag = uuid.uuid4().hex[:12]  # the shared Redis: entities of this test's own
    events = [{**e, "user_id": f"switch-{tag}-{e['user_id']}"}
              for e in shoplogs.make_events(200, seed=3, users=5)]
    users = sorted({e["user_id"] for e in events})
    shoplogs.write(sqlite.event_log_path, events)
    replay(sqlite, progress=False)
    first = fs.materialize(sqlite, end=NOW)
    assert first["full"] and first["online_store"] == "sqlite"
    again = fs.materialize(sqlite, end=NOW)
    assert not again["full"] and again["full_reason"] is None  # same store: incremental

    redis = Settings(data_dir=sqlite.data_dir, online_store="redis")
    try:
        assert _online(redis, users) == [None] * len(users) or 0 in _online(redis, users)
        monkeypatch.setenv("PORTRAIT_ONLINE_STORE", "redis")
        out = CliRunner().invoke(cli, ["--data-dir", str(sqlite.data_dir), "materialize",
                                       "--json"])
        assert out.exit_code == 0, out.output
        body = json.loads(out.stdout.strip().splitlines()[-1])
        assert body["online_store"] == "redis" and body["full"]
        assert "changed" in body["full_reason"]
        got = _online(redis, users)
        assert all(isinstance(o, int) and o > 0 for o in got), got  # every user in Redis
        out = CliRunner().invoke(cli, ["--data-dir", str(sqlite.data_dir), "materialize",
                                       "--full", "--json"])
        body = json.loads(out.stdout.strip().splitlines()[-1])
        assert out.exit_code == 0 and body["full"] and body["full_reason"] == "asked"
    finally:
        from offline.feast_online import erase_user_redis

        for user in users:
            erase_user_redis(redis, user)
