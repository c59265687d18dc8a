"""Served profiles recomputed offline from the log: the sample log and `check_consistency`."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from online.api import ApiSettings, check_consistency, create_app
from online.eventlog import EventLog


def _events(user: str, n: int, day: int = 1) -> list[dict]:
    return [
        {"event_id": f"{user}-{day}-{k}", "user_id": user,
         "type": "purchase" if k % 4 == 3 else "view",
         "ts": f"2024-03-{day:02d}T{k:02d}:15:00+00:00", "item_id": f"i{k % 5}",
         "category": "c1" if k % 2 else "c2", **({"price": 1.25 * k} if k % 4 == 3 else {})}
        for k in range(n)
    ]  # fmt: skip


def test_sampled_profiles_all_recompute_exactly(tmp_path) -> None:
    sample = tmp_path / "served.jsonl"
    settings = ApiSettings(data_dir=tmp_path / "d", profile_sample_path=sample,
                           profile_sample_rate=1.0)
    with TestClient(create_app(settings)) as client:
        client.post("/v1/events", json={"events": _events("u1", 9) + _events("u2", 5)})
        client.get("/v1/users/u1/profile")
        client.get("/v1/users/u2/profile?as_of=2024-03-01T02:00:00Z")
        # later events, some late: the earlier samples must still recompute at their offset
        client.post("/v1/events", json={"events": _events("u1", 4, day=2) + [
            {"event_id": "late", "user_id": "u1", "type": "view", "ts": "2024-03-01T00:00:00Z"}]})
        client.post("/v1/profiles:batch", json={"user_ids": ["u1", "u2"]})
        client.get("/v1/users/u1/profile?features=event_count,decayed_events_1h")
    records = [json.loads(line) for line in sample.read_text().splitlines()]
    assert len(records) == 5
    assert records[0]["offset"] == 14 and records[-1]["offset"] == 19
    with EventLog(settings.event_log_path) as log:
        report = check_consistency(sample, log)
    assert report["profiles"] == 5 and report["mismatched"] == 0, report["mismatches"]
    assert report["share_equal"] == 1.0
    assert report["features"]["event_count"] == {"n": 5, "equal": 5, "share_equal": 1.0}
    assert report["features"]["spend_total"]["n"] == 4  # the last sample asked for two only


def test_a_tampered_value_is_reported(tmp_path) -> None:
    sample = tmp_path / "served.jsonl"
    settings = ApiSettings(data_dir=tmp_path / "d", profile_sample_path=sample,
                           profile_sample_rate=1.0)
    with TestClient(create_app(settings)) as client:
        client.post("/v1/events", json={"events": _events("u1", 6)})
        client.get("/v1/users/u1/profile")
    record = json.loads(sample.read_text())
    record["features"]["spend_total"] += 0.01
    sample.write_text(json.dumps(record) + "\n" + '{"torn line')
    with EventLog(settings.event_log_path) as log:
        report = check_consistency(sample, log)
    assert report["profiles"] == 1 and report["mismatched"] == 1
    (m,) = report["mismatches"]
    assert m["feature"] == "spend_total" and m["served"] == m["recomputed"] + 0.01
    assert report["features"]["spend_total"]["share_equal"] == 0.0


def test_no_sampling_by_default(tmp_path) -> None:
    with TestClient(create_app(ApiSettings(data_dir=tmp_path))) as client:
        client.post("/v1/events", json={"events": _events("u1", 2)})
        client.get("/v1/users/u1/profile")
        assert client.app.state.service.sampler is None
