"""`portrait train` and `portrait models`: a batch warm start installed, served and registered.

A synthetic shop is ingested; `train` fits a copy of the serving propensity model on the
replay's point-in-time rows and installs it. The latest profile is then scored by the new
version, the registry lists both versions (the online one it replaced, the trained one with
its held-out figures), and as-of profiles of times before the install are the very bodies
they were before it, scored by the earlier version.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from offline.cli import cli
from offline.datasets import generate

pytestmark = pytest.mark.slow


def _run(data_dir, *args) -> dict:
    result = CliRunner().invoke(cli, ["--data-dir", str(data_dir), *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    events = [e for chunk in generate(120, 6000, seed=5) for e in chunk]
    src = root / "events.jsonl"
    src.write_text("".join(json.dumps(e) + "\n" for e in events))
    assert _run(root / "d", "ingest", str(src))["accepted"] == len(events)
    users = {}
    for e in events:
        users[e["user_id"]] = users.get(e["user_id"], 0) + 1
    busy = sorted(users, key=lambda u: (-users[u], u))[:5]
    return root / "d", busy, events


def test_trained_model_serves_is_registered_and_past_profiles_keep_their_model(shop):
    data_dir, users, events = shop
    before = {u: _run(data_dir, "profile", u) for u in users}
    version = before[users[0]]["model_version"]
    assert {b["model_version"] for b in before.values()} == {version}
    # as-of times inside the log, earlier than its newest event: scored by past versions
    times = sorted(e["ts"] for e in events)
    as_of = [times[len(times) // 3], times[2 * len(times) // 3]]
    past = {(u, t): _run(data_dir, "profile", u, "--as-of", t) for u in users for t in as_of}
    assert all(b["model_source"] == "as_of" for b in past.values())

    out = _run(data_dir, "train", "--epochs", "2", "--max-rows", "3000")
    inst, ev = out["installed"], out["evaluation"]
    assert inst["previous_version"] == version != inst["model_version"]
    assert ev["train_rows"] > 0 and ev["test_rows"] > 0
    assert ev["cut"] < out["trained_on"]["labels_until"]
    for name in ("trained", "serving", "base_rate"):
        assert 0.0 <= ev[name]["auc"] <= 1.0 and ev[name]["n"] == ev["test_rows"]
    assert out["trained_on"]["to_offset"] == len(events)

    after = {u: _run(data_dir, "profile", u) for u in users}
    assert {a["model_version"] for a in after.values()} == {inst["model_version"]}
    assert all(a["model_source"] == "current" for a in after.values())
    got = [after[u]["propensity"]["score"] for u in users]
    old = [before[u]["propensity"]["score"] for u in users]
    assert not np.allclose(got, old)  # another model scores the same features
    for u in users:  # the features are the same: only the model changed
        assert after[u]["offset"] == before[u]["offset"]
    for (u, t), body in past.items():  # profiles of the past keep the model of the past
        assert _run(data_dir, "profile", u, "--as-of", t) == body
        assert body["model_version"] != inst["model_version"]

    listed = _run(data_dir, "models")
    assert listed["serving"] == inst["model_version"]
    by_version = {m["model_version"]: m for m in listed["models"]}
    assert set(by_version) == {version, inst["model_version"]}
    online, trained = by_version[version], by_version[inst["model_version"]]
    assert (online["source"], trained["source"]) == ("online", "train")
    assert not online["serving"] and trained["serving"]
    assert online["until_offset"] == trained["offset"] == len(events)
    assert trained["replaces"] == version and trained["kind"] == online["kind"]
    assert trained["evaluation"]["trained"]["auc"] == ev["trained"]["auc"]
    assert trained["trained_on"]["rows"] == out["trained_on"]["rows"]
    assert trained["learnt_to_offset"] == len(events)


def test_train_refuses_while_another_process_writes(shop, tmp_path):
    import shutil

    from online.models.registry import ModelRegistry
    from online.writerlock import WriterLock

    data_dir = tmp_path / "copy"
    shutil.copytree(shop[0], data_dir)
    entries = ModelRegistry(data_dir).entries()
    with WriterLock(data_dir / "state", command="a running server"):
        result = CliRunner().invoke(cli, ["--data-dir", str(data_dir), "train"])
    assert result.exit_code == 2 and "a running server" in result.output
    assert ModelRegistry(data_dir).entries() == entries  # nothing recorded


def test_train_and_models_explain_themselves_and_check_their_input(tmp_path):
    for command in ("train", "models"):
        result = CliRunner().invoke(cli, [command, "--help"])
        assert result.exit_code == 0 and "Examples:" in result.output
    bad = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "train", "--holdout", "1.5"])
    assert bad.exit_code == 2 and "--holdout" in bad.output
    missing = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "train"])
    assert missing.exit_code == 2 and "portrait ingest" in missing.output
    empty = _run(tmp_path, "models")
    assert empty["models"] == [] and empty["serving"] is None


def test_fit_copy_learns_rows_in_time_order():
    """The copy meets rows as the online learner meets labels: in time order, whatever order
    they come in (the windowed learner reads its newest rows as the present)."""
    from offline.warm_start import fit_copy
    from online.models.contributor import propensity_model
    from online.models.propensity import PurchasePropensity

    features = ("event_count", "cart_add_count")
    serving = PurchasePropensity(features, model=propensity_model())
    rng = np.random.default_rng(0)
    n = 600
    X = rng.poisson(3.0, size=(n, 2)).astype(np.float64)
    t = np.arange(n, dtype=np.int64) * 1_000_000
    y = (X[:, 1] + rng.normal(0.0, 1.0, n)) > 3.5
    order = rng.permutation(n)  # rows handed over in no particular order
    forward = fit_copy(serving, X[order], y[order], t[order], epochs=1, seed=0)
    by_hand = serving.clone()
    for i in range(n):  # what the online learner would have met: oldest first
        by_hand.learn_one(dict(zip(features, X[i].tolist(), strict=True)), bool(y[i]))
    probes = [{"event_count": 3.0, "cart_add_count": c} for c in (0.0, 8.0)]
    scores = [forward.predict_proba_one(x) for x in probes]
    assert scores == [by_hand.predict_proba_one(x) for x in probes]
    assert scores[0] < scores[1]
