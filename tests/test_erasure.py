"""Erasure across every store: gone everywhere, stays gone after replay, others untouched."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from helpers.privacy import KEY, leaks, raw_id, shop_events
from helpers.services import require_redis

from offline.backfill.replay import replay, snapshot_files
from offline.privacy.erasure import erase_user, retrain_models, verify_receipt
from online.api import ApiSettings, create_app
from online.api import service as api_service
from online.clock import parse_time
from online.eventlog import EventLog
from online.privacy import Pseudonymizer, open_event_log, pseudonymizer_from_settings
from online.projector import ProfileContributor, Projector, UnknownUser, features_as_of
from online.settings import Settings

PSEUDO = Pseudonymizer(KEY.encode())


def newest_user(events: list[dict]) -> str:
    """The user of the newest event: erasing them must move the watermark back."""
    return max(events, key=lambda e: e["ts"])["user_id"]


def rejected_for(user: str) -> list[dict]:
    ts = "2024-01-02T00:00:00+00:00"
    return [{"event_id": "bad-a", "user_id": user, "type": "purchase", "ts": ts},
            {"event_id": "bad-b", "user_id": user, "type": "fly", "ts": ts}]


class Remember(ProfileContributor):
    """A contributor with per-user state in its checkpoint (like pending model labels)."""

    name = "memory"

    def __init__(self, forgets: bool = True) -> None:
        self.users: set[str] = set()
        self.version = 0
        self.forgets = forgets  # False: one that cannot scrub itself (erasure must notice)

    def on_batch(self, projector, batch, user_idx, eff_ts) -> None:
        self.users.update(batch.user_id.tolist())

    def contribute(self, body, features) -> None:
        body["model_version"] = f"memory-v{self.version}"

    def save(self, directory: Path) -> None:
        (directory / "users.pkl").write_bytes(pickle.dumps(sorted(self.users)))

    def load(self, directory: Path) -> None:
        self.users = set(pickle.loads((directory / "users.pkl").read_bytes()))

    def erase_user(self, stored_id: str) -> dict[str, int]:
        if not self.forgets:
            return {}
        known = stored_id in self.users
        self.users.discard(stored_id)
        return {"users": int(known)}

    def reset(self) -> None:
        self.users, self.version = set(), self.version + 1

    @property
    def model_version(self) -> str:
        return f"memory-v{self.version}"


def build(settings: Settings, events: list[dict], extra: list[dict] = (),
          contributors=()) -> None:
    """Log, projector checkpoint (plus a stale older one), replay with kept checkpoints."""
    with open_event_log(settings) as log:
        log.append(list(events) + list(extra))
        projector = Projector(log, settings.state_dir, contributors=contributors)
        projector.run()
        current = projector.checkpoint()
    shutil.copytree(current, settings.state_dir / "ckpt-00000000000000000001-stale")
    replay(settings, progress=False, chunk_events=150)


def snapshot_rows(settings: Settings) -> pd.DataFrame:
    frame = pd.concat([pd.read_parquet(f) for f in snapshot_files(settings)], ignore_index=True)
    frame = frame.drop(columns=["offset", "created"]).astype({"user_id": str})
    return frame.sort_values(["user_id", "event_timestamp"], kind="stable").reset_index(drop=True)


def parquet_dictionaries(settings: Settings) -> set[str]:
    """Every user id listed in a parquet dictionary page (which may list absent users)."""
    ids: set[str] = set()
    for path in Path(settings.offline_dir).rglob("*.parquet"):
        for chunk in pq.ParquetFile(path, read_dictionary=["user_id"]).read()["user_id"].chunks:
            ids.update(chunk.dictionary.to_pylist())
    return ids


@pytest.fixture
def events() -> list[dict]:
    return shop_events(1_500)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data", pseudonym_key=KEY)


def test_erasure_removes_the_user_everywhere_and_survives_replay(settings, events) -> None:
    victim = newest_user(events)
    stored = PSEUDO(victim)
    n_events = sum(e["user_id"] == victim for e in events)
    build(settings, events, rejected_for(victim))
    before = leaks(settings.data_dir, [stored])
    assert "events.db" in before and any(p.startswith("state/") for p in before)
    assert any(p.startswith("offline/") for p in before)

    receipt = erase_user(settings, victim)
    assert receipt.found and receipt.complete, receipt
    s = receipt.stores
    assert s["event_log"]["events"] == n_events and s["event_log"]["quarantined"] == 2
    assert s["projector_state"] == {"state_rows": 1, "checkpoints_removed": 2, "residue": []}
    assert s["replay_checkpoints"]["checkpoints_rewritten"] >= 1  # the end, maybe an anchor
    assert s["offline_parquet"]["rows"] > 0 and s["online_sqlite"] == {"rows": 0}
    assert leaks(settings.data_dir, [victim, stored]) == {}  # not a byte left, audit included
    assert stored not in parquet_dictionaries(settings)  # nor in a file's dictionary page
    others = sorted({PSEUDO(e["user_id"]) for e in events} - {stored})
    assert "events.db" in leaks(settings.data_dir, others[:3])

    with open_event_log(settings) as log:
        with pytest.raises(UnknownUser):
            Projector(log, settings.state_dir).profile(victim)
        with pytest.raises(UnknownUser):
            features_as_of(log, victim, parse_time("2030-01-01T00:00:00+00:00"))
    # a replay of the whole log, and a projector rebuilt from offset 0, cannot bring them back
    replay(settings, 0, progress=False, chunk_events=150)
    assert stored not in set(snapshot_rows(settings)["user_id"])
    with open_event_log(settings) as log:
        rebuilt = Projector(log, settings.data_dir / "rebuilt")
        rebuilt.run()
        with pytest.raises(UnknownUser):
            rebuilt.profile(victim)
    assert leaks(settings.data_dir, [victim, stored]) == {}

    assert verify_receipt(settings, receipt.receipt_id, victim, receipt.verification_salt)
    assert not verify_receipt(settings, receipt.receipt_id, raw_id(0), receipt.verification_salt)
    audit = (settings.data_dir / "privacy" / "erasures.jsonl").read_text().splitlines()
    assert len(audit) == 1 and receipt.verification_salt not in audit[0]
    again = erase_user(settings, victim)
    assert not again.found and again.complete


def test_other_users_match_a_replay_of_the_log_without_the_user(settings, events, tmp_path):
    victim = newest_user(events)
    build(settings, events)
    erase_user(settings, victim)
    without = Settings(data_dir=tmp_path / "without", pseudonym_key=KEY)
    build(without, [e for e in events if e["user_id"] != victim])
    users = sorted({e["user_id"] for e in events} - {victim})
    with open_event_log(settings) as a, open_event_log(without) as b:
        erased, fresh = Projector(a, settings.state_dir), Projector(b, without.state_dir)
        assert erased.watermark_us == fresh.watermark_us  # the victim's last event is gone
        for user in users:
            pa_, pb = erased.profile(user), fresh.profile(user)
            assert (pa_["as_of"], pa_["features"]) == (pb["as_of"], pb["features"]), user
    pd.testing.assert_frame_equal(snapshot_rows(settings), snapshot_rows(without))


def test_live_projector_erasure_rewrites_its_checkpoint(settings, events) -> None:
    victim = newest_user(events)
    with open_event_log(settings) as log:
        log.append(events)
        projector = Projector(log, settings.state_dir, contributors=[Remember()])
        projector.run()
        projector.checkpoint()
        before = projector.watermark_us
        receipt = erase_user(settings, victim, log=log, projector=projector)
        assert receipt.complete and receipt.stores["projector_state"]["state_rows"] == 1
        with pytest.raises(UnknownUser):
            projector.profile(victim)
        assert projector.watermark_us < before
        assert PSEUDO(victim) not in projector.contributors[0].users
        restarted = Projector(log, settings.state_dir, contributors=[Remember()])
        with pytest.raises(UnknownUser):
            restarted.profile(victim)
        assert restarted.watermark_us == projector.watermark_us
    assert leaks(settings.data_dir, [victim, PSEUDO(victim)]) == {}


def test_checkpoint_parts_are_scrubbed_or_reported_then_retrained(settings, events) -> None:
    victim, other = newest_user(events), events[0]["user_id"]
    build(settings, events, contributors=[Remember()])
    receipt = erase_user(settings, other, contributors=[Remember()])  # scrubs its own part
    assert receipt.complete and receipt.stores["projector_state"]["residue"] == []
    receipt = erase_user(settings, victim, contributors=[Remember(forgets=False)])
    assert not receipt.complete
    residue = receipt.stores["projector_state"]["residue"]
    assert residue == [f"{_current(settings)}/memory/users.pkl"]
    assert any("retrain_models" in note for note in receipt.notes)

    out = retrain_models(settings, contributors=[Remember()])
    assert out["model_versions"] == {"memory": "memory-v1"} and out["old_checkpoints_removed"] == 1
    assert leaks(settings.state_dir, [PSEUDO(victim), PSEUDO(other)]) == {}
    with open_event_log(settings) as log:
        assert out["events"] == log.count()  # every event left, from offset 0
        projector = Projector(log, settings.state_dir, contributors=[Remember()])
        assert None not in projector.state.users.values  # rebuilt: no erased rows left
        assert PSEUDO(victim) not in projector.contributors[0].users
        kept = next(e["user_id"] for e in events if e["user_id"] not in (victim, other))
        body = projector.profile(kept)
        assert body["features"]["event_count"] > 0
    assert not [p for p in settings.state_dir.iterdir() if p.name.startswith(".retrain")]


def _current(settings: Settings) -> str:
    return (settings.state_dir / "CURRENT").read_text().strip()


# -- the REST route ------------------------------------------------------------------------


def erase_in_service(self, user_id: str):
    """What ProfileService.erase should do: the one erasure, under the service's write lock."""
    with self._lock.write():
        receipt = erase_user(self.settings, user_id, log=self.log, projector=self.projector)
        offset = self.projector.offset
    if not receipt.found:
        raise api_service.UnknownUserError(user_id)
    return receipt.stores | {"events": receipt.stores["event_log"]["events"],
                             "receipt_id": receipt.receipt_id}, offset


def test_delete_route_erases_and_a_restart_does_not_bring_the_user_back(tmp_path, monkeypatch):
    monkeypatch.setattr(api_service.ProfileService, "erase", erase_in_service)
    settings = ApiSettings(data_dir=tmp_path / "data", pseudonym_key=KEY)
    events = shop_events(800)
    victim, other = newest_user(events), events[0]["user_id"]
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/events", json={"events": events}).status_code == 200
        kept = client.get(f"/v1/users/{other}/profile").json()["features"]
        r = client.delete(f"/v1/users/{victim}")
        assert r.status_code == 200, r.text
        assert client.get(f"/v1/users/{victim}/profile").status_code == 404
        assert client.delete(f"/v1/users/{victim}").status_code == 404
    replay(settings, progress=False)
    shutil.rmtree(settings.state_dir)  # the next start rebuilds the projection from the log
    with TestClient(create_app(settings)) as client:
        assert client.get(f"/v1/users/{victim}/profile").status_code == 404
        assert client.get(f"/v1/users/{victim}/events").json()["events"] == []
        assert client.get(f"/v1/users/{other}/profile").status_code == 200
    assert leaks(settings.data_dir, [victim, PSEUDO(victim)]) == {}
    assert kept["event_count"] > 0


# -- the online store (Feast) --------------------------------------------------------------


def _online_rows(settings: Settings, users: list[str]) -> dict[str, tuple[int, int]]:
    from offline.feast_online import OnlineWriter

    return OnlineWriter(settings).stored_versions([PSEUDO(u) for u in users])


def _build_online(settings: Settings, events: list[dict]) -> None:
    from offline import feast_store
    from offline.feast_online import OnlineWriter

    feast_store.apply(settings)
    with open_event_log(settings) as log:
        log.append(events)
        projector = Projector(log, settings.state_dir,
                              contributors=[OnlineWriter(settings)])
        projector.run()
        projector.checkpoint()


@pytest.mark.slow
def test_erasure_deletes_the_feast_sqlite_rows(settings) -> None:
    events = shop_events(600)
    users = sorted({e["user_id"] for e in events})
    victim = users[0]
    _build_online(settings, events)
    assert set(_online_rows(settings, users)) == {PSEUDO(u) for u in users}
    receipt = erase_user(settings, victim)
    assert receipt.complete and receipt.stores["online_sqlite"]["rows"] > 0
    assert set(_online_rows(settings, users)) == {PSEUDO(u) for u in users[1:]}
    assert leaks(settings.data_dir, [victim, PSEUDO(victim)]) == {}


@pytest.mark.slow
def test_erasure_deletes_the_redis_key(tmp_path) -> None:
    require_redis()
    # a key of its own: the test's entities cannot collide with anyone else's on a shared Redis
    key = f"redis-test-key-{os.getpid()}-{tmp_path.name}"
    settings = Settings(data_dir=tmp_path / "data", pseudonym_key=key, online_store="redis")
    pseudo = pseudonymizer_from_settings(settings)
    events = shop_events(300)
    users = sorted({e["user_id"] for e in events})
    _build_online(settings, events)
    try:
        from offline.feast_online import OnlineWriter

        def held() -> set[str]:
            # Feast's Redis store reads a missing entity as epoch 0 and empty values, which
            # stored_versions reports as (0, 0): a real row has offset >= 1
            rows = OnlineWriter(settings).stored_versions(pseudo.many(users))
            return {u for u, (offset, _) in rows.items() if offset > 0}

        assert held() == set(pseudo.many(users))
        receipt = erase_user(settings, users[0])
        assert receipt.complete and receipt.stores["online_redis"] == {"keys": 1}
        assert held() == set(pseudo.many(users[1:]))
    finally:
        from offline.feast_online import erase_user_redis

        for user in users:
            erase_user_redis(settings, pseudo(user))


def test_erasure_of_an_unknown_user_finds_nothing(settings) -> None:
    settings.data_dir.mkdir(parents=True)
    with EventLog(settings.event_log_path):
        pass
    receipt = erase_user(settings, "nobody")
    assert not receipt.found and receipt.complete
    line = json.loads((settings.data_dir / "privacy" / "erasures.jsonl").read_text())
    assert line["found"] is False and "nobody" not in json.dumps(line)


def test_erasure_in_an_empty_data_dir_creates_no_log(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path / "empty", pseudonym_key=KEY)
    receipt = erase_user(settings, "nobody")
    assert not receipt.found and receipt.complete
    assert not settings.event_log_path.exists()
