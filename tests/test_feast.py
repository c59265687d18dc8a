"""Feast: repo config, apply + materialize + online reads, historical features, online writes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import shoplogs
from helpers.services import require_redis

from offline import feast_online as fo
from offline import feast_store as fs
from offline.backfill import training_set as rt
from offline.backfill.replay import replay, replay_state, replayed_end
from online import catalogue as cat
from online import kernels
from online.eventlog import EventLog
from online.projector import Projector
from online.settings import Settings

EVENTS = shoplogs.make_events(500, seed=9, users=7)
NOW = datetime(2030, 1, 1, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("feast")
    shoplogs.write(root / "events.db", EVENTS)
    settings = Settings(data_dir=root)
    replay(settings, progress=False)
    body = fs.materialize(settings, end=NOW)
    assert body["replayed_end"] == len(EVENTS)
    return settings


def online_rows(store, users: list[str]) -> dict[str, list]:
    return store.get_online_features(features=store.get_feature_service(fs.FEATURE_SERVICE),
                                     entity_rows=[{"user_id": u} for u in users]).to_dict()


def test_yaml_defaults_to_the_project_data_dir_when_the_variable_is_unset(monkeypatch):
    from feast.repo_config import load_repo_config

    monkeypatch.delenv("PORTRAIT_DATA_DIR", raising=False)
    config = load_repo_config(fs.FEATURE_REPO, fs.FEATURE_REPO / "feature_store.yaml")
    online = (fs.FEATURE_REPO / config.online_store.path).resolve()
    registry = (fs.FEATURE_REPO / config.registry.path).resolve()
    assert online == ROOT / "data" / "online.db"
    assert registry == ROOT / "data" / "registry.db"
    assert config.offline_store.type == "duckdb" and config.project == "portrait"


def test_config_follows_the_settings(tmp_path):
    sqlite = fs.repo_config(Settings(data_dir=tmp_path))
    assert Path(sqlite.online_store.path) == tmp_path.resolve() / "online.db"
    assert Path(sqlite.registry.path) == tmp_path.resolve() / "registry.db"
    redis = fs.repo_config(Settings(data_dir=tmp_path, online_store="redis"))
    assert redis.online_store.type == "offline.feast_redis.RedisOnlineStore"
    assert redis.online_store.skip_dedup
    objs = fs.definitions(Settings(data_dir=tmp_path))
    assert objs["user_features_source"].path == str(tmp_path.resolve() / "offline" /
                                                    "user_features")
    views = {v.name: v for v in objs["user_profile"].feature_view_projections}
    assert set(views) == {*cat.VIEWS, "snapshot"}
    declared = [f.name for v in objs["THEME_VIEWS"] for f in v.schema]
    assert sorted(declared) == sorted(cat.stored_names())


def test_materialize_puts_each_users_newest_row_online(data):
    store = fs.feature_store(data)
    state = replay_state(data)
    users = list(state.users.values)
    got = online_rows(store, users + ["nobody"])
    assert got["event_count"][-1] is None
    stored = kernels.stored_values(state, np.arange(len(users)), at_us=int(NOW.timestamp()) *
                                   cat.SECOND_US)
    for i, _user in enumerate(users):
        for name in cat.stored_names():
            want = stored[name][i]
            if cat.feature(name).dtype == "timestamp":  # Feast keeps whole seconds online
                have = got[name][i]
                want_s = None if want == cat.NO_TS else want // cat.SECOND_US
                assert (have and int(have.timestamp())) == want_s, name
            elif cat.feature(name).dtype == "str_list":
                assert list(got[name][i]) == list(want), name
            else:
                assert shoplogs.same(got[name][i], want.item() if hasattr(want, "item")
                                     else want), name
    assert max(got["offset"][:-1]) == len(EVENTS)


def test_historical_features_equal_the_fast_path(data):
    rng = np.random.default_rng(4)
    eff = shoplogs.effective(EVENTS)
    t = np.array(eff)[rng.integers(len(EVENTS), size=120)] + rng.choice(
        [0, 1, -1, cat.HOUR_US, 5 * cat.DAY_US], 120)
    users = [f"u{k}" for k in rng.integers(8, size=120)]  # u7: never seen
    entities = pd.DataFrame({"user_id": users,
                             "event_timestamp": pd.to_datetime(t, unit="us", utc=True)})
    fast = rt.training_set(data, entities, cat.DAY_US, path="fast")
    feast = rt.training_set(data, entities, cat.DAY_US, path="feast")
    pd.testing.assert_frame_equal(fast, feast)
    assert fast["event_count"].isna().sum() >= 1


def test_materialize_refuses_a_snapshot_behind_the_log(tmp_path):
    settings = Settings(data_dir=tmp_path)
    shoplogs.write(settings.event_log_path, EVENTS[:50])
    replay(settings, progress=False)
    shoplogs.write(settings.event_log_path, [dict(e, event_id=f"x{k}")
                                             for k, e in enumerate(EVENTS[50:60])])
    with pytest.raises(fs.SnapshotBehindLog, match="replay"):
        fs.materialize(settings, end=NOW)
    assert replayed_end(settings) == 50


def frame(user: str, offset: int, ts_us: int, events: int) -> pd.DataFrame:
    """One stored row of ``user``: mostly empty, ``event_count`` marks which write it is."""
    stored = {}
    for f in cat.stored_features():
        if f.dtype in ("str", "str_list"):
            v = np.empty(1, dtype=object)
            v[0] = ["i1", "i2"] if f.dtype == "str_list" else None
        else:
            v = np.array([cat.NO_TS if f.dtype == "timestamp" else 0],
                         dtype=np.float64 if f.dtype == "float64" else np.int64)
        stored[f.name] = v
    stored["event_count"][0] = events
    stored["last_event_ts"][0] = ts_us
    return fo.stored_frame([user], stored, np.array([offset]))


def check_writes_never_go_back(writer: fo.OnlineWriter) -> str:
    user, t = f"w-{uuid.uuid4().hex[:8]}", shoplogs.T0
    assert writer.push(frame(user, 10, t, 5)).pushed == 1
    assert writer.push(frame(user, 9, t + cat.HOUR_US, 4)).skipped == 1  # older state
    assert writer.push(frame(user, 10, t, 5)).skipped == 1  # the same again (a restart)
    assert online_rows(writer.store, [user])["event_count"] == [5]
    late = writer.push(frame(user, 12, t, 6))  # a late event: same time, newer offset
    assert late.pushed == 1
    both = pd.concat([frame(user, 20, t + 2, 8), frame(user, 15, t + 1, 7)])
    assert writer.push(both) == fo.PushResult(offered=2, pushed=1, skipped=1)
    got = online_rows(writer.store, [user])
    assert (got["event_count"], got["offset"], got["recent_items"]) == ([8], [20], [["i1",
                                                                                      "i2"]])
    held = writer.stored_versions([user, "nobody"])
    assert list(held) == [user] and held[user][0] == 20
    assert held[user][1] // cat.SECOND_US == (t + 2) // cat.SECOND_US
    return user


def test_online_writes_never_overwrite_newer_rows_sqlite(data):
    check_writes_never_go_back(fo.OnlineWriter(data))


def test_online_writes_never_overwrite_newer_rows_redis(tmp_path):
    settings = Settings(data_dir=tmp_path, online_store="redis")
    require_redis(settings.redis_url)
    fs.apply(settings)
    writer = fo.OnlineWriter(settings)
    user = check_writes_never_go_back(writer)
    import redis
    from feast.infra.key_encoding_utils import serialize_entity_key  # noqa: F401
    from feast.infra.online_stores.helpers import _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    key = _redis_key(writer.store.project, EntityKey(
        join_keys=["user_id"], entity_values=[Value(string_val=user)]), 3)
    host, port = settings.redis_url.split(":")
    assert redis.Redis(host=host, port=int(port)).delete(key) == 1  # the test's own key


def test_the_projector_pushes_each_batch_through_the_writer(tmp_path):
    settings = Settings(data_dir=tmp_path)
    shoplogs.write(settings.event_log_path, EVENTS)
    fs.apply(settings)
    writer = fo.OnlineWriter(settings)
    with EventLog(settings.event_log_path) as log:
        projector = Projector(log, settings.state_dir, contributors=[writer])
        projector.run(batch_size=150)
    users = list(projector.state.users.values)
    got = online_rows(writer.store, users)
    stored = kernels.stored_values(projector.state, np.arange(len(users)))
    assert got["event_count"] == stored["event_count"].tolist()
    assert got["spend_total"] == stored["spend_total"].tolist()
    last = {e["user_id"]: k + 1 for k, e in enumerate(EVENTS)}
    assert got["offset"] == [last[u] for u in users]


@pytest.mark.slow
def test_feast_cli_apply_materialize_and_serve(data, tmp_path):
    """`cd feature_repo && feast apply && feast materialize-incremental`, then `feast serve`."""
    repo = tmp_path / "feature_repo"
    shutil.copytree(fs.FEATURE_REPO, repo, symlinks=True)
    shutil.copytree(data.data_dir / "offline", tmp_path / "data" / "offline")
    env = {k: v for k, v in os.environ.items() if k != "PORTRAIT_DATA_DIR"}
    feast = str(Path(sys.executable).with_name("feast"))
    for args in (["apply"], ["materialize-incremental", NOW.strftime("%Y-%m-%dT%H:%M:%S")]):
        done = subprocess.run([feast, *args], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "data" / "registry.db").exists()  # unset variable: ../data
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([feast, "serve", "--host", "127.0.0.1", "--port", str(port)],
                              cwd=repo, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        import httpx

        body = {"features": ["activity:event_count", "snapshot:offset"],
                "entities": {"user_id": ["u0"]}}
        for _ in range(240):
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/get-online-features", json=body)
                break
            except httpx.TransportError:
                time.sleep(0.5)
        assert r.status_code == 200, r.text
        values = {name: res["values"][0] for name, res in zip(
            r.json()["metadata"]["feature_names"], r.json()["results"], strict=True)}
        assert values["event_count"] == sum(e["user_id"] == "u0" for e in EVENTS)
    finally:
        server.terminate()
        server.wait(timeout=30)
