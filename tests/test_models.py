"""Contract tests of the online models: River's checks, delayed labels, determinism, pickling."""

from __future__ import annotations

import copy
import json
import math
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from river import base, checks, datasets, linear_model, preprocessing, stream, tree
from river.checks import common as river_common

from online.models import (
    DAY_US,
    HOUR_US,
    ModelSet,
    PurchasePropensity,
    UserSegments,
)

FEATURES = (
    "event_count",
    "purchase_count",
    "spend_total",
    "seconds_since_last_purchase",
    "carts_7d",
)


def make_stream(n: int = 300, n_users: int = 8, seed: int = 0) -> list[tuple]:
    """(user, t_us, x, is_purchase) in time order; carts make a purchase likelier."""
    rng = random.Random(seed)
    t, out = 0, []
    state = {f"u{i}": [0, 0, 0.0, None, 0] for i in range(n_users)}
    for _ in range(n):
        t += rng.randrange(1, 12) * 10 * 60_000_000  # 10 min .. 2 h
        user = f"u{rng.randrange(n_users)}"
        s = state[user]
        s[0] += 1
        s[4] = rng.randrange(4)
        is_purchase = rng.random() < 0.08 + 0.1 * s[4]
        if is_purchase:
            s[1] += 1
            s[2] += round(rng.uniform(5, 200), 2)
            s[3] = t
        x = {
            "event_count": float(s[0]),
            "purchase_count": float(s[1]),
            "spend_total": s[2],
            # Never purchased: -1.0, as the catalogue serves a "since" feature without source.
            "seconds_since_last_purchase": -1.0 if s[3] is None else (t - s[3]) / 1e6,
            "carts_7d": float(s[4]),
        }
        out.append((user, t, x, is_purchase))
    return out


def shuffled(x: dict, rng: random.Random) -> dict:
    keys = list(x)
    rng.shuffle(keys)
    return {k: x[k] for k in keys}


# -- every model of ours through the same checks ---------------------------------------------


def _propensity():
    return PurchasePropensity(FEATURES, horizon_us=DAY_US, min_spacing_us=0, max_pending=50)


SEGMENT_NAMES = {
    "recency": "seconds_since_last_purchase",
    "recency_days_per_unit": 1 / 86_400,
    "frequency": "purchase_count",
    "monetary": "spend_total",
    "avg_order_value": None,
}


def _segments():
    return UserSegments(n_clusters=3, period_us=HOUR_US, **SEGMENT_NAMES)


def _modelset():
    return ModelSet(_propensity(), _segments())


def _run_propensity(m, events):
    out = []
    for user, t, x, p in events:
        out.append(m.observe(user, t, x, p))
        out.append(m.predict_proba_one(x))
        out.append(json.dumps(m.explain_one(x, top=3)))
    out.append(m.stats())
    return out


def _run_segments(m, events):
    out = []
    for user, t, x, _ in events:
        out.append(m.observe(user, t, x))
        out.append(m.predict_one(x))
        out.append(m.segment(x))
    out.append(m.describe())
    return out


def _run_modelset(m, events):
    out = []
    for user, t, x, p in events:
        out.append(m.observe(user, t, x, p))
        out.append(json.dumps(m.profile(x, top=3)))
    m.advance(events[-1][1] + 2 * DAY_US)
    out.append(m.stats())
    return out


MODELS = {
    "propensity": (_propensity, _run_propensity),
    "segments": (_segments, _run_segments),
    "modelset": (_modelset, _run_modelset),
}


@pytest.fixture(params=list(MODELS))
def model_case(request):
    return MODELS[request.param]


def test_deterministic(model_case):
    make, run = model_case
    events = make_stream()
    assert run(make(), events) == run(make(), events)


def test_inputs_not_mutated(model_case):
    make, run = model_case
    events = make_stream(n=120)
    before = copy.deepcopy(events)
    run(make(), events)
    # NaN != NaN, so compare through repr.
    assert repr(events) == repr(before)


def test_feature_order_has_no_effect(model_case):
    make, run = model_case
    events = make_stream()
    rng = random.Random(7)
    reordered = [(u, t, shuffled(x, rng), p) for u, t, x, p in events]
    assert run(make(), events) == run(make(), reordered)


def test_extra_keys_are_ignored(model_case):
    make, run = model_case
    events = make_stream(n=150)
    noisy = [(u, t, {**x, "zzz": 1e9, "aaa": -3.0}, p) for u, t, x, p in events]
    assert run(make(), events) == run(make(), noisy)


def test_pickle_round_trip_gives_identical_predictions(model_case):
    make, run = model_case
    events = make_stream(n=400)
    head, tail = events[:250], events[250:]
    live = make()
    run(live, head)
    restored = pickle.loads(pickle.dumps(live))
    assert run(restored, tail) == run(live, tail)


def test_learning_does_not_keep_references_to_inputs(model_case):
    make, run = model_case
    events = make_stream(n=200)
    scratch = copy.deepcopy(events)
    a, b = make(), make()
    run(a, scratch)
    for _, _, x, _ in scratch:  # mutate every input after the fact
        for k in x:
            x[k] = 1e9
    run(b, events)
    probe = events[-10:]
    assert run(a, probe) == run(b, probe)


# Runs in a child process: only online.models and the events (as JSON on stdin), so that it
# starts fast; it must build the models exactly as _modelset() does.
_REPLAY = """
import json, sys
from online.models import DAY_US, HOUR_US, ModelSet, PurchasePropensity, UserSegments
features, names, events = json.load(sys.stdin)
m = ModelSet(
    PurchasePropensity(tuple(features), horizon_us=DAY_US, min_spacing_us=0, max_pending=50),
    UserSegments(n_clusters=3, period_us=HOUR_US, **names),
)
out = [[m.observe(*e), m.profile(e[2], top=3)] for e in events]
m.advance(events[-1][1] + 2 * DAY_US)
print(json.dumps([out, m.stats()]))
"""


@pytest.mark.slow  # a fresh interpreter importing River: ~3 s of CPU
def test_same_outputs_under_another_hash_seed():
    """A replay in another process (other PYTHONHASHSEED) must reproduce every output."""
    events = make_stream(n=200)
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run(
        [sys.executable, "-c", _REPLAY],
        input=json.dumps([FEATURES, SEGMENT_NAMES, events]),
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = _modelset()
    out = [[m.observe(*e), m.profile(e[2], top=3)] for e in events]
    m.advance(events[-1][1] + 2 * DAY_US)
    assert json.loads(other) == json.loads(json.dumps([out, m.stats()]))


# -- River's own estimator checks, where they apply ------------------------------------------


def _river_checks():
    from online.models.contributor import propensity_model
    from online.models.learners import WindowedLogistic

    for model in (
        preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        WindowedLogistic(first_fit=5, refit_every=20, window=60),
        propensity_model(),
        PurchasePropensity(("a", "b")),
        PurchasePropensity(("a", "b"), model=propensity_model()),
        UserSegments(),
    ):
        for check in checks.yield_checks(model):
            if check.__name__ not in model._unit_test_skips():
                yield pytest.param(model, check, id=f"{type(model).__name__}-{check.__name__}")


@pytest.mark.parametrize(("model", "check"), list(_river_checks()))
def test_river_estimator_checks(model, check):
    check(model.clone())


# River's stream checks pick datasets by estimator type and find none for ours (neither is a
# River Classifier: predict_proba_one returns a float), so run them on data ours can read.
RIVER_STREAM_CHECKS = (
    river_common.check_learn_one,
    river_common.check_pickling,
    river_common.check_shuffle_features_no_impact,
    river_common.check_emerging_features,
    river_common.check_disappearing_features,
    river_common.check_radically_disappearing_features,
    river_common.check_predict_one_pure,
    river_common.check_predict_one_before_any_learn,
    river_common.check_no_state_aliasing_with_input,
    river_common.check_clone_is_independent,
    river_common.check_bounded_memory_growth,
)


def _river_stream_cases():
    phishing = list(datasets.Phishing().take(200))
    yield "propensity", PurchasePropensity(tuple(phishing[0][0])), phishing
    # the served learner, refitting often enough that the checks see several fits
    from online.models.learners import WindowedLogistic

    served = WindowedLogistic(first_fit=10, refit_every=25, window=80)
    yield "propensity-windowed", PurchasePropensity(tuple(phishing[0][0]), model=served), phishing
    yield "windowed", WindowedLogistic(first_fit=10, refit_every=25, window=80), phishing
    rfm = [(x, None) for _, _, x, _ in make_stream(n=200)]
    yield "segments", UserSegments(**SEGMENT_NAMES), rfm


@pytest.mark.parametrize(
    ("model", "dataset", "check"),
    [
        pytest.param(model, dataset, check, id=f"{name}-{check.__name__}")
        for name, model, dataset in _river_stream_cases()
        for check in RIVER_STREAM_CHECKS
    ],
)
def test_river_stream_checks(model, dataset, check):
    check(model.clone(), dataset=dataset)


# -- delayed labels --------------------------------------------------------------------------


class SpyClassifier(base.Classifier):
    """Predicts 0.5, records every learn_one call with the step it happened at."""

    def __init__(self):
        self.calls: list[tuple[int, dict, bool]] = []
        self.step = 0

    def learn_one(self, x, y):
        self.calls.append((self.step, dict(x), y))

    def predict_proba_one(self, x):
        return {False: 0.5, True: 0.5}


def test_labels_learnt_only_after_resolution_and_from_x_at_prediction_time():
    spy = SpyClassifier()
    m = PurchasePropensity(("f",), model=spy, horizon_us=7 * DAY_US, min_spacing_us=HOUR_US,
                           reveal="answer")
    steps = [
        ("ann", 0, {"f": 1.0}, False),  # 0: pending
        ("ann", 30 * 60_000_000, {"f": 1.5}, False),  # 1: within spacing, not held
        ("ann", 2 * HOUR_US, {"f": 2.0}, False),  # 2: pending
        ("bob", 12 * HOUR_US, {"f": 10.0}, False),  # 3: pending
        ("ann", DAY_US, {"f": 3.0}, True),  # 4: ann buys: steps 0 and 2 positive; pending
        ("cat", 8 * DAY_US, {"f": 0.0}, False),  # 5: bob's horizon (7.5d) passed: negative
    ]
    for i, (user, t, x, purchase) in enumerate(steps):
        spy.step = i
        m.observe(user, t, x, purchase)
        x["f"] = -99.0  # the caller reuses its dict: the model must have copied
    assert spy.calls == [
        (4, {"f": 1.0}, True),
        (4, {"f": 2.0}, True),
        (5, {"f": 10.0}, False),
    ]
    # ann's purchase-time question expires at exactly 8d: not yet at watermark 8d, at 8d + 1 yes.
    assert m.pending_size == 2
    spy.step = 6
    m.advance(8 * DAY_US + 1)
    assert spy.calls[3:] == [(6, {"f": 3.0}, False)]
    assert m.stats()["n_positive"] == 2 and m.stats()["n_negative"] == 2


def test_purchase_does_not_answer_a_question_asked_at_the_same_time():
    spy = SpyClassifier()
    m = PurchasePropensity(("f",), model=spy, min_spacing_us=0)
    m.observe("ann", 100, {"f": 1.0})
    m.observe("ann", 100, {"f": 2.0}, is_purchase=True)
    assert spy.calls == [] and m.pending_size == 2


def test_reveal_order_matches_river_simulate_qa():
    """With every event held (spacing 0), labels arrive in `stream.simulate_qa`'s order."""
    horizon = 6 * HOUR_US  # even, and all times even: no reveal ever ties with an event time
    events = [(u, 2 * t, x, p) for u, t, x, p in make_stream(n=250, n_users=5, seed=3)]
    purchases: dict[str, list[int]] = {}
    for u, t, _, p in events:
        if p:
            purchases.setdefault(u, []).append(t)

    def delay(x, y):
        if y:
            return min(tp for tp in purchases[x["user"]] if tp > x["t"]) - x["t"]
        return horizon + 1

    dataset = []
    for i, (u, t, _, _) in enumerate(events):
        y = any(t < tp <= t + horizon for tp in purchases.get(u, ()))
        dataset.append(({"i": i, "user": u, "t": t}, y))
    expected = [
        (x["i"], y)
        for _, x, y in stream.simulate_qa(dataset, moment="t", delay=delay)
        if y is not None
    ]

    spy = SpyClassifier()
    m = PurchasePropensity(("i",), model=spy, horizon_us=horizon, min_spacing_us=0,
                           reveal="answer")
    for i, (u, t, _, p) in enumerate(events):
        m.observe(u, t, {"i": float(i)}, p)
    m.advance(events[-1][1] + horizon + 1)
    assert [(int(x["i"]), y) for _, x, y in spy.calls] == expected
    assert len(expected) == len(events)

    # By default every answer is learnt at its window's end: simulate_qa with a fixed delay.
    fixed = [(x["i"], y) for _, x, y in stream.simulate_qa(
        dataset, moment="t", delay=lambda x, y: horizon + 1) if y is not None]
    spy = SpyClassifier()
    m = PurchasePropensity(("i",), model=spy, horizon_us=horizon, min_spacing_us=0)
    for i, (u, t, _, p) in enumerate(events):
        m.observe(u, t, {"i": float(i)}, p)
    m.advance(events[-1][1] + horizon + 1)
    assert [(int(x["i"]), y) for _, x, y in spy.calls] == fixed
    assert sorted(fixed) == sorted(expected)


def test_pending_queue_is_bounded_and_drops_the_oldest():
    spy = SpyClassifier()
    m = PurchasePropensity(("f",), model=spy, horizon_us=DAY_US, max_pending=3)
    for i in range(5):
        m.observe(f"u{i}", i, {"f": float(i)})
    assert m.pending_size == 3 and m.stats()["n_dropped"] == 2
    m.advance(10 * DAY_US)
    assert [x["f"] for _, x, _ in spy.calls] == [2.0, 3.0, 4.0]


def test_question_of_a_window_is_a_uniform_draw_of_its_events():
    """Not the window's first event (a session start, before any cart): each event of an
    hour is the one held about equally often, and the draw replays identically."""
    counts = [0] * 6
    for u in range(600):
        spy = SpyClassifier()
        m = PurchasePropensity(("f",), model=spy, horizon_us=DAY_US, min_spacing_us=HOUR_US)
        for j in range(u):  # another user first (moments of its own): one draw counter
            m.observe("x", j, {"f": -1.0})
        for k in range(6):
            m.observe("ann", k * 60_000_000, {"f": float(k)})
        m.advance(3 * DAY_US)
        counts[int(next(x["f"] for _, x, _ in spy.calls if x["f"] >= 0))] += 1
    assert min(counts) > 60 and max(counts) < 150, counts


def test_heavy_user_holds_one_question_per_spacing():
    m = PurchasePropensity(("f",), min_spacing_us=HOUR_US)
    for minute in range(120):
        m.observe("heavy", minute * 60_000_000, {"f": 1.0})
    assert m.stats()["n_registered"] == 2 and m.pending_size == 2


def test_event_behind_the_watermark_is_held_and_answered_when_the_log_moves_on():
    spy = SpyClassifier()
    m = PurchasePropensity(("f",), model=spy, horizon_us=DAY_US)
    m.observe("ann", 10 * DAY_US, {"f": 1.0})
    score = m.observe("bob", 2 * DAY_US, {"f": 2.0})
    assert score == 0.5  # scored: nothing learnt and no exposure yet, the prior reads 0.5
    assert m.stats()["n_late"] == 1 and m.pending_size == 2 and spy.calls == []
    m.observe("cat", 10 * DAY_US, {"f": 3.0})  # another user: bob's window is over
    assert [(x["f"], y) for _, x, y in spy.calls] == [(2.0, False)]


def _truth(events, horizon):
    """Per event, whether its user buys in (t, t + horizon] anywhere in the log."""
    buys: dict[str, list[int]] = {}
    for u, t, _, p in events:
        if p:
            buys.setdefault(u, []).append(t)
    return [any(t < b <= t + horizon for b in buys.get(u, ())) for u, t, _, _ in events]


def test_log_in_customer_order_learns_every_label_right():
    """An export listed customer by customer: each user's history spans the whole range, so
    the watermark is at the end after the first user. Every question must still be learnt,
    with the label a time-ordered log would give it (the cause of AUC 0.5 on such logs)."""
    horizon = 3 * DAY_US
    rng = random.Random(5)
    events = []
    for k in range(30):
        t = 0
        for _ in range(rng.randrange(1, 12)):
            t += rng.choice([1, 2, 5, 9]) * DAY_US
            events.append((f"c{k}", t, {"i": float(len(events))}, rng.random() < 0.6))
    spy = SpyClassifier()
    m = PurchasePropensity(("i",), model=spy, horizon_us=horizon, min_spacing_us=0)
    for u, t, x, p in events:
        m.observe(u, t, x, p)
    m.advance(events[-1][1] + horizon + 1)  # the last user's open questions
    m.advance(max(t for _, t, _, _ in events) + horizon + 1)
    learnt = {int(x["i"]): y for _, x, y in spy.calls}
    assert len(spy.calls) == len(events) == len(learnt)
    assert [learnt[i] for i in range(len(events))] == _truth(events, horizon)
    assert m.pending_size == 0


def test_stale_heap_entries_are_compacted():
    m = PurchasePropensity(("f",), min_spacing_us=0, max_pending=10, reveal="answer")
    for i in range(3000):
        m.observe("ann", 2 * i, {"f": 1.0}, is_purchase=True)
    assert m.pending_size == 1 and len(m._heap) <= 2 * 1 + 1025


def test_non_finite_and_missing_features_read_as_fill_value():
    m = PurchasePropensity(("a", "b"), fill_value=0.0)
    for i in range(20):
        m.learn_one({"a": float(i), "b": 1.0}, i % 2 == 0)
    clean = m.predict_proba_one({"a": 0.0, "b": 0.0})
    for x in ({"a": math.nan, "b": math.inf}, {"a": None}, {}):
        assert m.predict_proba_one(x) == clean


def test_a_full_sample_learns_the_same_snapshots_whatever_the_batches():
    """Beyond `max_users` the users with the largest hashes leave the sample for good: one
    that leaves inside a batch must not come back with its later events (each return would
    count as a user joining, and joins trigger snapshots)."""
    from online.models.snapshots import SegmentSnapshots

    rng = random.Random(8)
    n, users = 2000, [f"u{i}" for i in range(90)]
    t = np.cumsum([rng.randrange(0, HOUR_US // 4) for _ in range(n)]).astype(np.int64)
    who = np.array([rng.choice(users) for _ in range(n)], object)
    spend = np.array([rng.uniform(1, 80) for _ in range(n)])
    cols = {"last_event_ts": t.copy(), "last_purchase_ts": t.copy(),
            "rfm_frequency": np.arange(n) % 7 + 1.0, "rfm_monetary": spend,
            "avg_order_value": spend / 2}

    def run(cuts):
        seg = UserSegments(n_clusters=3, seed=0)
        snaps = SegmentSnapshots(seg.inputs, max_users=15, refresh_every=4)
        for a, b in zip([0, *cuts], [*cuts, n], strict=True):
            snaps.observe_many(seg, who[a:b], t[a:b], {k: v[a:b] for k, v in cols.items()})
        return pickle.dumps(seg.describe()), snaps.stats()

    one_by_one = run(list(range(1, n)))
    assert one_by_one[1]["sampled_users"] == 15
    assert run([]) == one_by_one
    assert run(sorted(rng.sample(range(1, n), 30))) == one_by_one


# -- explanations ----------------------------------------------------------------------------


def test_linear_contributions_add_up_to_the_logit():
    m = PurchasePropensity(FEATURES)
    events = make_stream(n=300)
    for _, _, x, p in events:
        m.learn_one(x, p)
    x = events[-1][2]
    top = m.explain_one(x, top=len(FEATURES))
    lr = m._model["LogisticRegression"]
    logit = sum(c["contribution"] for c in top) + lr.intercept
    p = m.predict_proba_one(x)
    assert math.isclose(logit, math.log(p / (1 - p)), rel_tol=1e-9, abs_tol=1e-12)
    assert [c["feature"] for c in top] == sorted(
        FEATURES, key=lambda f: (-abs(next(c for c in top if c["feature"] == f)["contribution"]), f)
    )
    assert m.explain_one(x, top=2) == top[:2]
    assert {c["feature"]: c["value"] for c in top} == x


def test_occlusion_explains_a_non_linear_model():
    m = PurchasePropensity(("a", "b"), model=tree.HoeffdingTreeClassifier(grace_period=20))
    rng = random.Random(1)
    for _ in range(400):
        a, b = rng.random(), rng.random()
        m.learn_one({"a": a, "b": b}, a > 0.5)
    top = m.explain_one({"a": 0.9, "b": 0.5}, top=2)
    assert top[0]["feature"] == "a" and top[0]["contribution"] > 0
    assert set(top[0]) == {"feature", "value", "contribution"}


# -- segments --------------------------------------------------------------------------------


def test_a_user_contributes_at_most_once_per_period():
    s = UserSegments(**SEGMENT_NAMES)
    x = {"purchase_count": 3.0, "spend_total": 90.0, "seconds_since_last_purchase": 3600.0}
    learnt = [s.observe("heavy", h * HOUR_US, x) for h in range(48)]
    assert learnt == [True] + [False] * 23 + [True] + [False] * 23
    assert s.observe("other", 47 * HOUR_US, x) is True
    assert sum(seg["size"] for seg in s.describe()) == 3


def test_segment_prediction_matches_river_kmeans_and_is_pure():
    s = UserSegments(n_clusters=4, **SEGMENT_NAMES)
    for user, t, x, _ in make_stream(n=300, n_users=30):
        s.observe(user, t, x)
    for _, _, x, _ in make_stream(n=50, seed=9):
        before = pickle.dumps(s)
        z = s._scaler.transform_one(s.rfm(x))
        assert s.predict_one(x) == s._kmeans.predict_one(z)
        assert pickle.dumps(s) == before


def test_segment_labels_describe_centroids_against_the_mean():
    s = UserSegments(n_clusters=2, seed=1, period_us=1)
    whale = {"rfm_recency_days": 1.0, "rfm_frequency": 50.0, "rfm_monetary": 9e3}
    gone = {"rfm_recency_days": 200.0, "rfm_frequency": 1.0, "rfm_monetary": 9.0}
    whale["avg_order_value"] = whale["rfm_monetary"] / whale["rfm_frequency"]
    gone["avg_order_value"] = 9.0
    for t in range(60):
        s.observe("whale", t, whale)
        s.observe("gone", t, gone)
    assert s.segment(whale)["label"] == "frequent, high spend, recent, large baskets"
    assert s.segment(gone)["label"] == "occasional, low spend, lapsed, small baskets"
    assert s.segment(whale)["centroid_distance"] < 0.1
    capped = {0: math.log1p(365.0), 1: 0.0, 2: 0.0, 3: 0.0}
    for recency in (-1.0, math.nan, None):  # the catalogue's "no purchase yet" and worse
        assert s.rfm({"rfm_recency_days": recency, "rfm_frequency": 0.0}) == capped
    assert s.rfm({"rfm_recency_days": 9e9})[0] == math.log1p(365.0)


# -- the model set ---------------------------------------------------------------------------


def test_profile_fields():
    m = _modelset()
    events = make_stream(n=200)
    for user, t, x, p in events:
        m.observe(user, t, x, p)
    profile = m.profile(events[-1][2], top=2)
    assert set(profile) == {"segment", "propensity", "model_version"}
    assert set(profile["segment"]) == {"id", "label", "centroid_distance"}
    assert profile["propensity"]["horizon"] == "1d"
    assert 0.0 <= profile["propensity"]["score"] <= 1.0
    assert profile["propensity"]["score"] == m.score(events[-1][2])
    assert len(profile["propensity"]["top_features"]) == 2
    assert profile["model_version"] == m.model_version


def test_model_version_tracks_configuration_and_resets_not_learning():
    a, b = _modelset(), _modelset()
    assert a.model_version == b.model_version
    version = a.model_version
    for user, t, x, p in make_stream(n=100):
        a.observe(user, t, x, p)
    assert a.model_version == version
    other = ModelSet(PurchasePropensity(FEATURES, horizon_us=2 * DAY_US), _segments())
    assert other.model_version != version
    a.reset()
    assert a.model_version not in (version, b.model_version)
    assert a.propensity.stats()["n_learnt"] == 0 and a.propensity.pending_size == 0
    reset_version = a.model_version
    a.replace_segments(_segments())
    assert a.model_version != reset_version


def test_state_dict_round_trip():
    events = make_stream(n=400)
    live = _modelset()
    _run_modelset(live, events[:250])
    live.reset()
    _run_modelset(live, events[:250])
    restored = ModelSet.from_bytes(live.to_bytes())
    assert restored.model_version == live.model_version
    assert _run_modelset(restored, events[250:]) == _run_modelset(live, events[250:])
    with pytest.raises(ValueError, match="format"):
        ModelSet.from_state_dict({**live.state_dict(), "format": 0})


def test_drift_monitor_sees_every_resolved_prediction():
    m = _modelset()
    _run_modelset(m, make_stream(n=300))
    assert m.drift.n_updates == m.propensity.stats()["n_learnt"] > 0
    assert m.stats()["drift"]["n_updates"] == m.drift.n_updates


# -- the batch path --------------------------------------------------------------------------


def _as_columns(events, columns):
    users = np.array([u for u, _, _, _ in events], dtype=object)
    ts = np.array([t for _, t, _, _ in events], dtype=np.int64)
    X = np.array([[x.get(c, math.nan) for c in columns] for _, _, x, _ in events])
    flags = np.array([p for _, _, _, p in events], dtype=bool)
    return users, ts, X, flags


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_batches_give_the_per_event_results_whatever_their_size(chunk):
    events = make_stream(n=300)
    # A NaN and a column the models do not read, in an order of our own.
    events[5][2]["carts_7d"] = math.nan
    columns = ("zzz_unused", *reversed(FEATURES))
    per_event = _modelset()
    expected = [per_event.observe(u, t, x, p) for u, t, x, p in events]
    batched = _modelset()
    users, ts, X, flags = _as_columns(events, columns)
    got = []
    for lo in range(0, len(events), chunk):
        sl = slice(lo, lo + chunk)
        got += batched.observe_many(users[sl], ts[sl], X[sl], flags[sl], columns)
    assert got == expected
    probe = events[-20:]
    assert _run_modelset(batched, probe) == _run_modelset(per_event, probe)


def test_batch_of_plain_lists():
    events = make_stream(n=50)
    users, ts, X, flags = _as_columns(events, FEATURES)
    a, b = _propensity(), _propensity()
    expected = [a.observe(u, t, x, p) for u, t, x, p in events]
    assert b.observe_many(list(users), list(ts), X.tolist(), list(flags)) == expected


def test_batch_shape_errors_name_what_is_wrong():
    m = _modelset()
    with pytest.raises(ValueError, match="lack the propensity features"):
        m.observe_many(["a"], [0], np.zeros((1, 1)), [False], ("event_count",))
    with pytest.raises(ValueError, match=r"shape \(n_events, 5\)"):
        m.propensity.observe_many(["a"], [0], np.zeros((1, 4)), [False])
    with pytest.raises(ValueError, match="one entry per event"):
        m.propensity.observe_many(["a", "b"], [0], np.zeros((1, 5)), [False])


def test_profile_many_equals_profile_per_user():
    m = _modelset()
    events = make_stream(n=200)
    for user, t, x, p in events:
        m.observe(user, t, x, p)
    latest = {u: x for u, _, x, _ in events}
    columns = ("zzz_unused", *reversed(FEATURES))
    X = np.array([[x.get(c, 0.0) for c in columns] for x in latest.values()])
    assert m.profile_many(X, columns, top=3) == [m.profile(x, top=3) for x in latest.values()]


def test_drift_is_detected_after_the_concept_flips():
    m = PurchasePropensity(("f",), horizon_us=5, min_spacing_us=0)
    rng = random.Random(0)
    flip_at = 15_000
    for i in range(3000):
        t = 10 * i
        f = float(rng.random() < 0.5)
        buys = (f == 1.0) if t < flip_at else (f == 0.0)
        m.observe(f"u{i}", t, {"f": f})
        if buys:
            m.observe(f"u{i}", t + 1, {"f": f}, is_purchase=True)
    monitor = m.drift_monitor
    assert monitor.n_detections >= 1
    assert flip_at <= monitor.last_detected_us <= 30_000


def test_erase_user_leaves_no_trace_of_the_id():
    m = _modelset()
    events = make_stream(n=200)
    for user, t, x, p in events:
        m.observe(user, t, x, p)
    who = events[-1][0]  # just seen: held questions and a mark in the current period
    pending = m.propensity.pending_size
    held = len(m.propensity._open.get(who, ()))
    assert held > 0
    assert m.erase_user(who) == {"pending_dropped": held, "window_rows": 0, "period_seen": 1}
    assert m.propensity.pending_size == pending - held
    assert who.encode() not in pickle.dumps(m.state_dict())
    assert m.erase_user(who) == {"pending_dropped": 0, "window_rows": 0, "period_seen": 0}
    m.advance(10**18)  # the other questions still resolve
    assert m.propensity.pending_size == 0


# -- segments learnt on snapshots ------------------------------------------------------------


def test_segment_labels_are_distinct():
    seg = UserSegments(n_clusters=3, seed=0)
    rng = random.Random(0)
    # two groups that differ only slightly in spend: the plain words would read the same
    rows = [[rng.uniform(1, 3), 10.0 + rng.random(), 500.0 * (1 + (i % 3) * 0.2), 50.0]
            for i in range(300)]
    columns = ("rfm_recency_days", "rfm_frequency", "rfm_monetary", "avg_order_value")
    seg.learn_snapshot(np.array(rows), columns)
    labels = [d["label"] for d in seg.describe()]
    assert len(set(labels)) == 3, labels
    # equal words on all four axes: told apart by their rank on spend, in words
    same = UserSegments(n_clusters=3, seed=0)
    same.learn_snapshot(np.array([[1.0, 40.0, 4000.0 * (1 + (i % 3)), 100.0] for i in range(90)]
                                 + [[300.0, 1.0, 10.0, 10.0]] * 300), columns)
    words = [d["label"] for d in same.describe()]
    assert len(set(words)) == 3 and sum("spend rank" in w for w in words) >= 2, words


def test_empty_segment_is_reseeded_and_reported():
    seg = UserSegments(n_clusters=4, seed=0, fresh_starts=0)  # the warm start alone
    columns = ("rfm_recency_days", "rfm_frequency", "rfm_monetary", "avg_order_value")
    rng = random.Random(1)
    loyal = [[1.0, 40.0, 4000.0, 100.0]] * 50
    lapsed = [[300.0 + rng.random(), 1.0, 20.0, 20.0] for _ in range(50)]
    seg.learn_snapshot(np.array(loyal + lapsed), columns)
    # far-off start: the random initial centres win no rows, so some must be re-seeded
    assert seg.stats()["reseeded"] >= 1
    assert seg.stats()["empty"] == 0 and not any(d["empty"] for d in seg.describe())
    assert {seg.predict_one(dict(zip(columns, loyal[0], strict=True))),
            seg.predict_one(dict(zip(columns, lapsed[0], strict=True)))} != {0}


def test_snapshots_learn_at_one_time_and_ignore_batch_boundaries():
    """Users are snapshotted together at period starts, so lapsed users keep growing recency;
    splitting the same events into other batches learns exactly the same."""
    from online.models.snapshots import SegmentSnapshots

    rng = random.Random(3)
    n, users = 3000, [f"u{i}" for i in range(60)]
    t = np.cumsum([rng.randrange(0, 3 * HOUR_US) for _ in range(n)]).astype(np.int64)
    who = np.array([rng.choice(users[:20] if k > n // 2 else users) for k in range(n)], object)
    last_buy = {}
    cols = {"last_event_ts": t.copy(), "last_purchase_ts": np.zeros(n, np.int64),
            "rfm_frequency": np.zeros(n), "rfm_monetary": np.zeros(n),
            "avg_order_value": np.zeros(n)}
    counts = {}
    for k in range(n):
        u = who[k]
        counts[u] = counts.get(u, 0) + 1
        last_buy[u] = int(t[k])
        cols["last_purchase_ts"][k] = last_buy[u]
        cols["rfm_frequency"][k] = counts[u]
        cols["rfm_monetary"][k] = 25.0 * counts[u]
        cols["avg_order_value"][k] = 25.0

    def run(cuts):
        seg = UserSegments(n_clusters=3, seed=0)
        snaps = SegmentSnapshots(seg.inputs, share=1.0, refresh_every=10**9)
        for a, b in zip([0, *cuts], [*cuts, n], strict=True):
            snaps.observe_many(seg, who[a:b], t[a:b], {k: v[a:b] for k, v in cols.items()})
        return seg, snaps

    one, snaps = run([])
    other, _ = run(sorted(rng.sample(range(1, n), 25)))
    assert snaps.stats()["snapshots"] == int(t[-1] // DAY_US - t[0] // DAY_US)
    assert pickle.dumps(one.describe()) == pickle.dumps(other.describe())
    # the 40 users who stopped half-way are lapsed by the end: one centre sits far out on
    # recency (a centroid learnt at event times would sit near 0 on every axis)
    assert any("lapsed" in d["label"] for d in one.describe()), one.describe()


# -- explanations ----------------------------------------------------------------------------


def _learner(name: str):
    from online.models.contributor import default_propensity_model, propensity_model

    return {"served": propensity_model, "federated": default_propensity_model}[name]()


@pytest.fixture(params=["served", "federated"])
def learner(request):
    """The served propensity learner and the SGD pipeline federated models install into."""
    return request.param


def _trained_default(features, events, learner="served"):
    m = PurchasePropensity(features, model=_learner(learner), horizon_us=DAY_US,
                           min_spacing_us=0)
    for user, t, x, p in events:
        m.observe(user, t, x, p)
    m.advance(events[-1][1] + 2 * DAY_US)
    return m


def test_equal_features_are_one_reason(learner):
    events = [(u, t, {**x, "copy": x["carts_7d"]}, p) for u, t, x, p in make_stream(n=600)]
    m = _trained_default((*FEATURES, "copy"), events, learner)
    for _, _, x, _ in events[-30:]:
        reasons = m.explain_one(x, top=3)
        names = [r["feature"] for r in reasons]
        assert not {"copy", "carts_7d"} <= set(names), reasons
        assert len(reasons) == 3
        for r in reasons:
            if r["feature"] in ("copy", "carts_7d") and r["contribution"] != 0.0:
                assert r["same_as"] == ["copy" if r["feature"] == "carts_7d" else "carts_7d"]


def test_default_propensity_reads_no_alias_of_another_feature():
    from online.models.contributor import ALIASES, ModelContributor

    features = ModelContributor().models.propensity.features
    assert not set(ALIASES) & set(features) and set(ALIASES.values()) <= set(features)


def test_removing_the_top_reason_moves_the_score_most(learner):
    """Faithfulness: set each feature in turn to its learnt mean (no contribution); the top
    reason is the one whose removal changes the score the most."""
    events = make_stream(n=800, seed=4)
    m = _trained_default(FEATURES, events, learner)
    model = m._model
    scaler = model.steps["SignedLogScaler"] if learner == "federated" else model
    mean_raw = scaler.reference_one(FEATURES)
    checked = 0
    for _, _, x, _ in events[-40:]:
        p = m.predict_proba_one(x)
        moves = {f: abs(p - m.predict_proba_one({**x, f: mean_raw[f]})) for f in FEATURES}
        top = m.explain_one(x, top=1)[0]
        if top["contribution"] == 0.0:
            continue
        assert moves[top["feature"]] == pytest.approx(max(moves.values()), rel=1e-9), (top, moves)
        checked += 1
    assert checked >= 30
