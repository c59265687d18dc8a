"""Pseudonymization and data minimisation: no raw id (and no key) anywhere in the data dir."""

from __future__ import annotations

import hashlib
import logging
import pickle
import re

import pytest
from fastapi.testclient import TestClient
from helpers.privacy import KEY, N_USERS, leaks, raw_id, shop_events  # noqa: F401

from offline.backfill.replay import replay
from online.api import ApiSettings, create_app
from online.eventlog import EventLog
from online.events import InvalidEvent, validate_event
from online.privacy import (
    Pseudonymizer,
    PseudonymKeyError,
    PseudonymKeyMismatch,
    UnkeyedDataDir,
    load_pseudonym_key,
    open_event_log,
    pseudonymizer_from_settings,
)
from online.projector import Projector, UnknownUser, features_as_of
from online.settings import Settings


def bad_events() -> list[dict]:
    """Rejected payloads that carry a raw id in every place one could hide."""
    ts = "2024-01-02T00:00:00+00:00"
    return [
        {"event_id": "bad-1", "user_id": raw_id(1), "type": "purchase", "ts": ts},  # no price
        {"event_id": "bad-2", "user_id": raw_id(2), "type": "view", "ts": ts,
         "email": f"{raw_id(2)}@example.com"},
        {"event_id": "bad-3", "user_id": raw_id(3) * 12, "type": "view", "ts": ts},  # too long
        {"event_id": "bad-4", "user_id": {"id": raw_id(4)}, "type": "view", "ts": ts},
    ]





@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data", pseudonym_key=KEY)


def ingest_and_project(settings: Settings, events: list[dict]) -> Projector:
    with open_event_log(settings) as log:
        log.append(events + bad_events())
        projector = Projector(log, settings.state_dir)
        projector.run()
        projector.checkpoint()
    return projector


# -- the pseudonymizer ---------------------------------------------------------------------


def test_pseudonyms_are_keyed_stable_and_not_a_plain_hash() -> None:
    p, q = Pseudonymizer(KEY.encode()), Pseudonymizer(b"another key of enough length")
    assert p("alice") == p("alice") and p("alice") != p("bob") and p("alice") != q("alice")
    assert re.fullmatch(r"ps_[0-9a-f]{32}", p("alice"))
    plain = {hashlib.sha256(b"alice").hexdigest(), hashlib.md5(b"alice").hexdigest()}
    assert not any(p("alice")[3:] in h for h in plain)  # cannot be enumerated without the key
    assert p.many(["a", "b"]) == [p("a"), p("b")]
    assert KEY not in repr(p) and p.key_id in repr(p)


def test_pseudonymizer_never_pickles_its_key() -> None:
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(Pseudonymizer(KEY.encode()))


def test_weak_or_ambiguous_keys_are_refused(tmp_path) -> None:
    with pytest.raises(PseudonymKeyError, match="at least 16"):
        Pseudonymizer(b"short")
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    with pytest.raises(PseudonymKeyError, match="set one"):
        load_pseudonym_key(Settings(data_dir=tmp_path / "d", pseudonym_key=KEY,
                                    pseudonym_key_file=key_file))
    inside = tmp_path / "d" / "key"
    inside.parent.mkdir()
    inside.write_text(KEY)
    with pytest.raises(PseudonymKeyError, match="inside the data dir"):
        load_pseudonym_key(Settings(data_dir=tmp_path / "d", pseudonym_key_file=inside))
    with pytest.raises(PseudonymKeyError, match="cannot read"):
        load_pseudonym_key(Settings(data_dir=tmp_path / "d", pseudonym_key_file=tmp_path / "no"))


def test_key_file_gives_the_same_pseudonyms_as_the_env_key(tmp_path, caplog) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="portrait.privacy"):
        from_file = pseudonymizer_from_settings(
            Settings(data_dir=tmp_path / "a", pseudonym_key_file=key_file))
    assert "readable by group or others" in caplog.text and KEY not in caplog.text
    from_env = pseudonymizer_from_settings(Settings(data_dir=tmp_path / "b", pseudonym_key=KEY))
    assert from_file("alice") == from_env("alice")
    assert pseudonymizer_from_settings(Settings(data_dir=tmp_path / "c")) is None


def test_data_dir_refuses_another_key_no_key_or_a_raw_log(tmp_path) -> None:
    keyed = Settings(data_dir=tmp_path / "keyed", pseudonym_key=KEY)
    assert pseudonymizer_from_settings(keyed) is not None  # records the fingerprint
    marker = (keyed.data_dir / "privacy" / "pseudonym.json").read_text()
    assert KEY not in marker
    other = Settings(data_dir=keyed.data_dir, pseudonym_key="a different key, long enough")
    with pytest.raises(PseudonymKeyMismatch, match="not the key"):
        pseudonymizer_from_settings(other)
    with pytest.raises(PseudonymKeyMismatch, match="no pseudonym key"):
        pseudonymizer_from_settings(Settings(data_dir=keyed.data_dir))
    raw = Settings(data_dir=tmp_path / "raw")
    raw.data_dir.mkdir()
    with EventLog(raw.event_log_path) as log:
        log.append(shop_events(10))
    with pytest.raises(UnkeyedDataDir):
        pseudonymizer_from_settings(Settings(data_dir=raw.data_dir, pseudonym_key=KEY))


# -- data minimisation ---------------------------------------------------------------------


def test_schema_rejects_free_text_fields_and_quarantine_redacts_them(settings) -> None:
    payload = {"event_id": "e1", "user_id": "alice", "type": "view",
               "ts": "2024-01-01T00:00:00Z", "email": "alice@example.com"}
    with pytest.raises(InvalidEvent) as info:
        validate_event(payload)
    assert info.value.field == "email" and info.value.rule == "unknown_field"
    with open_event_log(settings) as log:
        result = log.append([payload, {**payload, "email": None, "event_id": "e2"}])
        assert result.rejected == 2 and result.accepted == 0
        rows = log.read_quarantine()
    assert [r["field"] for r in rows] == ["email", "email"]
    text = " ".join(r["raw"] + r["reason"] for r in rows)
    assert "alice" not in text and '"email": "<redacted>"' in text


def test_lookups_take_raw_ids(settings) -> None:
    projector = ingest_and_project(settings, shop_events())
    user = raw_id(7)
    with open_event_log(settings) as log:
        stored = log.stored_user_id(user)
        assert stored == Pseudonymizer(KEY.encode())(user)
        assert len(log.read_user(stored)) > 0 and len(log.read_user(user)) == 0
        live = Projector(log, settings.state_dir)
        body = live.profile(user)
        assert body["user_id"] == user and body["features"]["event_count"] > 0
        as_of = features_as_of(log, user, live.watermark_us)
        assert as_of.values["event_count"] == body["features"]["event_count"]
        with pytest.raises(UnknownUser):
            live.profile(stored)  # a pseudonym is not a raw id: it is mapped again
    assert projector.state.user_index(stored) is not None


# -- the raw-id search ---------------------------------------------------------------------


def test_no_raw_id_or_key_in_the_data_dir_after_ingest_and_replay(settings, tmp_path) -> None:
    events = shop_events()
    users = sorted({e["user_id"] for e in events})
    needles = users + [raw_id(k) for k in range(1, 5)] + [KEY]
    ingest_and_project(settings, events)
    assert leaks(settings.data_dir, needles) == {}
    pseudonyms = Pseudonymizer(KEY.encode()).many(users)
    assert set(leaks(settings.data_dir, pseudonyms)) >= {"events.db"}  # the search does work

    summary = replay(settings, progress=False, chunk_events=1_000)
    assert summary.rows > 0
    assert leaks(settings.data_dir, needles) == {}
    assert any(p.startswith("offline/") for p in leaks(settings.data_dir, pseudonyms))

    control = Settings(data_dir=tmp_path / "unkeyed")  # the same pipeline without a key
    ingest_and_project(control, events)
    replay(control, progress=False)
    found = leaks(control.data_dir, users)
    assert "events.db" in found and any(p.startswith("offline/") for p in found)


@pytest.mark.slow
def test_no_raw_id_in_the_data_dir_after_materialize(settings) -> None:
    from offline import feast_store

    events = shop_events(1_500)
    users = sorted({e["user_id"] for e in events})
    ingest_and_project(settings, events)
    replay(settings, progress=False)
    feast_store.materialize(settings)
    assert settings.online_store_path.exists() and settings.registry_path.exists()
    assert leaks(settings.data_dir, users + [KEY]) == {}
    assert "online.db" in leaks(settings.data_dir, Pseudonymizer(KEY.encode()).many(users))


def test_no_raw_id_after_ingest_through_the_api(tmp_path) -> None:
    settings = ApiSettings(data_dir=tmp_path / "data", pseudonym_key=KEY,
                           profile_sample_path=tmp_path / "data" / "samples.jsonl",
                           profile_sample_rate=0.0)
    events = shop_events(600)
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/events", json={"events": events + bad_events()})
        assert r.status_code == 200 and r.json()["rejected"] == 4, r.text
        user = events[0]["user_id"]
        profile = client.get(f"/v1/users/{user}/profile")
        assert profile.status_code == 200 and profile.json()["user_id"] == user
        history = client.get(f"/v1/users/{user}/events").json()["events"]
        assert history and all(e["user_id"] == user for e in history)
    users = sorted({e["user_id"] for e in events})
    assert leaks(settings.data_dir, users + [KEY]) == {}
