"""The server's online writes from a child process (`offline.feast_process`): the same rows
as `OnlineWriter.push_stored` in the server's own process, and the server wired with it."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from offline import feast_online as fo
from offline import feast_store as fs
from offline.datasets import generate
from offline.feast_process import OnlineWriterProcess
from offline.wiring import create_app
from online import kernels
from online.eventlog import EventLog
from online.projector import Projector
from online.settings import Settings


def _online(store, users: list[str]) -> dict[str, list]:
    return store.get_online_features(features=store.get_feature_service(fs.FEATURE_SERVICE),
                                     entity_rows=[{"user_id": u} for u in users]).to_dict()


def test_the_child_writes_what_the_writer_writes_in_process(tmp_path):
    settings = Settings(data_dir=tmp_path / "log")
    settings.data_dir.mkdir()
    with EventLog(settings.event_log_path) as log:
        for chunk in generate(12, 400, seed=4):
            log.append(chunk)
        projector = Projector(log, settings.state_dir)
        projector.run()
    n = len(projector.state.users)
    stored = kernels.stored_values(projector.state, np.arange(n))
    ids = [projector.state.users.values[u] for u in range(n)]
    offsets = np.arange(n, dtype=np.int64) * 5 + 2
    here, there = Settings(data_dir=tmp_path / "here"), Settings(data_dir=tmp_path / "there")
    fs.apply(here)
    fs.apply(there)
    writer, child = fo.OnlineWriter(here), OnlineWriterProcess(there)
    try:
        assert child.push_stored(ids, stored, offsets) == writer.push_stored(ids, stored, offsets)
        again = child.push_stored(ids, stored, offsets - 1)  # older: skipped in the child too
        assert (again.pushed, again.skipped) == (0, n)
    finally:
        child.close()
    rows = _online(fo.OnlineWriter(there).store, ids)
    assert rows == _online(writer.store, ids)
    assert rows["offset"] == offsets.tolist()
    with pytest.raises(RuntimeError, match="closed"):
        child.push_stored(ids, stored, offsets + 1)


def test_the_server_pushes_through_its_child_and_stops_it_on_shutdown(tmp_path):
    settings = Settings(data_dir=tmp_path / "shop")
    fs.apply(settings)  # the online store exists: the server writes to it
    events = [e for chunk in generate(8, 300, seed=6) for e in chunk]
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/events", json={"events": events}).status_code == 200
        service = client.app.state.service
        writers = [c for c in service.projector.contributors if hasattr(c, "pending")]
        service._flush_writes()
        assert [w.pending for w in writers] == [0]
        users = sorted({e["user_id"] for e in events})
        assert service.projector.profile(users[0])["offset"] == len(events)
    child = writers[0]._close.__self__
    assert child._pool is None  # stopped with the server
    online = _online(fo.OnlineWriter(settings).store, users)
    assert all(o is not None and 0 < o <= len(events) for o in online["offset"])
    assert max(online["offset"]) == len(events)
