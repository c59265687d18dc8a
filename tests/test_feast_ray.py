"""Feast's Ray compute engine materializes our snapshot into the same online rows."""

from __future__ import annotations

import sqlite3
import warnings

import pytest
from helpers import shoplogs
from helpers.snapshots import EVENTS, QUIET

from offline.backfill.replay_ray import replay_ray
from offline.feast_store import materialize, repo_config
from online.settings import Settings


def _online_rows(settings: Settings) -> dict[str, list]:
    conn = sqlite3.connect(settings.data_dir / "online.db")
    try:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: sorted(conn.execute(f"SELECT entity_key, feature_name, value, event_ts "
                                       f"FROM {t}").fetchall()) for t in tables}
    finally:
        conn.close()


def test_the_ray_engine_config_and_a_bad_engine(tmp_path):
    config = repo_config(Settings(data_dir=tmp_path), "ray", workers=2)
    assert config.batch_engine.type == "ray.engine"
    assert config.batch_engine.write_concurrency == 1  # sqlite: one writer
    with pytest.raises(ValueError, match="engine: expected 'local' or 'ray'"):
        repo_config(Settings(data_dir=tmp_path), "spark")


@pytest.mark.slow
def test_feast_ray_materialize_equals_the_local_engine(ray_local, tmp_path):
    dirs = []
    for name in ("local", "ray"):
        settings = Settings(data_dir=tmp_path / name)
        shoplogs.write(settings.event_log_path, EVENTS[:300])
        replay_ray(settings, tasks=2, **QUIET)
        dirs.append(settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = materialize(dirs[0], full=True)
        b = materialize(dirs[1], full=True, engine="ray", workers=2)
    assert (a["engine"], b["engine"]) == ("local", "ray")
    local, ray = _online_rows(dirs[0]), _online_rows(dirs[1])
    assert sum(len(v) for v in local.values()) > 100
    assert ray == local
