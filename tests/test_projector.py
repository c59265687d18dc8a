"""Projector: replay determinism, checkpoint/restart, as-of prefix rule, profile body."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import naive, shoplogs

from online import catalogue as cat
from online import kernels
from online.eventlog import EventLog
from online.projector import (
    NUMERIC_STORED,
    ProfileContributor,
    Projector,
    ServedFeatures,
    UnknownUser,
    features_as_of,
)

T0 = shoplogs.T0
payload = shoplogs.payload


def make_events(n: int, seed: int, t0: int = T0, users: int = 12) -> list[dict]:
    """The shared random shop log (ties, late events), with more users than the default."""
    return shoplogs.make_events(n, seed, users=users, t0=t0)


@pytest.fixture()
def log(tmp_path):
    with EventLog(tmp_path / "events.db") as lg:
        lg.append([payload(e) for e in make_events(400, seed=1)], now_us=T0 + 1000 * cat.DAY_US)
        yield lg


class Recorder(ProfileContributor):
    """A contributor that counts what it sees and checkpoints the count."""

    name = "recorder"
    wants_event_rows = True

    def __init__(self) -> None:
        self.events = 0
        self.rows = 0

    def on_batch(self, projector, batch, user_idx, eff_ts) -> None:
        assert len(user_idx) == len(eff_ts) == len(batch)
        assert (projector.state.ints[user_idx, kernels.I_LAST_TS] >= eff_ts).all()
        self.events += len(batch)
        self.rows += len(projector.event_rows["event_count"])
        assert "recent_items" not in projector.event_rows  # strings only when asked for
        assert set(projector.event_rows) == set(NUMERIC_STORED)

    def contribute(self, body, features: ServedFeatures) -> None:
        body["segment"] = {"events_seen": self.events}
        body["model_version"] = "test"

    def save(self, directory) -> None:
        (directory / "count.txt").write_text(str(self.events))

    def load(self, directory) -> None:
        self.events = int((directory / "count.txt").read_text())


def test_replay_is_deterministic_across_batches_and_restarts(log, tmp_path):
    one = Projector(log, tmp_path / "one")
    assert one.run(batch_size=10_000) == 400 and one.offset == 400
    rng = np.random.default_rng(7)
    many = Projector(log, tmp_path / "many")
    while many.offset < 400:
        many.run(batch_size=int(rng.integers(1, 60)),
                 until_offset=many.offset + int(rng.integers(1, 80)))
    assert many.state.equals(one.state)
    first = Projector(log, tmp_path / "restart")
    first.run(batch_size=33, until_offset=177)
    first.checkpoint()
    resumed = Projector(log, tmp_path / "restart")
    assert resumed.offset == 177 and resumed.watermark_us == first.watermark_us
    resumed.run(batch_size=50)
    assert resumed.state.equals(one.state)
    assert (resumed.offset, resumed.watermark_us) == (one.offset, one.watermark_us)


def test_live_features_equal_reference_and_as_of_path(log, tmp_path):
    proj = Projector(log, tmp_path / "p")
    proj.run(batch_size=64)
    events = make_events(400, seed=1)
    ref = naive.replay(events)
    for user in sorted(ref):
        live = proj.features(user)
        assert live.as_of_us == proj.watermark_us and live.offset == 400
        assert not naive.mismatches(live.values, naive.served(ref[user], proj.watermark_us))
        again = features_as_of(log, user, proj.watermark_us)
        assert again.values == live.values


def test_as_of_follows_the_prefix_rule_and_ignores_later_events(log):
    events = make_events(400, seed=1)
    t = events[200]["ts"]
    before = {}
    for user in sorted({e["user_id"] for e in events}):
        want = naive.as_of(events, user, t)
        if want is None:
            with pytest.raises(UnknownUser):
                features_as_of(log, user, t)
            continue
        got = features_as_of(log, user, t)
        assert not naive.mismatches(got.values, want) and got.as_of_us == t
        before[user] = got
    later = make_events(100, seed=2, t0=events[-1]["ts"] + 1)
    assert all(e["ts"] > t for e in later)
    log.append([payload(e) for e in later], now_us=T0 + 1000 * cat.DAY_US)
    for user, got in before.items():
        assert features_as_of(log, user, t) == got


def test_profile_body_and_contributor_hooks(log, tmp_path):
    rec = Recorder()
    proj = Projector(log, tmp_path / "p", contributors=[rec])
    proj.run(batch_size=100)
    assert rec.events == rec.rows == 400
    body = proj.profile("u3")
    assert list(body) == ["user_id", "as_of", "offset", "features", "segment", "propensity",
                          "model_version"]
    assert body["as_of"] == cat.iso_utc(proj.watermark_us) and body["offset"] == 400
    assert body["segment"] == {"events_seen": 400} and body["propensity"] is None
    feats = body["features"]
    assert list(feats) == cat.served_names() and set(cat.FIXED_NAMES) <= set(feats)
    assert isinstance(feats["event_count"], int) and isinstance(feats["spend_total"], float)
    assert feats["last_event_ts"].endswith("+00:00")
    proj.checkpoint()
    rec2 = Recorder()
    Projector(log, tmp_path / "p", contributors=[rec2])
    assert rec2.events == 400
    first = min(e["ts"] for e in make_events(400, seed=1) if e["user_id"] == "u3")
    past = proj.profile("u3", as_of=first)
    assert past["as_of"] == cat.iso_utc(first) and past["offset"] < 400
    assert past["features"]["event_count"] >= 1 and past["segment"] == {"events_seen": 400}


def test_unknown_users_and_erasure(log, tmp_path):
    proj = Projector(log, tmp_path / "p")
    proj.run()
    with pytest.raises(UnknownUser, match="nobody"):
        proj.profile("nobody")
    with pytest.raises(UnknownUser, match="as of"):
        features_as_of(log, "u1", T0 - 1)
    assert proj.erase_user("u1") == {"state_rows": 1}
    with pytest.raises(UnknownUser):
        proj.features("u1")


class FailOnce(ProfileContributor):
    """Fails on the first batch that reaches offset 250, once."""

    name = "fail-once"

    def __init__(self) -> None:
        self.failed = False
        self.resets = 0

    def on_batch(self, projector, batch, user_idx, eff_ts) -> None:
        if not self.failed and batch.offset[-1] >= 250:
            self.failed = True
            raise RuntimeError("boom")

    def contribute(self, body, features) -> None:
        pass

    def reset(self) -> None:
        self.resets += 1


def test_a_failed_batch_goes_back_to_the_checkpoint(log, tmp_path):
    whole = Projector(log, tmp_path / "whole")
    whole.run()
    fail = FailOnce()
    proj = Projector(log, tmp_path / "p", contributors=[fail])
    proj.run(batch_size=100, until_offset=200)
    proj.checkpoint()
    with pytest.raises(RuntimeError, match="boom"):
        proj.run(batch_size=100)
    assert proj.offset == 200 and fail.resets == 1
    proj.run(batch_size=100)
    assert proj.state.equals(whole.state) and proj.offset == 400


def test_checkpoint_is_atomic_and_keeps_one_directory(log, tmp_path):
    proj = Projector(log, tmp_path / "p")
    proj.run(until_offset=100)
    proj.checkpoint()
    proj.run()
    proj.checkpoint()
    names = sorted(p.name for p in (tmp_path / "p").iterdir())
    assert names[0] == "CURRENT" and len(names) == 2 and names[1].startswith("ckpt-")
    assert Projector(log, tmp_path / "p").state.equals(proj.state)
