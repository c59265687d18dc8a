"""As-of batches: one profile path, de-duplicated ids, bounded work, and no stall of latest reads.

The issue: POST /v1/profiles:batch with as_of recomputed each listed user under the
projector's read lock; the lock prefers writers, so an ingest waiting behind it blocked every
new read. Here the as-of recomputation of a heavy user is held still mid-way (a gate on the
log read) while an ingest and a latest GET must still complete: progress, not timings.
"""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient

from online.api.main import create_app
from online.api.settings import ApiSettings

HEAVY = "heavy"


def _events(n: int, user: str, prefix: str) -> list[dict]:
    return [{"event_id": f"{prefix}{k}", "user_id": user, "type": "view",
             "ts": f"2024-01-01T{k // 3600 % 24:02d}:{k // 60 % 60:02d}:{k % 60:02d}Z",
             "item_id": f"i{k % 50}"} for k in range(n)]


def _app(tmp_path, **extra) -> TestClient:
    settings = ApiSettings(data_dir=tmp_path / "d", **extra)
    return TestClient(create_app(settings))


def test_as_of_batch_does_not_block_latest_reads_or_ingest(tmp_path) -> None:
    with _app(tmp_path) as client:
        for chunk in range(4):
            day = [{**e, "ts": e["ts"].replace("2024-01-01", f"2024-01-0{chunk + 1}")}
                   for e in _events(5_000, HEAVY, f"h{chunk}-")]  # days 1 to 4
            assert client.post("/v1/events", json={"events": day}).status_code == 200
        assert client.post("/v1/events", json={"events": _events(3, "light", "l")}).status_code \
            == 200
        service = client.app.state.service
        log = service.log
        real_read_user, reads = log.read_user, []
        entered, release = threading.Event(), threading.Event()

        def gated_read_user(user_id, **kwargs):
            reads.append(user_id)
            if user_id == HEAVY and not release.is_set():
                entered.set()
                release.wait(60)  # the as-of work of the heavy user, held still
            return real_read_user(user_id, **kwargs)

        log.read_user = gated_read_user
        try:
            result: dict = {}

            def as_of_batch() -> None:
                result["r"] = client.post("/v1/profiles:batch", json={
                    "user_ids": [HEAVY] * 30 + ["light"], "as_of": "2024-01-03T00:00:00Z"})

            batch = threading.Thread(target=as_of_batch)
            batch.start()
            assert entered.wait(60), "the as-of batch never reached the log"
            progress: dict = {}

            def ingest_then_read() -> None:
                progress["post"] = client.post(
                    "/v1/events", json={"events": _events(2, "light", "m")}).status_code
                progress["get"] = client.get("/v1/users/light/profile").json()

            other = threading.Thread(target=ingest_then_read)
            other.start()
            other.join(60)
            stalled = other.is_alive()
            release.set()
            batch.join(120)
            other.join(60)
        finally:
            release.set()
            log.read_user = real_read_user
        # while the as-of batch was mid-way, an ingest (write lock) and a latest read finished
        assert not stalled, "ingest / latest GET waited for the as-of batch"
        assert progress["post"] == 200 and progress["get"]["features"]["event_count"] == 5
        r = result["r"]
        assert r.status_code == 200, r.text
        profiles = r.json()["profiles"]
        assert [p["user_id"] for p in profiles] == [HEAVY, "light"]  # ids de-duplicated
        assert reads.count(HEAVY) == 1  # 30 repeats, one recomputation
        # days 1 and 2, and the event at 00:00:00 of day 3
        assert profiles[0]["features"]["event_count"] == 10_001
        # the as-of batch reflects the log below its offset only (taken before the ingest)
        assert profiles[1]["features"]["event_count"] == 3
        assert r.json()["offset"] == 20_003


def test_as_of_work_per_request_is_bounded(tmp_path) -> None:
    with _app(tmp_path, max_asof_events=1_000) as client:
        assert client.post("/v1/events", json={"events": _events(800, "a", "a")}).status_code \
            == 200
        assert client.post("/v1/events", json={"events": _events(800, "b", "b")}).status_code \
            == 200
        as_of = "2025-01-01T00:00:00Z"
        ok = client.post("/v1/profiles:batch", json={"user_ids": ["a", "a", "a"], "as_of": as_of})
        assert ok.status_code == 200 and len(ok.json()["profiles"]) == 1
        r = client.post("/v1/profiles:batch", json={"user_ids": ["a", "b"], "as_of": as_of})
        assert r.status_code == 422, r.text
        problem = r.json()
        assert problem["field"] == "user_ids" and problem["limit"] == 1_000
        assert "PORTRAIT_MAX_ASOF_EVENTS" in problem["detail"]
        # a latest batch is not recomputed from the log: not bounded by it
        assert client.post("/v1/profiles:batch", json={"user_ids": ["a", "b"]}).status_code \
            == 200
