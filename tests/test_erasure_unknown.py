"""Erasing a user no store holds writes nothing (issue 12, item 12: DELETE took ~3.5 s).

The cost was two full projector checkpoints and every parquet file read whole for a user
who is nowhere. Asserted here by what is written, not by timings.
"""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from helpers import shoplogs

from offline.backfill.replay import replay
from offline.wiring import create_app
from online.api.settings import ApiSettings


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


def test_deleting_an_unknown_user_writes_nothing(tmp_path) -> None:
    settings = ApiSettings(data_dir=tmp_path / "d")
    shoplogs.write(settings.event_log_path, shoplogs.make_events(400, seed=5, users=6))
    replay(settings, progress=False)
    with TestClient(create_app(settings)) as client:
        client.app.state.service._checkpoint(force=True)
        state_before = _files(settings.state_dir)
        offline_before = _files(settings.offline_dir)
        r = client.delete("/v1/users/nobody-at-all")
        assert r.status_code == 404
        assert _files(settings.state_dir) == state_before  # no checkpoint written
        assert _files(settings.offline_dir) == offline_before  # no parquet rewritten
        # a user the stores hold is still erased everywhere, with a fresh checkpoint
        r = client.delete("/v1/users/u1")
        assert r.status_code == 200, r.text
        stores = r.json()["erased"]["stores"]
        assert stores["offline_parquet"]["rows"] > 0 and stores["projector_state"]["state_rows"]
        assert _files(settings.state_dir) != state_before
