"""Log partitions: a stable hash per stored user, a partition reader, the migration on open."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest
from helpers import shoplogs

from online import partitions as pt
from online.eventlog import EventLog

EVENTS = shoplogs.make_events(400, seed=11, users=40)


def _offsets(batch) -> list[int]:
    return batch.offset.tolist()


def test_the_hash_is_the_same_in_another_process():
    ids = [f"user-{k}" for k in range(50)] + ["ü", "a" * 128]
    here = [pt.partition_of(u, 16) for u in ids]
    code = ("import sys; from online.partitions import partition_of; "
            f"print([partition_of(u, 16) for u in {ids!r}])")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.strip()
    assert str(here) == there
    assert len(set(here)) > 8, "50 ids spread over most of 16 partitions"


def test_partitions_split_the_log_by_user(tmp_path):
    shoplogs.write(tmp_path / "events.db", EVENTS)
    with EventLog(tmp_path / "events.db") as log:
        assert log.partitions == pt.DEFAULT_PARTITIONS
        whole, _ = log.read(0, 10_000)
        owner = {}
        seen = []
        for p in range(log.partitions):
            batch, resume = log.read_partitions(p, 0, 10_000)
            offs = _offsets(batch)
            assert offs == sorted(offs)
            assert resume == (offs[-1] + 1 if offs else 0)
            for u in set(batch.user_id.tolist()):
                assert owner.setdefault(u, p) == p
                assert pt.partition_of(u, log.partitions) == p
            seen += offs
        assert sorted(seen) == _offsets(whole)
        assert sum(log.partition_counts()) == len(EVENTS)
        assert log.stats()["partitions"] == pt.DEFAULT_PARTITIONS


def test_a_set_of_partitions_reads_in_offset_order_and_resumes(tmp_path):
    shoplogs.write(tmp_path / "events.db", EVENTS)
    with EventLog(tmp_path / "events.db") as log:
        want = [o for p in (1, 5, 6) for o in _offsets(log.read_partitions(p, 0, 10_000)[0])]
        got, pos = [], 0
        while True:
            batch, pos = log.read_partitions([6, 1, 5], pos, 7, to_offset=350)
            if not len(batch):
                break
            got += _offsets(batch)
        assert got == sorted(o for o in want if o < 350)
        columns = log.read(0, 5)[0].__dict__.keys()
        assert log.read_partitions([1], 0, 5)[0].__dict__.keys() == columns


def test_an_older_log_gets_the_partition_column_on_open(tmp_path):
    path = tmp_path / "events.db"
    shoplogs.write(path, EVENTS)
    with EventLog(path) as log:
        before = {p: _offsets(log.read_partitions(p, 0, 10_000)[0]) for p in range(16)}
    conn = sqlite3.connect(path)  # the schema of a log written before partitions existed
    conn.execute("DROP INDEX events_part_offset")
    conn.execute("ALTER TABLE events DROP COLUMN part")
    conn.execute("DELETE FROM meta WHERE key = 'partitions'")
    conn.commit()
    conn.close()
    with EventLog(path) as log:
        assert log.partitions == 16
        after = {p: _offsets(log.read_partitions(p, 0, 10_000)[0]) for p in range(16)}
    assert after == before


def test_the_partition_count_is_fixed_when_the_log_is_created(tmp_path):
    path = tmp_path / "events.db"
    with EventLog(path, partitions=4) as log:
        assert log.partitions == 4
    with EventLog(path) as log:
        assert log.partitions == 4
    with pytest.raises(ValueError, match="the log has 4 partitions, got 8"):
        EventLog(path, partitions=8)
    with pytest.raises(ValueError, match=r"partitions: expected an integer in \[1, 65536\]"):
        EventLog(tmp_path / "other.db", partitions=0)
    with EventLog(path) as log, pytest.raises(ValueError, match="partitions: expected values"):
        log.read_partitions(4)


def test_a_new_data_dir_takes_its_partition_count_from_the_settings(tmp_path, monkeypatch):
    from online.privacy import open_event_log
    from online.settings import Settings

    monkeypatch.setenv("PORTRAIT_LOG_PARTITIONS", "4")
    settings = Settings(data_dir=tmp_path)
    assert settings.log_partitions == 4
    with open_event_log(settings) as log:
        assert log.partitions == 4
    monkeypatch.setenv("PORTRAIT_LOG_PARTITIONS", "8")
    with pytest.raises(ValueError, match="the log has 4 partitions, got 8"):
        open_event_log(Settings(data_dir=tmp_path))


def test_the_cli_names_a_partition_mismatch(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from offline.cli import cli

    with EventLog(tmp_path / "events.db", partitions=4):
        pass
    monkeypatch.setenv("PORTRAIT_LOG_PARTITIONS", "8")
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "log", "stats"])
    assert result.exit_code != 0 and "the log has 4 partitions, got 8" in result.output
    assert "Traceback" not in result.output
