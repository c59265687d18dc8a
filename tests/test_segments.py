"""Sealed log segments: archived per partition, checksummed, replayed on Ray, erased."""

from __future__ import annotations

import json
import math

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from helpers import shoplogs
from helpers.snapshots import EVENTS, QUIET, rows

from offline import log_archive as sg
from offline.backfill.replay import replay
from offline.backfill.replay_ray import replay_ray
from offline.cli import cli
from offline.privacy.erasure import erase_user
from online.eventlog import EventBatch, EventLog
from online.settings import Settings


@pytest.fixture()
def data(tmp_path):
    shoplogs.write(tmp_path / "d" / "events.db", EVENTS[:600])
    return Settings(data_dir=tmp_path / "d")


def _plain(batch: EventBatch) -> list[tuple]:
    """A batch as comparable tuples (NaN prices as None)."""
    cols = [[None if isinstance(v, float) and math.isnan(v) else v for v in col.tolist()]
            for col in batch.to_dict().values()]
    return list(zip(*cols, strict=True))


def _log_events(settings: Settings, part: int) -> list[tuple]:
    with EventLog(settings.event_log_path) as log:
        return _plain(log.read_partitions(part, 0, 100_000)[0])


def test_segments_hold_each_partitions_events_as_the_log_does(data, tmp_path):
    first = sg.archive(data, "memory://wt14-seg-a", to_offset=250)
    second = sg.archive(data)  # the store of the data dir, to the log's end
    assert (first["from_offset"], first["to_offset"]) == (0, 250)
    assert (second["from_offset"], second["to_offset"], second["url"]) == (
        250, 600, "memory://wt14-seg-a")
    assert first["events"] + second["events"] == 600
    store = sg.segment_store(data)
    for part in range(16):
        got = EventBatch.concat(store.read_partition(part, 10_000, 70))
        assert _plain(got) == _log_events(data, part)
        assert {k: v.dtype for k, v in got.to_dict().items()} == {
            k: v.dtype for k, v in EventBatch.empty().to_dict().items()}
    again = sg.archive(data)
    assert again["segments"] == 0 and again["archived_end"] == 600
    with pytest.raises(ValueError, match="archives into memory://wt14-seg-a"):
        sg.archive(data, str(tmp_path / "elsewhere"))


def test_a_damaged_segment_is_refused(data, tmp_path):
    sg.archive(data, str(tmp_path / "segs"))
    store = sg.segment_store(data)
    entry = store.manifest["segments"][0]
    path = tmp_path / "segs" / entry["path"]
    table = pq.read_table(path)
    pq.write_table(table.slice(1), path)
    with pytest.raises(sg.SegmentChecksumError, match="does not match the manifest"):
        list(store.read_partition(entry["partition"], 10_000, 100))


def test_ray_replay_reads_segments_and_the_live_tail(ray_local, data, tmp_path):
    plain = Settings(data_dir=tmp_path / "plain")
    shoplogs.write(plain.event_log_path, EVENTS)
    result = CliRunner().invoke(cli, ["--data-dir", str(data.data_dir), "log", "archive",
                                      "--to", f"file://{tmp_path}/segs", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["events"] == 600
    shoplogs.write(data.event_log_path, EVENTS[600:])  # the live tail, only in SQLite
    with EventLog(data.event_log_path) as log:  # the history is read from the segments:
        with log._transaction() as conn:  # remove it from SQLite to prove it
            conn.execute('DELETE FROM events WHERE "offset" < 600')
    replay_ray(data, tasks=3, **QUIET)
    replay(plain, **QUIET)
    assert rows(data) == rows(plain)


def test_erasure_rewrites_the_segments_holding_the_user(data, tmp_path):
    sg.archive(data, str(tmp_path / "segs"))
    victim = EVENTS[0]["user_id"]
    before = sg.segment_store(data).manifest["segments"]
    receipt = erase_user(data, victim)
    step = receipt.stores["log_segments"]
    assert step["segments_rewritten"] == 1 and step["events"] > 0
    store = sg.segment_store(data)
    assert len(store.manifest["segments"]) == len(before)
    for entry in store.manifest["segments"]:
        assert victim not in store.read_table(entry).column("user_id").to_pylist()
    assert not (tmp_path / "segs" / step["paths"][0].replace(".v1", "")).exists()
