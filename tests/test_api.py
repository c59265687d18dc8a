"""The REST API: every route and its errors, read-your-writes, as-of equality, batch reads."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from online.api import ApiSettings, create_app
from online.clock import parse_time
from online.eventlog import EventLog
from online.projector import ProfileContributor, Projector, features_as_of

T0 = "2024-03-01T10:00:00+00:00"
JSON = {"content-type": "application/json"}


def ev(event_id: str, user: str = "u1", type: str = "view", ts: str = T0, **extra) -> dict:
    return {"event_id": event_id, "user_id": user, "type": type, "ts": ts, **extra}


def history(user: str, n: int, *, start_h: int = 0) -> list[dict]:
    """n events of ``user``, one per hour, views with a purchase every third event."""
    out = []
    for k in range(n):
        ts = f"2024-03-01T{start_h + k:02d}:00:00+00:00"
        if k % 3 == 2:
            out.append(ev(f"{user}-{k}", user, "purchase", ts, price=2.5, quantity=2,
                          item_id=f"sku-{k}", category="toys"))
        else:
            out.append(ev(f"{user}-{k}", user, "view", ts, item_id=f"sku-{k}", category="books"))
    return out


@pytest.fixture
def settings(tmp_path) -> ApiSettings:
    return ApiSettings(data_dir=tmp_path / "data", max_batch_events=50, max_batch_users=20,
                       max_body_bytes=8 * 1024)


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as c:
        yield c


def post(client, events) -> dict:
    r = client.post("/v1/events", json={"events": events})
    assert r.status_code == 200, r.text
    return r.json()


def assert_problem(r, status: int, field: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["title"] and body["detail"] and body["type"]
    if field is not None:
        assert body["field"] == field, body
    return body


# -- ingest ---------------------------------------------------------------------------------


def test_one_event_then_its_profile_reflects_it(client) -> None:
    r = client.post("/v1/events", json=ev("e1", type="purchase", price=3.5, quantity=2))
    assert r.status_code == 200
    assert r.json() == {"accepted": 1, "duplicates": 0, "rejected": 0, "offset": 1,
                        "first_offset": 0, "last_offset": 0, "outcomes": []}
    profile = client.get("/v1/users/u1/profile").json()
    assert profile["offset"] == 1
    f = profile["features"]
    assert (f["event_count"], f["purchase_count"], f["spend_total"]) == (1, 1, 7.0)
    assert f["refund_total"] == 0.0
    assert f["last_event_ts"] == f["last_purchase_ts"] == T0
    assert profile["as_of"] == T0 and profile["event_time"] == T0


def test_read_your_writes_after_every_post(client) -> None:
    for k in range(5):
        body = post(client, [ev(f"e{k}", ts=f"2024-03-01T1{k}:00:00+00:00")])
        profile = client.get("/v1/users/u1/profile").json()
        assert profile["offset"] == body["offset"] == k + 1
        assert profile["features"]["event_count"] == k + 1


def test_bad_events_are_rejected_by_index_and_good_ones_kept(client) -> None:
    events = [
        ev("a"),
        ev("b", ts="2024-03-01T10:00:00"),  # naive time
        ev("c", type="purchase"),  # price missing
        {**ev("d"), "colour": "red"},  # unknown field
        "not an object",
        ev("a"),  # duplicate within the batch
        ev("e", type="refund", price=1.0),
    ]
    body = client.post("/v1/events?outcomes=all", json={"events": events}).json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 1, 4)
    by_index = {o["index"]: o for o in body["outcomes"]}
    assert [by_index[i]["status"] for i in range(7)] == [
        "accepted", "rejected", "rejected", "rejected", "rejected", "duplicate", "accepted",
    ]
    assert [by_index[i]["field"] for i in (1, 2, 3)] == ["ts", "price", "colour"]
    assert all(by_index[i]["reason"] for i in (1, 2, 3, 4))
    assert by_index[5]["offset"] == by_index[0]["offset"] == 0
    assert (body["first_offset"], body["last_offset"], body["offset"]) == (0, 1, 2)
    # default: only the problems are listed
    again = post(client, events)
    assert (again["accepted"], again["duplicates"]) == (0, 3)
    assert [o["index"] for o in again["outcomes"]] == [0, 1, 2, 3, 4, 5, 6]
    assert all(o["status"] != "accepted" for o in again["outcomes"])


def test_resending_a_batch_applies_it_once(client) -> None:
    events = history("u1", 6)
    post(client, events)
    first = client.get("/v1/users/u1/profile").json()
    again = post(client, events)
    assert (again["accepted"], again["duplicates"]) == (0, 6)
    assert client.get("/v1/users/u1/profile").json() == first


def test_too_many_events_is_413(client, settings) -> None:
    n = settings.max_batch_events + 1
    body = assert_problem(client.post("/v1/events", json={"events": [ev(f"x{i}") for i in
                                                                      range(n)]}), 413, "events")
    assert str(settings.max_batch_events) in body["detail"]
    assert client.get("/v1/users/u1/profile").status_code == 404  # nothing appended


def test_too_large_a_body_is_413_declared_or_streamed(client, settings) -> None:
    big = json.dumps({"events": [ev("x" * 100 + str(i)) for i in range(49)]}).encode()
    assert len(big) > settings.max_body_bytes
    assert_problem(client.post("/v1/events", content=big, headers=JSON), 413)

    def chunks():  # no Content-Length: counted as it streams
        for start in range(0, len(big), 4096):
            yield big[start:start + 4096]

    assert_problem(client.post("/v1/events", content=chunks(), headers=JSON), 413)
    assert_problem(client.post("/v1/profiles:batch", content=chunks()), 413)


@pytest.mark.parametrize("content", [b"{not json", b"[]", b"42", b'{"events": 3}',
                                     b'{"events": [], "more": 1}', b"\xff\xfe"])
def test_a_body_that_is_no_event_is_422(client, content: bytes) -> None:
    assert_problem(client.post("/v1/events", content=content, headers=JSON), 422)


# -- profiles -------------------------------------------------------------------------------


def test_unknown_user_is_404(client) -> None:
    post(client, history("u1", 2))
    assert_problem(client.get("/v1/users/nobody/profile"), 404, "user_id")
    assert_problem(client.get("/v1/users/u1/profile?as_of=2023-01-01T00:00:00Z"), 404)


def test_unknown_feature_is_422_naming_it(client) -> None:
    post(client, history("u1", 2))
    body = assert_problem(
        client.get("/v1/users/u1/profile?features=event_count,no_such_thing"), 422, "features")
    assert "no_such_thing" in body["detail"] and body["unknown"] == ["no_such_thing"]
    r = client.post("/v1/profiles:batch", json={"user_ids": ["u1"], "features": ["nope"]})
    assert "nope" in assert_problem(r, 422, "features")["detail"]


@pytest.mark.parametrize("as_of", ["yesterday", "2024-03-01T10:00:00", "2024-13-01", "1e9"])
def test_bad_as_of_is_422(client, as_of: str) -> None:
    post(client, history("u1", 2))
    assert_problem(client.get("/v1/users/u1/profile", params={"as_of": as_of}), 422, "as_of")
    r = client.post("/v1/profiles:batch", json={"user_ids": ["u1"], "as_of": as_of})
    assert_problem(r, 422, "as_of")


def test_feature_selection(client) -> None:
    post(client, history("u1", 3))
    body = client.get("/v1/users/u1/profile?features=spend_total,event_count").json()
    assert body["features"] == {"spend_total": 5.0, "event_count": 3}


def test_latest_profile_equals_a_fresh_replay(client, settings, tmp_path) -> None:
    post(client, history("u1", 7) + history("u2", 4, start_h=3))
    served = client.get("/v1/users/u1/profile").json()
    log = client.app.state.service.log
    fresh = Projector(log, tmp_path / "fresh-state")
    fresh.run()
    assert served["features"] == fresh.profile("u1")["features"]
    assert served["offset"] == fresh.offset == 11


@pytest.mark.parametrize("as_of", ["2024-03-01T03:30:00+00:00", "2024-03-01T05:00:00+00:00",
                                   "2024-03-02", "2024-03-01T06:00:00+02:00"])
def test_as_of_profile_equals_features_as_of(client, as_of: str) -> None:
    post(client, history("u1", 7))
    post(client, [ev("late", "u1", "purchase", "2024-03-01T01:30:00+00:00", price=9.0)])
    body = client.get("/v1/users/u1/profile", params={"as_of": as_of}).json()
    t_us = parse_time(as_of)
    expected = features_as_of(client.app.state.service.log, "u1", t_us)
    assert body["features"] == expected.to_json()
    assert body["offset"] == expected.offset
    assert parse_time(body["as_of"]) == t_us
    assert body["model_source"] in {"current", "as_of", "checkpoint"}


def test_batch_profiles_share_one_offset(client) -> None:
    post(client, history("u1", 4) + history("u2", 2, start_h=9))
    r = client.post("/v1/profiles:batch", json={"user_ids": ["u2", "ghost", "u1"],
                                                "features": ["event_count"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["missing"] == ["ghost"]
    assert [p["user_id"] for p in body["profiles"]] == ["u2", "u1"]
    assert [p["features"] for p in body["profiles"]] == [{"event_count": 2}, {"event_count": 4}]
    assert {p["offset"] for p in body["profiles"]} == {body["offset"]} == {6}
    # the batch path evaluates users together; it must equal the one-user path exactly
    full = client.post("/v1/profiles:batch", json={"user_ids": ["u1", "u2"]}).json()
    assert full["profiles"] == [client.get(f"/v1/users/{u}/profile").json() for u in ("u1", "u2")]


def test_batch_profiles_as_of_and_limits(client, settings) -> None:
    post(client, history("u1", 4))
    r = client.post("/v1/profiles:batch",
                    json={"user_ids": ["u1"], "as_of": "2024-03-01T01:30:00+00:00"})
    assert r.json()["profiles"][0]["features"]["event_count"] == 2
    too_many = [f"u{i}" for i in range(settings.max_batch_users + 1)]
    assert_problem(client.post("/v1/profiles:batch", json={"user_ids": too_many}), 413)
    assert_problem(client.post("/v1/profiles:batch", json={"user_ids": []}), 422, "user_ids")
    assert_problem(client.post("/v1/profiles:batch", json={"users": ["u1"]}), 422)


# -- history and erasure --------------------------------------------------------------------


def test_history_is_newest_first_with_limit_and_before(client) -> None:
    post(client, history("u1", 6) + history("u2", 2))
    body = client.get("/v1/users/u1/events?limit=4").json()
    assert [e["event_id"] for e in body["events"]] == ["u1-5", "u1-4", "u1-3", "u1-2"]
    assert body["events"][0]["offset"] == 5 and body["events"][3]["type"] == "purchase"
    assert body["events"][3]["price"] == 2.5 and body["events"][1]["price"] is None
    nxt = client.get("/v1/users/u1/events", params={"limit": 4, "cursor": body["next_cursor"]})
    assert [e["event_id"] for e in nxt.json()["events"]] == ["u1-1", "u1-0"]
    assert nxt.json()["next_cursor"] is None
    before = client.get("/v1/users/u1/events", params={"before": "2024-03-01T03:00:00Z"})
    assert [e["event_id"] for e in before.json()["events"]] == ["u1-2", "u1-1", "u1-0"]
    assert client.get("/v1/users/ghost/events").json()["events"] == []
    for limit in (0, 1001, -1):
        assert_problem(client.get(f"/v1/users/u1/events?limit={limit}"), 422, "limit")
    assert_problem(client.get("/v1/users/u1/events?before=soon"), 422)


def test_erase_user_removes_events_and_profile(client) -> None:
    post(client, history("u1", 3) + history("u2", 2))
    r = client.delete("/v1/users/u1")
    assert r.status_code == 200, r.text
    assert r.json()["erased"]["events"] == 3
    assert_problem(client.get("/v1/users/u1/profile"), 404)
    assert client.get("/v1/users/u1/events").json()["events"] == []
    assert client.get("/v1/users/u2/profile").json()["features"]["event_count"] == 2
    assert_problem(client.delete("/v1/users/u1"), 404)


def test_an_erasure_survives_a_restart(settings) -> None:
    with TestClient(create_app(settings)) as client:
        post(client, history("u1", 3) + history("u2", 2))
        client.app.state.service._checkpoint(force=True)  # u1 is in the last checkpoint
        assert client.delete("/v1/users/u1").status_code == 200
    with TestClient(create_app(settings)) as client:
        assert_problem(client.get("/v1/users/u1/profile"), 404)
        assert client.get("/v1/users/u2/profile").status_code == 200


def test_erasure_with_the_every_store_eraser(settings) -> None:
    from offline.privacy.erasure import erase_user

    def eraser(s, user_id, log, projector):
        return erase_user(s, user_id, log=log, projector=projector).as_dict()

    with TestClient(create_app(settings, eraser=eraser)) as client:
        post(client, history("u1", 3) + history("u2", 2))
        body = client.delete("/v1/users/u1").json()
        assert body["erased"]["found"] and body["erased"]["complete"]
        assert body["erased"]["stores"]["event_log"]["events"] == 3
        assert_problem(client.get("/v1/users/u1/profile"), 404)
        assert_problem(client.delete("/v1/users/u1"), 404)


# -- operations -----------------------------------------------------------------------------


def test_health_and_readiness(client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    post(client, history("u1", 2))
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready" and ready.json()["lag_events"] == 0


def test_readiness_fails_when_the_projector_lags(tmp_path) -> None:
    settings = ApiSettings(data_dir=tmp_path, ready_max_lag_events=0)
    with TestClient(create_app(settings)) as client:
        # another writer appends behind the server's back while projection is held still
        with client.app.state.service._lock.write():
            with EventLog(settings.event_log_path) as other:
                other.append(history("u9", 2))
            r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["lag_events"] == 2


def test_metrics_text_parses_and_counts(client) -> None:
    post(client, history("u1", 3) + [ev("bad", ts="nope")])
    client.get("/v1/users/u1/profile")
    client.get("/v1/users/ghost/profile")
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    events = {s.labels["outcome"]: s.value for s in families["portrait_events"].samples
              if s.name == "portrait_events_total"}
    assert events == {"accepted": 3.0, "duplicate": 0.0, "rejected": 1.0}
    routes = {(s.labels["route"], s.labels["status"])
              for s in families["portrait_http_request_duration_seconds"].samples}
    assert ("/v1/users/{user_id}/profile", "200") in routes
    assert ("/v1/users/{user_id}/profile", "404") in routes
    assert families["portrait_projector_lag_events"].samples[0].value == 0
    assert families["portrait_projector_offset"].samples[0].value == 3
    assert "portrait_projector_lag_seconds" in families


def test_features_catalogue(client) -> None:
    names = [f["name"] for f in client.get("/v1/features").json()]
    assert {"event_count", "purchase_count", "spend_total", "refund_total", "last_event_ts",
            "last_purchase_ts"} <= set(names)


def test_unknown_route_and_method_are_problems(client) -> None:
    assert_problem(client.get("/v2/nothing"), 404)
    assert_problem(client.put("/v1/events", json={}), 405)


def test_checkpoint_on_shutdown_and_resume(settings) -> None:
    with TestClient(create_app(settings)) as client:
        post(client, history("u1", 5))
        before = client.get("/v1/users/u1/profile").json()
    assert (settings.state_dir / "CURRENT").exists()
    with TestClient(create_app(settings)) as client:
        assert client.app.state.service.offset == 5
        assert client.get("/v1/users/u1/profile").json() == before


class _CountingModel(ProfileContributor):
    """A stand-in model: fills segment/propensity from the features, exposes stats."""

    name = "fake_model"

    def __init__(self) -> None:
        self.seen = 0

    def on_batch(self, projector, batch, user_idx, eff_ts) -> None:
        self.seen += len(batch)

    def contribute(self, body, features) -> None:
        body["segment"] = {"id": 1, "label": "busy"}
        body["propensity"] = {"score": 0.25, "horizon": "7d", "top_features": []}
        body["model_version"] = f"fake-{self.seen}"

    def stats(self) -> dict:
        return {"pending": {"labels": 3}, "events_seen": self.seen}


def test_projector_factory_adds_model_outputs_and_metrics(tmp_path) -> None:
    def factory(log, settings):
        return Projector(log, settings.state_dir, contributors=[_CountingModel()])

    with TestClient(create_app(ApiSettings(data_dir=tmp_path), projector_factory=factory)) as c:
        post(c, history("u1", 4))
        body = c.get("/v1/users/u1/profile").json()
        assert body["segment"]["label"] == "busy" and body["propensity"]["score"] == 0.25
        assert body["model_version"] == "fake-4" and body["model_source"] == "current"
        batch = c.post("/v1/profiles:batch", json={"user_ids": ["u1"]}).json()["profiles"]
        assert batch == [body]
        families = {f.name: f for f in text_string_to_metric_families(c.get("/metrics").text)}
        assert families["portrait_fake_model_pending_labels"].samples[0].value == 3
        assert families["portrait_fake_model_events_seen"].samples[0].value == 4
