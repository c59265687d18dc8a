"""The demo end to end (synthetic shop, small): every step runs and reports what it showed."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from offline.cli import cli


@pytest.mark.slow
def test_demo_runs_every_step_and_erases_the_live_user(tmp_path) -> None:
    args = ["--data-dir", str(tmp_path), "demo", "--synthetic", "--users", "150",
            "--events", "4000", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["source"] == "synthetic"
    assert report["ingest"]["accepted"] == 4000
    profile = report["profile"]
    assert profile["latest"]["user_id"] == profile["as_of"]["user_id"]
    # as of an earlier time the profile holds fewer events and reflects an earlier offset
    assert profile["as_of"]["features"]["event_count"] < profile["latest"]["features"][
        "event_count"]
    assert profile["as_of"]["offset"] < profile["latest"]["offset"]
    assert report["replay"]["events"] == 4000
    # the online row read back through Feast equals the projector's latest features
    online = report["materialize"]["online_row"]
    for name in ("event_count", "purchase_count", "spend_total"):
        assert online[name] == profile["latest"]["features"][name]
    assert report["training_rows"]["rows"] == 5
    evaluation = report["evaluation"]
    assert 0.0 <= evaluation["propensity"]["online_auc"] <= 1.0
    assert (tmp_path / "reports" / "evaluation" / "index.html").exists()
    federation = report["federation"]  # shops dealt from the demo's log, one model across
    assert federation["rounds"] == 30 and set(federation["tenants"]) == {"big", "small", "tiny"}
    assert federation["bytes_per_round"] > 0
    serve = report["serve"]
    assert serve["after"]["features"]["purchase_count"] == 1
    assert serve["before"]["features"]["purchase_count"] == 0
    assert serve["erasure"]["erased"]["complete"] is True
    assert serve["status_after_erasure"] == 404


@pytest.mark.slow
def test_demo_runs_the_replay_on_ray(tmp_path, ray_local) -> None:
    args = ["--data-dir", str(tmp_path), "demo", "--synthetic", "--users", "100",
            "--events", "3000", "--no-serve", "--engine", "ray", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert (report["replay"]["engine"], report["replay"]["events"]) == ("ray", 3000)
    assert report["training_rows"]["rows"] == 5
