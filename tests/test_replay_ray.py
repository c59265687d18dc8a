"""Replay on Ray: the same rows and values as the local replay, also when a worker dies."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import shoplogs
from helpers.snapshots import EVENTS, QUIET, rows

from offline.backfill import training_set as rt
from offline.backfill.replay import replay, replay_state, replayed_end, snapshot_files, watermark
from offline.backfill.replay_ray import replay_ray
from offline.backfill.training_set_ray import training_set_ray
from online import catalogue as cat
from online.eventlog import EventLog
from online.settings import Settings


@pytest.fixture()
def two(tmp_path):
    """Two data dirs holding the same log."""
    out = []
    for name in ("local", "ray"):
        shoplogs.write(tmp_path / name / "events.db", EVENTS)
        out.append(Settings(data_dir=tmp_path / name))
    return out


def test_ray_replay_equals_local_replay(ray_local, two):
    local, ray = two
    a = replay(local, chunk_events=300, **QUIET)
    b = replay_ray(ray, tasks=5, **QUIET)
    assert (b.engine, b.events, b.rows, b.tail_rows) == ("ray", a.events, a.rows, a.tail_rows)
    got, want = rows(ray), rows(local)
    assert len(got) == a.rows + a.tail_rows and got == want
    assert replayed_end(ray) == replayed_end(local) == len(EVENTS)
    assert watermark(ray) == watermark(local)
    assert len(snapshot_files(ray)) > len({f.parent for f in snapshot_files(ray)})  # per group
    merged, here = replay_state(ray), replay_state(local)
    assert sorted(u for u in merged.users.values) == sorted(here.users.values)


def test_a_killed_worker_is_retried_and_the_result_is_the_same(ray_local, two, tmp_path):
    local, ray = two
    replay(local, **QUIET)
    summary = replay_ray(ray, tasks=2, fail_once_dir=str(tmp_path / "faults"), **QUIET)
    assert len(list((tmp_path / "faults").iterdir())) == 2, "every task died once"
    assert summary.events == len(EVENTS)
    assert rows(ray) == rows(local)


def test_the_local_engine_extends_a_ray_snapshot(ray_local, two):
    local, ray = two
    replay_ray(ray, to_offset=600, tasks=2, **QUIET)
    replay(ray, **QUIET)  # from the merged checkpoint at 600
    replay(local, **QUIET)
    assert rows(ray) == rows(local)


def test_one_task_s_state_becomes_the_checkpoint_the_local_engine_extends(ray_local, two):
    local, ray = two
    replay_ray(ray, to_offset=600, tasks=1, **QUIET)
    assert not (ray.offline_dir / "replay" / "ray").exists()  # the staging dir is gone
    replay(local, to_offset=600, **QUIET)
    assert replay_state(ray).equals(replay_state(local))
    replay(ray, **QUIET)
    replay(local, **QUIET)
    assert rows(ray) == rows(local)


def test_a_driver_that_died_resumes_with_the_groups_not_done(ray_local, two, monkeypatch):
    local, ray = two
    import offline.backfill.replay_ray as rr

    def broken(*args, **kwargs):  # the driver dies before the commit
        raise KeyboardInterrupt

    monkeypatch.setattr(rr, "_commit", broken)
    with pytest.raises(KeyboardInterrupt):
        replay_ray(ray, tasks=4, **QUIET)
    monkeypatch.undo()
    done = list((ray.offline_dir / "replay" / "ray").glob("g*/done.json"))
    assert len(done) == 4
    summary = replay_ray(ray, tasks=4, **QUIET)
    assert summary.resumed_at == 0 and "4 of 4" in summary.notes[0]
    replay(local, **QUIET)
    assert rows(ray) == rows(local)


def _entities(n: int, seed: int) -> pd.DataFrame:
    """Random (user, T) rows, some of unknown users and before any event, in random order."""
    rng = np.random.default_rng(seed)
    ts = np.array([e["ts"] for e in EVENTS])
    t = rng.choice(ts, n) + rng.choice([0, 1, -1, cat.HOUR_US, 2 * cat.DAY_US], n)
    t[:5] = shoplogs.T0 - cat.DAY_US
    who = [f"u{k}" for k in rng.integers(32, size=n)]  # u30, u31: no events
    return pd.DataFrame({"user_id": who, "event_timestamp": pd.to_datetime(t, unit="us",
                                                                           utc=True)})


@pytest.mark.parametrize("replay_engine", ["local", "ray"])
def test_ray_training_set_equals_the_local_one(ray_local, two, tmp_path, replay_engine):
    local, ray = two
    if replay_engine == "ray":
        replay_ray(ray, tasks=3, **QUIET)
    else:
        replay(ray, **QUIET)
    entities = _entities(300, seed=replay_engine == "ray")
    want = rt.training_set(ray, entities, 2 * cat.DAY_US)
    got = training_set_ray(ray, entities, 2 * cat.DAY_US, tasks=None if replay_engine == "ray"
                           else 4)
    pd.testing.assert_frame_equal(got, want)
    assert want["event_count"].notna().sum() > 200
    rt.write_frame(got, tmp_path / "a.parquet")
    rt.write_frame(want, tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_the_cli_runs_replay_and_training_sets_on_ray(ray_local, two, tmp_path):
    from click.testing import CliRunner

    from offline.cli import cli

    local, ray = two
    bodies = {}
    for settings, engine in ((local, "local"), (ray, "ray")):
        args = ["--data-dir", str(settings.data_dir), "replay", "--engine", engine, "--json"]
        if engine == "ray":
            args += ["--workers", "2"]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        bodies[engine] = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("events", "rows", "tail_rows"):
        assert bodies["ray"][key] == bodies["local"][key]
    assert (bodies["ray"]["engine"], bodies["ray"]["workers"]) == ("ray", 2)
    assert bodies["ray"]["events_per_s"] > 0 and bodies["local"]["engine"] == "local"
    assert rows(ray) == rows(local)
    entities = tmp_path / "entities.csv"
    _entities(120, seed=4).to_csv(entities, index=False)
    outs = []
    for engine in ("local", "ray"):
        outs.append(tmp_path / f"{engine}.parquet")
        result = CliRunner().invoke(cli, ["--data-dir", str(ray.data_dir), "training-set",
                                          "--entities", str(entities), "--label-horizon", "1d",
                                          "--engine", engine, "--out", str(outs[-1]), "--json"])
        assert result.exit_code == 0, result.output
    assert outs[0].read_bytes() == outs[1].read_bytes()
    bad = CliRunner().invoke(cli, ["--data-dir", str(ray.data_dir), "replay", "--workers", "2"])
    assert bad.exit_code != 0 and "--engine ray" in bad.output


def test_erasure_reaches_a_ray_snapshot_and_an_unfinished_ray_run(ray_local, two, monkeypatch):
    from offline.privacy.erasure import erase_user
    from online.state import UserState

    _, ray = two
    replay_ray(ray, tasks=2, **QUIET)
    import offline.backfill.replay_ray as rr

    def broken(*args, **kwargs):
        raise KeyboardInterrupt

    with EventLog(ray.event_log_path) as log:  # a longer log: the next run is a new plan
        log.append([shoplogs.payload({**EVENTS[0], "event_id": "late-1"})],
                   now_us=shoplogs.NOW_US)
    monkeypatch.setattr(rr, "_commit", broken)
    with pytest.raises(KeyboardInterrupt):
        replay_ray(ray, tasks=2, **QUIET)
    monkeypatch.undo()
    victim = EVENTS[0]["user_id"]
    receipt = erase_user(ray, victim)
    assert receipt.stores["offline_parquet"]["rows"] > 0
    assert receipt.stores["replay_checkpoints"]["checkpoints_rewritten"] == 2  # end + a group
    for path in ray.offline_dir.rglob("*.parquet"):
        assert victim not in set(pq.read_table(path, columns=["user_id"])
                                 .column(0).cast(pa.string()).to_pylist()), path
    for codes in ray.offline_dir.rglob("codes.json"):
        assert victim not in UserState.load(codes.parent).users.codes, codes
    assert all(r[0] != victim for r in rows(ray))


def test_an_empty_log_replays_to_an_empty_snapshot(ray_local, tmp_path):
    settings = Settings(data_dir=tmp_path)
    EventLog(settings.event_log_path).close()
    summary = replay_ray(settings, **QUIET)
    assert (summary.events, summary.rows, summary.end_offset) == (0, 0, 0)
    assert snapshot_files(settings) == [] and replayed_end(settings) == 0
