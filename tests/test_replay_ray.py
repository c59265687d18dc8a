"""Replay on Ray: the same rows and values as the local replay, also when a worker dies."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shoplogs

from offline import asof
from offline.replay import replay, replay_state, replayed_end, snapshot_files, watermark
from offline.replay_ray import replay_ray
from online.settings import Settings


def _packed(events: list[dict], factor: int = 25) -> list[dict]:
    """The events with times squeezed toward T0 (order, ties and late events kept): fewer
    event dates, so fewer files per task, which is what a small test's time goes into."""
    return [{**e, "ts": shoplogs.T0 + (e["ts"] - shoplogs.T0) // factor} for e in events]


EVENTS = _packed(shoplogs.make_events(900, seed=5, users=30))
QUIET = {"progress": False, "batch_events": 70}


def rows(settings: Settings) -> list[tuple]:
    """Every snapshot row as a tuple of plain values, sorted (file layout does not matter)."""
    table = pa.concat_tables([pq.read_table(f) for f in snapshot_files(settings)],
                             promote_options="permissive")
    cols = []
    for name in table.column_names:
        col = table.column(name)
        cols.append(asof.micros(col).tolist() if pa.types.is_timestamp(col.type)
                    else [json.dumps(v) if isinstance(v, list) else v
                          for v in col.to_pylist()])
    return sorted(zip(*cols, strict=True), key=repr)


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


def test_a_driver_that_died_resumes_with_the_groups_not_done(ray_local, two, monkeypatch):
    local, ray = two
    import offline.replay_ray as rr

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
