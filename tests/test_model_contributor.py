"""The online models inside the projector: replay determinism, profile fields, no leakage."""

from __future__ import annotations

import functools
import operator
import pickle
import random
from array import array
from collections import deque

import numpy as np
import pytest
from river import linear_model, optim

from offline.datasets import generate
from offline.wiring import build_projector
from online.eventlog import EventLog
from online.events import EventType
from online.models import DAY_US, ModelSet, PurchasePropensity
from online.models.contributor import DEFAULT_FEATURES, ModelContributor, Predictions
from online.models.versions import ModelVersions
from online.projector import Projector
from online.settings import Settings

HORIZON = DAY_US
N_EVENTS = 2500


def fill(path, n: int = N_EVENTS, users: int = 40, seed: int = 5) -> None:
    with EventLog(path) as log:
        for chunk in generate(users, n, seed=seed):
            log.append(chunk, now_us=2**62)


@pytest.fixture(scope="module")
def log_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("log") / "events.db"
    fill(path)
    return path


def contributor(recorder=None) -> ModelContributor:
    return ModelContributor(horizon_us=HORIZON, recorder=recorder)


def probe(c: ModelContributor) -> list:
    """What the models answer for a few fixed feature rows, plus their counters."""
    rows = [dict.fromkeys(c.columns, float(v)) for v in (0, 1, 5, 50)]
    return [c.models.profile(x) for x in rows] + [c.stats()]


def canonical(obj, depth: int = 0):
    """Model state as plain data, equal when the state is equal (pickle bytes are not: they
    depend on which equal strings happen to be one object)."""
    if depth > 30:
        raise RecursionError("state too deep")
    if isinstance(obj, ModelVersions):  # frozen models as pickles: compare what they hold
        return [(e["valid_from_us"], e["offset"], canonical(ModelVersions.load(e), depth + 1))
                for e in obj._entries] + [obj.watermark_us]
    if isinstance(obj, dict):
        return [(canonical(k, depth + 1), canonical(v, depth + 1)) for k, v in obj.items()]
    if isinstance(obj, list | tuple | deque):
        return [canonical(v, depth + 1) for v in obj]
    if isinstance(obj, set | frozenset):
        return sorted(repr(v) for v in obj)
    if isinstance(obj, str | int | float | bool | type(None) | bytes):
        return obj
    if isinstance(obj, array | np.ndarray):
        return obj.tolist()
    if isinstance(obj, operator.itemgetter):
        return repr(obj)
    if hasattr(obj, "__dict__"):  # the state pickle carries (derived caches left out)
        state = obj.__getstate__()
        return (type(obj).__name__,
                canonical(state if isinstance(state, dict) else vars(obj), depth + 1))
    return (type(obj).__name__, pickle.dumps(obj))  # e.g. River's Rust ADWIN


def run_whole(log_path):
    rec = Predictions()
    c = contributor(rec)
    with EventLog(log_path) as log:
        Projector(log, log_path.parent / "whole", contributors=[c]).run(batch_size=10**6)
    return rec.columns(), c


def test_replay_determinism_covers_the_models(log_path, tmp_path):
    whole, c_whole = run_whole(log_path)
    assert len(whole["score"]) == N_EVENTS
    assert c_whole.stats()["propensity"]["n_learnt"] > 50  # labels did resolve and teach

    # batches of random sizes
    rec = Predictions()
    c = contributor(rec)
    rng = random.Random(11)
    with EventLog(log_path) as log:
        p = Projector(log, tmp_path / "random", contributors=[c])
        while p.offset < N_EVENTS:
            p.run(batch_size=rng.randint(1, 400), until_offset=p.offset + rng.randint(1, 600))
    batched = rec.columns()

    # checkpoint part-way, restart in a fresh projector and fresh models, carry on
    first, second = Predictions(), Predictions()
    with EventLog(log_path) as log:
        p = Projector(log, tmp_path / "restart", contributors=[contributor(first)])
        p.run(batch_size=300, until_offset=1234)
        p.checkpoint()
        c_restart = contributor(second)
        p2 = Projector(log, tmp_path / "restart", contributors=[c_restart])
        assert p2.offset == 1234 and c_restart.loaded and c_restart.offset == 1234
        p2.run(batch_size=500)
    restarted = {k: np.concatenate([first.columns()[k], second.columns()[k]]) for k in whole}

    for other in (batched, restarted):
        for k in whole:
            np.testing.assert_array_equal(other[k], whole[k], err_msg=k)
    assert canonical(contributor().models) != canonical(c_whole.models)
    for other in (c, c_restart):
        assert canonical(other.models) == canonical(c_whole.models)
        assert probe(other) == probe(c_whole)
        assert other.offset == c_whole.offset == N_EVENTS


def test_profiles_carry_the_model_fields_through_the_wiring(log_path, tmp_path):
    settings = Settings(data_dir=tmp_path)
    fill(settings.event_log_path, n=800, users=20)
    with EventLog(settings.event_log_path) as log:
        p = build_projector(log, settings, online_writes=False)
        assert any(isinstance(c, ModelContributor) for c in p.contributors)
        p.run()
        p.checkpoint()
        user = str(log.read(0, 1)[0].user_id[0])
        body = p.profile(user)
        assert set(body["segment"]) >= {"id", "label"}
        prop = body["propensity"]
        assert 0.0 <= prop["score"] <= 1.0 and prop["horizon"] == "7d"
        assert len(prop["top_features"]) == 5
        # a reason with the same value as other features names them in "same_as"
        assert set(prop["top_features"][0]) - {"same_as"} == {"feature", "value", "contribution"}
        assert {f["feature"] for f in prop["top_features"]} <= set(DEFAULT_FEATURES)
        assert body["model_version"] and body["model_source"] == "current"
        # the version of the current event-time day: learnt up to that day's first event
        assert 0 <= body["model_offset"] <= body["offset"] == p.offset
        assert body["model_valid_from"].endswith("T00:00:00+00:00")

        as_of = p.profile(user, as_of=int(log.read(0, 1)[0].ts[0]))
        assert as_of["model_source"] == "as_of" and as_of["model_offset"] == 0
        assert as_of["model_valid_from"] is None  # before any day started: the fresh models
        assert as_of["offset"] < p.offset and as_of["propensity"]["score"] == 0.5

        # a restart through the wiring loads the models at the same offset: same profile
        again = build_projector(log, settings, online_writes=False)
        assert again.profile(user) == body


def test_old_checkpoint_without_models_is_caught_up(log_path, tmp_path):
    settings = Settings(data_dir=tmp_path)
    fill(settings.event_log_path, n=600, users=15)
    with EventLog(settings.event_log_path) as log:
        bare = Projector(log, settings.state_dir)  # a data dir from before the models
        bare.run()
        bare.checkpoint()
        p = build_projector(log, settings, online_writes=False)
        fresh = Projector(log, tmp_path / "fresh", contributors=[ModelContributor()])
        fresh.run()
    [c] = [c for c in p.contributors if isinstance(c, ModelContributor)]
    assert canonical(c.models) == canonical(fresh.contributors[0].models)


def test_erase_user_drops_what_the_models_key_by_user(log_path):
    _, c = run_whole(log_path)
    users = set(c.models.propensity._open)
    assert users
    user = sorted(users)[0]
    c.erase_user(user)
    state = c.models.state_dict()
    versions = state.pop("versions")
    # The propensity's window of examples is raw float bytes, where a short id may match by
    # chance: check the id as pickle writes a string, and every str the state holds.
    blob = pickle.dumps(state)
    assert b"\x8c" + bytes([len(user)]) + user.encode() not in blob
    assert user not in _strings(pickle.loads(blob))
    # Versions are pickles (binary: a two-byte id may match by chance): check what they hold.
    assert len(versions) > 1
    for entry in versions._entries:
        m = ModelVersions.load(entry)
        assert m.propensity._open == {} and m.propensity._heap == []
        assert m.propensity._last_user is None and m.segments._seen == set()
        assert m.snapshots is None and m.versions is None


def _strings(obj, seen=None) -> set[str]:
    """Every str reachable from `obj` (containers and instance attributes)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return set()
    seen.add(id(obj))
    if isinstance(obj, str):
        return {obj}
    if isinstance(obj, dict):
        items = [*obj.keys(), *obj.values()]
    elif isinstance(obj, list | tuple | set | frozenset | deque):
        items = list(obj)
    elif hasattr(obj, "__dict__"):
        items = list(vars(obj).values())
    else:
        return set()
    out: set[str] = set()
    for item in items:
        out |= _strings(item, seen)
    return out


class SpyClassifier(linear_model.LogisticRegression):
    """Records every example it learns, with the event time at which it learnt it."""

    def __init__(self, clock=None):
        super().__init__(optimizer=optim.SGD(1e-9))  # raw inputs: keep the steps small
        self.clock = clock
        self.learnt: list[tuple[tuple, bool, int]] = []

    def learn_one(self, x, y, **kwargs):
        self.learnt.append((tuple(x[f] for f in SPY_FEATURES), bool(y), self.clock()))
        return super().learn_one(x, y, **kwargs)


# A row of these tells one event of one user apart from the others of that user.
SPY_FEATURES = ("event_count", "purchase_count", "seconds_since_first_event", "spend_total")


class ServedRows(ModelContributor):
    """Keeps what the models were shown per event (the features served at that event)."""

    def __init__(self, models):
        super().__init__(models, recorder=Predictions())
        self.rows: list[np.ndarray] = []

    def on_batch(self, projector, batch, user_idx, eff_ts):
        self.rows.append(self.served_rows(projector.event_rows, eff_ts))
        super().on_batch(projector, batch, user_idx, eff_ts)


def test_delayed_labels_never_use_information_after_the_prediction_time(log_path, tmp_path):
    """Each learnt example is (the features at a past event, the log's answer for it), learnt
    only once the answer was known; and each score depends on the log prefix alone."""
    spy = SpyClassifier()
    propensity = PurchasePropensity(SPY_FEATURES, model=spy,
                                    horizon_us=HORIZON, min_spacing_us=0)
    # picklable (the models' versions are pickles): a partial, not a lambda
    spy.clock = functools.partial(getattr, propensity, "watermark_us")
    c = ServedRows(ModelSet(propensity))
    with EventLog(log_path) as log:
        Projector(log, tmp_path / "spy", contributors=[c]).run(batch_size=700)
    cols = c.recorder.columns()
    X = np.concatenate(c.rows)
    position = [c.columns.index(f) for f in SPY_FEATURES]

    # the log's answer per event: the user's first purchase strictly after t, within H
    answers: dict[tuple, list[tuple[bool, int]]] = {}
    users, ts, buys = cols["user_id"], cols["t_us"], cols["is_purchase"]
    purchases: dict[str, list[int]] = {}
    for u, t, b in zip(users, ts.tolist(), buys, strict=True):
        if b:
            purchases.setdefault(u, []).append(t)
    for i, (u, t) in enumerate(zip(users, ts.tolist(), strict=True)):
        nxt = min((tp for tp in purchases.get(u, ()) if tp > t), default=None)
        positive = nxt is not None and nxt <= t + HORIZON
        known_at = nxt if positive else t + HORIZON + 1
        key = tuple(float(v) for v in X[i, position])
        answers.setdefault(key, []).append((positive, known_at))

    assert len(spy.learnt) > 100 and any(y for _, y, _ in spy.learnt)
    for x, y, learnt_at in spy.learnt:
        candidates = answers[tuple(float(v) for v in x)]  # features of a past event, as served
        assert any(y == positive and learnt_at >= known_at for positive, known_at in candidates)

    # a score at event i is the same when the log ends right after i (no look-ahead)
    whole = run_whole(log_path)[0]
    for end in (1, 317, 1500):
        prefix = Predictions()
        with EventLog(log_path) as log:
            Projector(log, tmp_path / f"prefix{end}", contributors=[contributor(prefix)]).run(
                until_offset=end)
        np.testing.assert_array_equal(prefix.columns()["score"], whole["score"][:end])


def test_purchase_flag_and_effective_times_reach_the_models(log_path):
    cols, c = run_whole(log_path)
    with EventLog(log_path) as log:
        batch, _ = log.read(0, N_EVENTS)
    np.testing.assert_array_equal(cols["is_purchase"], batch.type == int(EventType.PURCHASE))
    for user in set(cols["user_id"]):  # effective times: the late-event rule, per user
        mine = cols["user_id"] == user
        np.testing.assert_array_equal(cols["t_us"][mine], np.maximum.accumulate(batch.ts[mine]))
    assert c.models.propensity.watermark_us == int(cols["t_us"].max())


def test_live_horizon_is_a_setting_and_a_change_rebuilds_the_models(tmp_path, monkeypatch):
    import pydantic

    with pytest.raises(pydantic.ValidationError, match="propensity_horizon"):
        Settings(data_dir=tmp_path, propensity_horizon="7 days")
    monkeypatch.setenv("PORTRAIT_PROPENSITY_HORIZON", "30d")
    settings = Settings(data_dir=tmp_path)
    assert settings.propensity_horizon_us == 30 * DAY_US
    fill(settings.event_log_path, n=600, users=15)
    with EventLog(settings.event_log_path) as log:
        p = build_projector(log, settings, online_writes=False)
        p.run()
        p.checkpoint()
        user = str(log.read(0, 1)[0].user_id[0])
        body = p.profile(user)
        assert body["propensity"]["horizon"] == "30d"
        # the same data dir with another horizon: models rebuilt from the log, new version
        other = build_projector(log, Settings(data_dir=tmp_path, propensity_horizon="1d"),
                                online_writes=False)
        again = other.profile(user)
        assert again["propensity"]["horizon"] == "1d"
        assert again["model_version"] != body["model_version"]
        assert 0 < again["model_offset"] <= p.offset


def test_as_of_profile_is_scored_by_the_model_of_its_time(tmp_path):
    """A profile as of T served now equals the one recomputed after more events (and a
    restart), scores included: the models of T's day, not today's."""
    settings = Settings(data_dir=tmp_path)
    fill(settings.event_log_path, n=1500, users=20)
    with EventLog(settings.event_log_path) as log:
        batch, _ = log.read(0, 1500)
        t_mid = int(np.sort(batch.ts)[900])
        p = build_projector(log, settings, online_writes=False)
        p.run(until_offset=1000)
        users = sorted({str(u) for u in batch.user_id[:900]})[:6]
        before = {u: p.profile(u, as_of=t_mid) for u in users}
        assert all(b["model_source"] == "as_of" for b in before.values())
        p.run()
        p.checkpoint()
        latest = p.profile(users[0])
        after = {u: p.profile(u, as_of=t_mid) for u in users}
        assert after == before
        restarted = build_projector(log, settings, online_writes=False)
        assert {u: restarted.profile(u, as_of=t_mid) for u in users} == before
        # today's models have learnt more: the latest profile is another version's
        assert latest["model_offset"] > before[users[0]]["model_offset"]
        # nothing after T in T's models: learnt only from offsets before T's day began
        day_start = t_mid // DAY_US * DAY_US
        first_of_day = int(np.flatnonzero(np.maximum.accumulate(batch.ts) >= day_start)[0])
        assert before[users[0]]["model_offset"] == first_of_day


def test_models_checkpointed_in_another_state_format_are_rebuilt_from_the_log(tmp_path,
                                                                              monkeypatch):
    """A data dir from an earlier release: its model state (another `STATE_FORMAT`) is not
    loaded into today's classes but rebuilt from the log, and the server starts."""
    import online.models.modelset as ms

    settings = Settings(data_dir=tmp_path)
    fill(settings.event_log_path, n=600, users=15)
    with EventLog(settings.event_log_path) as log:
        monkeypatch.setattr(ms, "STATE_FORMAT", ms.STATE_FORMAT - 1)
        old = build_projector(log, settings, online_writes=False)
        old.run()
        old.checkpoint()
        user = str(log.read(0, 1)[0].user_id[0])
        monkeypatch.undo()
        with pytest.raises(ms.StaleModels, match="rebuild the models"):
            blob = next(tmp_path.rglob("models.pkl")).read_bytes()
            ms.ModelSet.from_bytes(blob)
        new = build_projector(log, settings, online_writes=False)
        body = new.profile(user)
        assert body["propensity"] is not None and 0 < body["model_offset"] <= old.offset
        assert new.offset == old.offset
