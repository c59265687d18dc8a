"""Replay: the snapshot equals the reference, reproduces the projector, is idempotent, resumes."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import naive, shoplogs

from offline.backfill import asof_join as asof
from offline.backfill.replay import (
    replay,
    replay_state,
    replayed_end,
    snapshot_dir,
    snapshot_files,
    watermark,
)
from online import catalogue as cat
from online import kernels
from online.eventlog import EventLog
from online.projector import Projector
from online.settings import Settings
from online.state import UserState

EVENTS = shoplogs.make_events(450, seed=3)
SMALL = {"chunk_events": 150, "batch_events": 60, "progress": False}
BATCHED = {"batch_events": 60, "progress": False}  # one chunk, many batches


@pytest.fixture()
def data(tmp_path):
    shoplogs.write(tmp_path / "events.db", EVENTS)
    return Settings(data_dir=tmp_path)


def rows(settings: Settings) -> list[dict]:
    """Every snapshot row as a dict (timestamps as µs, NO_TS for null), in a stable order."""
    files = snapshot_files(settings)
    table = pa.concat_tables([pq.read_table(f) for f in files])
    out = {}
    for name in table.column_names:
        col = table.column(name)
        out[name] = (asof.micros(col).tolist() if pa.types.is_timestamp(col.type)
                     else col.to_pylist())
    listed = [dict(zip(out, values, strict=True)) for values in zip(*out.values(), strict=True)]
    return sorted(listed, key=lambda r: (r["user_id"], r["event_timestamp"], r["created"]))


def test_rows_equal_the_reference_state_as_of_their_time(data):
    replay(data, **SMALL)
    eff = shoplogs.effective(EVENTS)
    got = rows(data)
    assert got, "a snapshot of a non-empty log has rows"
    keys = Counter((r["user_id"], r["event_timestamp"]) for r in got)
    assert max(keys.values()) == 1, "one row per (user, time), across batches and chunks"
    sample = np.random.default_rng(0).choice(len(got), size=min(len(got), 300), replace=False)
    for r in (got[k] for k in sorted(sample)):
        # no leakage: the row is the reference state from events with effective ts <= its time
        applied = [dict(e, eff=t) for e, t in zip(EVENTS, eff, strict=True)
                   if e["user_id"] == r["user_id"] and t <= r["event_timestamp"]]
        want = naive.stored(applied, r["event_timestamp"])
        for name, w in want.items():
            assert shoplogs.same(r[name], w, name), (r["user_id"], r["event_timestamp"], name)
        last = max(k for k, e in enumerate(EVENTS) if e["user_id"] == r["user_id"]
                   and eff[k] <= r["event_timestamp"])
        assert r["offset"] == last + 1
    assert all(r["created"] == r["offset"] for r in got)


def test_window_changes_between_events_get_their_own_rows(data):
    replay(data, **BATCHED)
    by_user: dict[str, list[dict]] = {}
    for r in rows(data):
        by_user.setdefault(r["user_id"], []).append(r)
    state = UserState()
    with EventLog(data.event_log_path) as log:
        kernels.apply(state, log.read(0, 10_000)[0])
    for user, mine in by_user.items():
        # the last row is the final expiry: every window empty, nothing changes after it
        u = state.user_index(user)
        assert kernels.next_window_change(state, [u], mine[-1]["event_timestamp"])[0] == cat.NO_TS
        assert all(mine[-1][f"events_{label}"] == 0 for label, _, _ in cat.WINDOWS)
        times = [r["event_timestamp"] for r in mine]
        assert times == sorted(times)


def test_replay_reproduces_the_projector_state(data, tmp_path):
    summary = replay(data, **BATCHED)
    with EventLog(data.event_log_path) as log:
        projector = Projector(log, tmp_path / "projector")
        projector.run(batch_size=97)
        assert replay_state(data).equals(projector.state)
        assert replayed_end(data) == projector.offset == summary.end_offset == len(EVENTS)
        assert watermark(data) == projector.watermark_us
    assert summary.events == len(EVENTS)
    assert summary.rows + summary.tail_rows == len(rows(data))


def test_rerun_replaces_rows_and_never_duplicates(data):
    replay(data, **SMALL)
    first, files = rows(data), snapshot_files(data)
    again = replay(data, **SMALL)
    assert again.events == len(EVENTS)
    middle = replay(data, from_offset=200, to_offset=320, **SMALL)
    assert (middle.from_offset, middle.to_offset) == (150, 450)  # widened to chunk boundaries
    assert middle.events == 300
    assert rows(data) == first
    assert snapshot_files(data) == files
    on_disk = sorted(snapshot_dir(data).rglob("*.parquet"))
    assert on_disk == files, "no stray or temporary files"
    keys = Counter((r["user_id"], r["event_timestamp"], r["created"]) for r in first)
    assert max(keys.values()) == 1


def _interrupt_after_two_chunks(data) -> None:
    """A replay stopped (KeyboardInterrupt) once two chunks of SMALL are done."""
    calls = []

    def crash_after_two_chunks(n: int) -> None:
        calls.append(n)
        if sum(calls) > 2 * SMALL["chunk_events"]:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replay(data, chunk_events=150, batch_events=60, progress=crash_after_two_chunks)


def test_interrupted_replay_resumes_from_its_last_chunk(data, tmp_path):
    _interrupt_after_two_chunks(data)
    manifest = json.loads((data.offline_dir / "replay" / "manifest.json").read_text())
    assert manifest["run"]["done"] == 300
    resumed = replay(data, **SMALL)
    assert resumed.resumed_at == 300
    assert resumed.events == len(EVENTS) - 300
    assert summary_of_chunks(data) == [(0, 150), (150, 300), (300, 450)]

    clean = Settings(data_dir=tmp_path / "clean")
    shoplogs.write(clean.event_log_path, EVENTS)
    replay(clean, **BATCHED)
    assert rows(data) == rows(clean)
    assert replay_state(data).equals(replay_state(clean))


def test_an_interrupted_run_s_end_gets_its_checkpoint_from_any_later_call(data, tmp_path):
    # only the run's last chunk and anchors are checkpointed: a run stopped after two chunks
    # leaves its end without one, and the next call (here one that replays nothing) adds it
    _interrupt_after_two_chunks(data)
    assert replayed_end(data) == 300
    with pytest.raises(KeyError, match="no replay checkpoint at offset 300"):
        replay_state(data)
    assert replay(data, from_offset=300, to_offset=300, **SMALL).events == 0
    clean = Settings(data_dir=tmp_path / "clean")
    shoplogs.write(clean.event_log_path, EVENTS)
    replay(clean, to_offset=300, **BATCHED)
    assert replay_state(data).equals(replay_state(clean))
    assert rows(data) == rows(clean)


def test_replaying_new_events_equals_replaying_everything(data, tmp_path):
    replay(data, **SMALL)
    more = shoplogs.make_events(250, seed=4, t0=EVENTS[-1]["ts"] - 3 * cat.HOUR_US)
    more = [dict(e, event_id=f"more-{k}") for k, e in enumerate(more)]
    shoplogs.write(data.event_log_path, more)
    summary = replay(data, from_offset=replayed_end(data), **SMALL)
    assert summary.from_offset == len(EVENTS)

    full = Settings(data_dir=tmp_path / "full")
    shoplogs.write(full.event_log_path, EVENTS + more)
    replay(full, chunk_events=10_000, batch_events=10_000, progress=False)
    assert rows(data) == rows(full)


def test_empty_log_and_bad_ranges(tmp_path):
    s = Settings(data_dir=tmp_path)
    EventLog(s.event_log_path).close()
    assert replay(s, progress=False).events == 0
    shoplogs.write(s.event_log_path, EVENTS[:10])
    # the snapshot stays a prefix of the log: a start past its end starts at its end
    assert replay(s, from_offset=5, to_offset=5, progress=False).events == 5
    assert replay(s, from_offset=50, progress=False).events == 5
    assert replay(s, from_offset=3, to_offset=2, progress=False).events == 0
    assert np.all(np.diff([r["event_timestamp"] for r in rows(s) if r["user_id"] == "u0"]) >= 0)



def summary_of_chunks(settings: Settings) -> list[tuple[int, int]]:
    manifest = json.loads((settings.offline_dir / "replay" / "manifest.json").read_text())
    assert manifest["run"] is None
    return [(c["start"], c["end"]) for c in manifest["chunks"]]


def test_a_failed_write_leaves_no_temporary_file_nor_descriptor(data, tmp_path, monkeypatch):
    import os

    from offline.backfill import files as store

    commit = store.DayFiles.commit
    calls = {"n": 0}

    def failing(self, previous):  # the second chunk's files fail once written, unclosed
        calls["n"] += 1
        if calls["n"] == 2:
            self._drain(final=True)
            assert self._fds and list(data.offline_dir.rglob("*.tmp"))
            raise OSError(28, "No space left on device")
        return commit(self, previous)

    monkeypatch.setattr(store.DayFiles, "commit", failing)
    def open_files() -> set[str]:
        out = set()
        for fd in os.listdir("/proc/self/fd"):
            try:
                out.add(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:  # listdir's own descriptor, closed since
                pass
        return out

    before = open_files()
    with pytest.raises(OSError, match="No space"):
        replay(data, **SMALL)
    assert not [f for f in open_files() - before if ".parquet" in f]  # writers and fds closed
    assert not list(data.offline_dir.rglob("*.tmp"))
    monkeypatch.setattr(store.DayFiles, "commit", commit)
    assert replay(data, **SMALL).resumed_at == 150  # the run goes on from its first chunk
    clean = Settings(data_dir=tmp_path / "clean")
    shoplogs.write(clean.event_log_path, EVENTS)
    replay(clean, **BATCHED)
    assert rows(data) == rows(clean)
