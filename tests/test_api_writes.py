"""Deferred online writes: each changed user pushed once per flush, none lost at a restart."""

from __future__ import annotations

from fastapi.testclient import TestClient

from online.api import ApiSettings, create_app
from online.api.deferred_writes import DeferredWrites
from online.projector import Projector


class Recorder:
    """A push_rows stand-in: remembers (user, offset, event_count) of every pushed row."""

    def __init__(self, fail: bool = False) -> None:
        self.rows: list[tuple[str, int, int]] = []
        self.fail = fail

    def __call__(self, ids, stored, offsets) -> None:
        if self.fail:
            raise OSError("online store down")
        self.rows += list(zip(ids, offsets.tolist(), stored["event_count"].tolist(), strict=True))


def _app(tmp_path, recorder: Recorder, **settings):
    def factory(log, s):
        return Projector(log, s.state_dir, contributors=[DeferredWrites(recorder)])

    # long flush intervals: the test flushes by hand, the follower does not interfere
    settings = {"online_flush_seconds": 3600, "online_flush_idle_seconds": 3600, **settings}
    s = ApiSettings(data_dir=tmp_path, **settings)
    return create_app(s, projector_factory=factory)


def _events(user: str, first: int, n: int) -> list[dict]:
    return [{"event_id": f"{user}-{k}", "user_id": user, "type": "view",
             "ts": f"2024-03-01T10:{k:02d}:00Z"} for k in range(first, first + n)]


def test_each_changed_user_is_pushed_once_with_its_newest_row(tmp_path) -> None:
    recorder = Recorder()
    with TestClient(_app(tmp_path, recorder)) as client:
        service = client.app.state.service
        for k in range(3):  # three requests touching u1, one touching u2
            client.post("/v1/events", json={"events": _events("u1", 4 * k, 4)})
        client.post("/v1/events", json={"events": _events("u2", 0, 2)})
        assert recorder.rows == []  # nothing pushed on the request path
        assert service._flush_writes() == 2
        assert sorted(recorder.rows) == [("u1", 12, 12), ("u2", 14, 2)]
        assert service._flush_writes() == 0  # nothing changed since


def test_pending_writes_survive_a_restart_and_a_failed_push(tmp_path) -> None:
    failing = Recorder(fail=True)
    with TestClient(_app(tmp_path, failing)) as client:
        client.post("/v1/events", json={"events": _events("u1", 0, 3)})
        try:
            client.app.state.service._flush_writes()
        except OSError:
            pass
        # shutdown: the final flush fails again, the checkpoint keeps u1 pending
    recorder = Recorder()
    with TestClient(_app(tmp_path, recorder)) as client:
        assert client.app.state.service.offset == 3  # resumed from the checkpoint: no replay
        assert client.app.state.service._flush_writes() == 1
    assert recorder.rows == [("u1", 3, 3)]


def test_an_erased_user_is_not_pushed(tmp_path) -> None:
    recorder = Recorder()
    with TestClient(_app(tmp_path, recorder)) as client:
        client.post("/v1/events", json={"events": _events("u1", 0, 2) + _events("u2", 0, 1)})
        client.app.state.service._flush_writes()
        recorder.rows.clear()
        client.delete("/v1/users/u1")
        client.post("/v1/events", json={"events": _events("u2", 5, 1)})
        client.app.state.service._flush_writes()
    assert [r[0] for r in recorder.rows] == ["u2"]


def test_writes_are_pushed_as_soon_as_ingestion_pauses(tmp_path) -> None:
    """Not a flush period later: a burst's rows reach the store right after it."""
    import time

    recorder = Recorder()
    app = _app(tmp_path, recorder, online_flush_idle_seconds=0.05)
    with TestClient(app) as client:
        client.post("/v1/events", json={"events": _events("u1", 0, 3)})
        deadline = time.monotonic() + 20  # the flush period is an hour
        while not recorder.rows and time.monotonic() < deadline:
            time.sleep(0.01)
        assert recorder.rows == [("u1", 3, 3)]
        assert client.app.state.service._flush_writes() == 0  # nothing left to push


def _scraped(client) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = client.get("/metrics").text
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name.startswith("portrait_online_")}


def test_flushes_are_measured_on_metrics(tmp_path) -> None:
    """Each flush that pushed rows is timed, its rows counted; an empty flush is neither; a
    failed one is counted as a failure and its rows are not."""
    failing = Recorder(fail=True)
    with TestClient(_app(tmp_path / "a", failing)) as client:
        service = client.app.state.service
        client.post("/v1/events", json={"events": _events("u1", 0, 3)})
        try:
            service._flush_writes()
        except OSError:
            pass
        seen = _scraped(client)
        assert seen["portrait_online_flush_failures_total"] == 1
        assert seen["portrait_online_rows_pushed_total"] == 0
        assert seen["portrait_online_flush_duration_seconds_count"] == 0
    recorder = Recorder()
    with TestClient(_app(tmp_path / "b", recorder)) as client:
        service = client.app.state.service
        client.post("/v1/events", json={"events": _events("u1", 0, 3) + _events("u2", 0, 2)})
        assert service._flush_writes() == 2
        assert service._flush_writes() == 0  # nothing to push: not a flush
        client.post("/v1/events", json={"events": _events("u2", 2, 1)})
        assert service._flush_writes() == 1
        seen = _scraped(client)
    assert seen["portrait_online_rows_pushed_total"] == 3
    assert seen["portrait_online_flush_duration_seconds_count"] == 2
    assert seen["portrait_online_flush_duration_seconds_sum"] > 0
    assert seen["portrait_online_flush_failures_total"] == 0
