"""Latest profiles kept serialized: same bytes, one offset, gone when the state moves."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from test_api import history, post

from online.api import ApiSettings, create_app
from online.api.schemas import BatchProfilesResponse, Profile

PROFILE = "/v1/users/{}/profile"


def _metric(client, name: str, **labels) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in labels.items()):
                return sample.value
    return 0.0


def _cache(client) -> tuple[float, float, float]:
    return (_metric(client, "portrait_profile_cache_users"),
            _metric(client, "portrait_profile_cache_hits_total"),
            _metric(client, "portrait_profile_cache_misses_total"))


@pytest.fixture
def client(tmp_path):
    with TestClient(create_app(ApiSettings(data_dir=tmp_path / "data"))) as c:
        post(c, history("u1", 6) + history("u2", 4))
        yield c


def test_a_kept_body_is_the_computed_one_byte_for_byte(client) -> None:
    first = client.get(PROFILE.format("u1"))
    assert first.status_code == 200 and _cache(client) == (1, 0, 1)
    again = client.get(PROFILE.format("u1"))
    assert _cache(client)[1] == 1  # answered from the kept body
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"] == "application/json"
    assert again.content == Profile.model_validate(first.json()).model_dump_json().encode()
    batch = client.post("/v1/profiles:batch", json={"user_ids": ["u2", "u1", "nobody", "u1"]})
    assert batch.status_code == 200
    body = BatchProfilesResponse.model_validate(batch.json())
    assert batch.content == body.model_dump_json().encode()
    assert body.missing == ["nobody"] and [p.user_id for p in body.profiles] == ["u2", "u1"]
    assert body.profiles[1].model_dump_json().encode() == first.content
    # a cut or an as-of profile is computed, never served from the latest body
    cut = client.get(PROFILE.format("u1"), params={"features": "event_count"})
    assert list(cut.json()["features"]) == ["event_count"]


def test_an_ingest_replaces_the_kept_bodies(client) -> None:
    before = client.get(PROFILE.format("u1")).json()
    client.get(PROFILE.format("u1"))
    post(client, [dict(e, event_id=f"more-{e['event_id']}") for e in history("u1", 2,
                                                                               start_h=10)])
    assert _cache(client)[0] == 0
    after = client.get(PROFILE.format("u1")).json()
    assert after["offset"] == before["offset"] + 2
    assert after["features"]["event_count"] == before["features"]["event_count"] + 2


def test_an_erasure_replaces_the_kept_bodies(client) -> None:
    assert client.get(PROFILE.format("u2")).status_code == 200
    assert client.get(PROFILE.format("u2")).status_code == 200
    assert client.delete("/v1/users/u2").status_code == 200
    assert client.get(PROFILE.format("u2")).status_code == 404


def test_kept_bodies_are_served_only_to_a_read_key(tmp_path) -> None:
    settings = ApiSettings(data_dir=tmp_path / "data", api_read_keys=["r"],
                           api_write_keys=["w"])
    with TestClient(create_app(settings)) as c:
        r = c.post("/v1/events", json={"events": history("u1", 3)}, headers={"X-API-Key": "w"})
        assert r.status_code == 200
        ok = c.get(PROFILE.format("u1"), headers={"X-API-Key": "r"})
        assert ok.status_code == 200
        for headers in ({}, {"X-API-Key": "nope"}, {"Authorization": "Bearer nope"},
                        {"Authorization": "Basic r"}):
            assert c.get(PROFILE.format("u1"), headers=headers).status_code == 401
        bearer = c.get(PROFILE.format("u1"), headers={"Authorization": "Bearer r"})
        assert bearer.content == ok.content
        scrape = c.get("/metrics", headers={"X-API-Key": "r"}).text
        assert 'portrait_profile_cache_hits_total 1.0' in scrape
        route = {"method": "GET", "route": "/v1/users/{user_id}/profile", "status": "200"}
        timed = [s for f in text_string_to_metric_families(scrape) for s in f.samples
                 if s.name == "portrait_http_request_duration_seconds_count"
                 and all(s.labels.get(k) == v for k, v in route.items())]
        assert timed and timed[0].value == 2  # both lookups counted under the template


def test_with_the_cache_off_every_lookup_is_computed(tmp_path) -> None:
    settings = ApiSettings(data_dir=tmp_path / "data", profile_cache_users=0)
    with TestClient(create_app(settings)) as c:
        post(c, history("u1", 3))
        bodies = {c.get(PROFILE.format("u1")).content for _ in range(3)}
        assert len(bodies) == 1
        assert _cache(c) == (0, 0, 3)


def test_kept_entries_hold_the_body_dict_only_for_the_sampler(tmp_path) -> None:
    plain = ApiSettings(data_dir=tmp_path / "a")
    sampled = ApiSettings(data_dir=tmp_path / "b", profile_sample_path=tmp_path / "s.jsonl",
                          profile_sample_rate=1.0)
    for settings, kept_body in ((plain, False), (sampled, True)):
        with TestClient(create_app(settings)) as c:
            post(c, history("u1", 3))
            first = c.get(PROFILE.format("u1")).content
            assert c.get(PROFILE.format("u1")).content == first  # the kept bytes
            body, data = c.app.state.service.cache.entries["u1"]
            assert data == first and (body is not None) == kept_body
    # the sampler records the kept hit as it records the computed lookup
    records = (tmp_path / "s.jsonl").read_text().splitlines()
    assert len(records) == 2 and records[0] == records[1]


def test_a_reopened_server_starts_with_no_kept_bodies(tmp_path) -> None:
    settings = ApiSettings(data_dir=tmp_path / "data")
    with TestClient(create_app(settings)) as c:
        post(c, history("u1", 3) + history("u2", 4))
        before = c.get(PROFILE.format("u2")).content
        assert c.delete("/v1/users/u1").status_code == 200  # the state's first row erased
    # the warm-up at open computes the first row's profile and keeps nothing
    with TestClient(create_app(settings)) as c:
        assert _cache(c) == (0, 0, 0)
        assert c.get(PROFILE.format("u2")).content == before
        assert _cache(c) == (1, 0, 1)


def test_the_server_freezes_its_heap_while_it_runs(tmp_path) -> None:
    import gc

    assert gc.get_freeze_count() == 0
    with TestClient(create_app(ApiSettings(data_dir=tmp_path / "a"))):
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0  # unfrozen at close: the objects are collectable again
    with TestClient(create_app(ApiSettings(data_dir=tmp_path / "b", gc_freeze=False))):
        assert gc.get_freeze_count() == 0


BATCH = "/v1/profiles:batch"


def test_a_batch_of_kept_bodies_is_the_computed_one_byte_for_byte(client) -> None:
    computed = client.post(BATCH, json={"user_ids": ["u2", "u1", "u2"]})
    assert computed.status_code == 200 and _cache(client) == (2, 0, 2)
    kept = client.post(BATCH, json={"user_ids": ["u2", "u1", "u2"]})
    assert kept.content == computed.content and _cache(client) == (2, 2, 2)
    service = client.app.state.service
    assert service.cached_batch(["u2", "u1"]) is not None  # all kept: answered before routing
    assert kept.headers["content-type"] == "application/json"
    body = BatchProfilesResponse.model_validate(kept.json())
    assert body.offset == service.offset and body.missing == []
    assert _metric(client, "portrait_http_request_duration_seconds_count", method="POST",
                   route=BATCH, status="200") == 2
    # a cut, an unknown user or a bad body goes to the route, which answers as before
    cut = client.post(BATCH, json={"user_ids": ["u1"], "features": ["event_count"]})
    assert list(cut.json()["profiles"][0]["features"]) == ["event_count"]
    assert client.post(BATCH, json={"user_ids": ["u1", "nobody"]}).json()["missing"] == [
        "nobody"]
    for bad in ({"user_ids": []}, {"user_ids": ["u1"], "extra": 1}, {"user_ids": "u1"}):
        r = client.post(BATCH, json=bad)
        assert r.status_code == 422, bad
        assert "user_ids" in r.text or "extra" in r.text
    raw = b'{"user_ids": ["u2", "u1", "u2"]}'
    # FastAPI reads a body of another type as bytes: still its 422, never a kept answer
    assert client.post(BATCH, content=raw, headers={"content-type": "text/plain"}
                       ).status_code == 422
    assert client.post(BATCH, content=raw, headers={
        "content-type": "application/json; charset=utf-8"}).content == computed.content
    assert client.post(BATCH, content=b"{", headers={"content-type": "application/json"}
                       ).status_code == 422


def test_a_kept_batch_answers_at_the_offset_it_was_kept_at(tmp_path) -> None:
    settings = ApiSettings(data_dir=tmp_path / "data", max_batch_users=2)
    with TestClient(create_app(settings)) as c:
        post(c, history("u1", 3) + history("u2", 4))
        first = c.post(BATCH, json={"user_ids": ["u1", "u2"]}).json()
        assert c.post(BATCH, json={"user_ids": ["u1", "u2"]}).json() == first
        # the limit counts the ids asked, before de-duplication, as the route does
        assert c.post(BATCH, json={"user_ids": ["u1", "u2", "u1"]}).status_code == 413
        post(c, [dict(e, event_id=f"more-{e['event_id']}") for e in history("u1", 2)])
        moved = c.post(BATCH, json={"user_ids": ["u1", "u2"]}).json()
        assert moved["offset"] == first["offset"] + 2
        assert c.post(BATCH, json={"user_ids": ["u1", "u2"]}).json() == moved
    with TestClient(create_app(settings)) as c:  # reopened: the map of the loaded offset
        assert c.post(BATCH, json={"user_ids": ["u2"]}).json()["offset"] == moved["offset"]
        again = c.post(BATCH, json={"user_ids": ["u2"]})
        assert again.json()["offset"] == moved["offset"] == c.app.state.service.offset


def test_a_kept_batch_needs_a_read_key_and_is_sampled(tmp_path) -> None:
    sample = tmp_path / "s.jsonl"
    settings = ApiSettings(data_dir=tmp_path / "data", api_read_keys=["r"],
                           api_write_keys=["w"], profile_sample_path=sample,
                           profile_sample_rate=1.0)
    with TestClient(create_app(settings)) as c:
        r = c.post("/v1/events", json={"events": history("u1", 3)}, headers={"X-API-Key": "w"})
        assert r.status_code == 200
        ask = {"user_ids": ["u1"]}
        ok = c.post(BATCH, json=ask, headers={"X-API-Key": "r"})
        assert ok.status_code == 200
        for headers in ({}, {"X-API-Key": "nope"}, {"Authorization": "Bearer nope"}):
            assert c.post(BATCH, json=ask, headers=headers).status_code == 401
        kept = c.post(BATCH, json=ask, headers={"Authorization": "Bearer r"})
        assert kept.content == ok.content
    records = sample.read_text().splitlines()
    assert len(records) == 2 and records[0] == records[1]  # the computed and the kept


def test_a_miss_is_computed_before_routing_unless_a_projection_holds_the_state(
        client, monkeypatch) -> None:
    """A latest profile not yet kept is computed by the fast path (no thread-pool hop)
    while the state is free; while a projection holds or waits for it, the route computes
    it in the thread pool, after the projection, with the same bytes."""
    import threading

    from online.api.routes import profiles as route

    routed: list[str] = []
    compute = route._latest_json
    monkeypatch.setattr(route, "_latest_json",
                        lambda service, user: routed.append(user) or compute(service, user))
    first = client.get(PROFILE.format("u1"))
    assert first.status_code == 200 and routed == [] and _cache(client)[2] == 1
    service = client.app.state.service
    service.cache.invalidate(service.offset)  # as a projection leaves it: nothing kept
    held, answered = threading.Event(), []
    lock = service._lock

    def projection() -> None:
        with lock.write():
            held.set()
            for _ in range(500):  # hold until the lookup has gone to the route (5 s at most)
                if routed:
                    break
                threading.Event().wait(0.01)
            threading.Event().wait(0.05)
            answered.append(len(routed))

    worker = threading.Thread(target=projection)
    worker.start()
    held.wait(5)
    during = client.get(PROFILE.format("u1"))
    worker.join(5)
    assert routed == ["u1"] and answered == [1]  # the route waited for the projection
    assert during.status_code == 200 and during.content == first.content
    # an unknown user is the route's 404, as before
    assert client.get(PROFILE.format("nobody")).status_code == 404
