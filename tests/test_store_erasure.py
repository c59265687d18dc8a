"""Each store's own erase, on its own: the erased user leaves nothing there, others stay.

``offline.privacy.erasure`` only orders these calls (tests/test_erasure.py runs them all
together); here every store module's erase is checked against the store's own reader.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import shoplogs
from helpers.snapshots import EVENTS, QUIET

from offline import log_archive
from offline.backfill import files as replay_files
from offline.backfill.replay import replay
from online import checkpoints
from online.api import consistency
from online.eventlog import EventLog
from online.projector import Projector, UnknownUser
from online.settings import Settings

VICTIM = max(EVENTS, key=lambda e: e["ts"])["user_id"]  # the newest event: watermark moves
OTHER = next(e["user_id"] for e in EVENTS if e["user_id"] != VICTIM)


@pytest.fixture()
def data(tmp_path) -> Settings:
    shoplogs.write(tmp_path / "d" / "events.db", EVENTS[:600])
    return Settings(data_dir=tmp_path / "d")


def _projected(settings: Settings) -> dict:
    """A checkpoint of the log (plus a stale older copy); OTHER's profile."""
    with EventLog(settings.event_log_path) as log:
        projector = Projector(log, settings.state_dir)
        projector.run()
        current = projector.checkpoint()
        other = projector.profile(OTHER)
    shutil.copytree(current, settings.state_dir / "ckpt-00000000000000000001-stale")
    return other


def test_checkpoint_erase_on_disk_leaves_no_row_and_keeps_the_others(data) -> None:
    other = _projected(data)
    out = checkpoints.erase_user(data.state_dir, VICTIM)
    assert out == {"state_rows": 1, "checkpoints_removed": 2, "residue": []}
    assert [p.name for p in data.state_dir.glob("ckpt-*")] == [
        checkpoints.current_checkpoint(data.state_dir)]
    assert checkpoints.files_with(data.state_dir, VICTIM) == []
    with EventLog(data.event_log_path) as log:
        projector = Projector(log, data.state_dir)  # resumes from the rewritten checkpoint
        with pytest.raises(UnknownUser):
            projector.profile(VICTIM)
        assert projector.profile(OTHER) == other
    remaining = [t for t, e in zip(shoplogs.effective(EVENTS[:600]), EVENTS[:600], strict=True)
                 if e["user_id"] != VICTIM]
    assert projector.watermark_us == max(remaining)  # the victim's newest event is gone
    assert checkpoints.erase_user(data.state_dir, VICTIM)["state_rows"] == 0  # idempotent


def test_checkpoint_erase_of_a_live_projector_writes_a_clean_checkpoint(data) -> None:
    other = _projected(data)
    with EventLog(data.event_log_path) as log:
        live = Projector(log, data.state_dir)
        out = checkpoints.erase_user(data.state_dir, VICTIM, projector=live)
        assert out["state_rows"] == 1 and out["residue"] == []
        assert live.state.user_index(VICTIM) is None and live.profile(OTHER) == other
    assert checkpoints.files_with(data.state_dir, VICTIM) == []
    with EventLog(data.event_log_path) as log:
        assert Projector(log, data.state_dir).state.user_index(VICTIM) is None


def test_files_with_matches_whole_short_ids_only(tmp_path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"users": ["u10", "u2"]}))
    assert checkpoints.files_with(tmp_path, "u1") == []
    assert checkpoints.files_with(tmp_path, "u10") == [tmp_path / "a.json"]


def _replay_users(settings: Settings) -> dict[str, list]:
    found: dict[str, list] = {}
    for codes in sorted((settings.offline_dir / "replay").rglob("codes.json")):
        found[codes.parent.name] = json.loads(codes.read_text())["users"]
    return found


def _parquet_rows(settings: Settings) -> dict[str, list[dict]]:
    out = {}
    for path in sorted(Path(settings.offline_dir).rglob("*.parquet")):
        table = pq.ParquetFile(path, read_dictionary=["user_id"]).read()
        out[path.relative_to(settings.offline_dir).as_posix()] = table.to_pylist()
    return out


def test_replay_files_erase_leaves_no_checkpoint_row_or_parquet_row(data) -> None:
    replay(data, chunk_events=150, **QUIET)
    users_before, rows_before = _replay_users(data), _parquet_rows(data)
    assert any(VICTIM in users for users in users_before.values())
    out = replay_files.erase_user_from_checkpoints(data.offline_dir, VICTIM)
    assert out["checkpoints_rewritten"] == sum(VICTIM in u for u in users_before.values())
    users_after = _replay_users(data)
    assert set(users_after) == set(users_before)
    for name, users in users_after.items():  # the row stays allocated, its id is dropped
        assert VICTIM not in users
        assert users == [None if u == VICTIM else u for u in users_before[name]]

    n_victim = sum(r["user_id"] == VICTIM for rows in rows_before.values() for r in rows)
    assert replay_files.erase_user_from_parquet(data.offline_dir, VICTIM)["rows"] == n_victim
    rows_after = _parquet_rows(data)
    for name, rows in rows_after.items():
        assert rows == [r for r in rows_before[name] if r["user_id"] != VICTIM]
        dictionary = pq.ParquetFile(data.offline_dir / name, read_dictionary=["user_id"])
        for chunk in dictionary.read(columns=["user_id"])["user_id"].chunks:
            assert VICTIM not in chunk.dictionary.to_pylist()
    assert replay_files.erase_user_from_parquet(data.offline_dir, VICTIM) == {"rows": 0,
                                                                              "files": 0}


def test_sample_log_erase_reaches_every_registered_log(tmp_path) -> None:
    data_dir = tmp_path / "d"
    registered = consistency.ProfileSampler(tmp_path / "a.jsonl", 1.0, data_dir=data_dir)
    configured = consistency.ProfileSampler(tmp_path / "b.jsonl", 1.0)
    body = {"as_of": "2024-01-01T00:00:00Z", "offset": 3, "features": {"event_count": 1}}
    for sampler in (registered, configured):
        for user in ("stored-victim", "stored-other", "stored-victim"):
            assert sampler.maybe_record(body, user)
        sampler.close()
    with open(tmp_path / "b.jsonl", "a") as f:  # an older record keyed by the raw id
        f.write(json.dumps({"user_id": "raw-victim", **body}) + "\n")
    out = consistency.erase_user(data_dir, tmp_path / "b.jsonl",
                                 {"stored-victim", "raw-victim"})
    assert out == {"lines": 5, "files": 2}
    for path in (tmp_path / "a.jsonl", tmp_path / "b.jsonl"):
        assert [r["stored_user_id"] for r in consistency.read_samples(path)] == ["stored-other"]


def test_segment_erase_keeps_every_other_users_events(data, tmp_path) -> None:
    log_archive.archive(data, str(tmp_path / "segs"))
    store = log_archive.segment_store(data)

    def events() -> list[tuple]:
        return sorted((int(o), u) for e in store.manifest["segments"]
                      for o, u in zip(store.read_table(e).column("offset").to_pylist(),
                                      store.read_table(e).column("user_id").to_pylist(),
                                      strict=True))

    before = events()
    out = log_archive.erase_user(data, VICTIM)
    assert out["events"] == sum(u == VICTIM for _, u in before) > 0
    store = log_archive.segment_store(data)
    assert events() == [(o, u) for o, u in before if u != VICTIM]
    assert log_archive.erase_user(data, VICTIM)["events"] == 0
