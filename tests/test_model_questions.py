"""How questions are held and weighed, and what scores before anything is learnt."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from river import base

from online.models import DAY_US, HOUR_US, PurchasePropensity
from online.models.learners import WindowedLogistic
from online.models.propensity import user_key
from online.models.survival import kaplan_meier

MINUTE = 60_000_000


class GroupSpy(base.Classifier):
    """Predicts 0.3, records every learn_one call with its weight and group."""

    def __init__(self):
        self.calls: list[tuple[dict, bool, float, int | None]] = []

    def learn_one(self, x, y, w: float = 1.0, group: int | None = None):
        self.calls.append((dict(x), y, w, group))

    def predict_proba_one(self, x):
        return {False: 0.7, True: 0.3}


def test_the_lines_of_one_order_are_one_moment_with_the_features_after_the_last():
    spy = GroupSpy()
    m = PurchasePropensity(("lines",), model=spy, horizon_us=DAY_US)
    for line in range(1, 51):  # one order of 50 lines, one time
        m.observe("ann", 0, {"lines": float(line)}, is_purchase=True)
    m.observe("ann", 10 * MINUTE, {"lines": 51.0})  # a second moment in the same hour
    m.advance(2 * DAY_US)
    assert m.stats()["pending"] == 0 and len(spy.calls) == 1
    x, y, w, group = spy.calls[0]
    # the held moment is one of the two, with the features as they stood after it
    assert x["lines"] in (50.0, 51.0) and not y
    assert w == 2.0  # the two moments of its spacing window, not 51 events
    assert group == user_key("ann")


def test_a_learner_without_groups_learns_plain_examples():
    class Plain(base.Classifier):
        def __init__(self):
            self.calls = []

        def learn_one(self, x, y):
            self.calls.append((x, y))

        def predict_proba_one(self, x):
            return {False: 0.5, True: 0.5}

    plain = Plain()
    m = PurchasePropensity(("f",), model=plain, horizon_us=HOUR_US, min_spacing_us=MINUTE)
    for i in range(5):
        m.observe("ann", i * MINUTE // 2, {"f": float(i)})
    m.advance(3 * HOUR_US)
    assert len(plain.calls) == 3


def test_user_keys_are_stable_and_spread():
    assert user_key("ps_abc") == user_key("ps_abc") != user_key("ps_abd")
    keys = {user_key(f"u{i}") for i in range(10_000)}
    assert len(keys) == 10_000 and all(0 <= k < 2**63 for k in keys)


def test_a_heavy_users_questions_are_capped_in_the_window():
    """Light users buy after carts; one heavy user, with as many questions as all of them,
    does the opposite. Capped per user, the light users' rule wins."""
    rng = random.Random(11)
    rows = []
    for i in range(1500):
        carts = float(rng.randrange(4))
        rows.append((f"light{i}", carts, rng.random() < (0.8 if carts >= 2 else 0.1)))
        carts = float(rng.randrange(4))
        rows.append(("heavy", carts, rng.random() < (0.1 if carts >= 2 else 0.8)))
    capped, uncapped = WindowedLogistic(first_fit=3000), WindowedLogistic(
        first_fit=3000, group_cap=None)
    for user, carts, y in rows:
        for model in (capped, uncapped):
            model.learn_one({"carts": carts}, y, group=user_key(user))
    assert abs(uncapped.weights["carts"]) < 0.3 < capped.weights["carts"]


def _brute_km(answered, censored, horizon):
    """Kaplan-Meier by its definition: the product over distinct answer ages a <= horizon
    of (1 - answers at a / questions still at risk at a)."""
    survival = 1.0
    for a in sorted(set(min(v, horizon) for v in answered)):
        at_risk = sum(min(v, horizon) >= a for v in answered + censored)
        survival *= 1.0 - sum(min(v, horizon) == a for v in answered) / at_risk
    return 1.0 - survival


@pytest.mark.parametrize("seed", range(20))
def test_kaplan_meier_matches_its_definition_once_a_horizon_was_seen(seed):
    rng = random.Random(seed)
    answered = [rng.randrange(12) for _ in range(rng.randrange(0, 30))]
    # one question has waited a whole horizon: the estimate is Kaplan-Meier's own
    censored = [rng.randrange(12) for _ in range(rng.randrange(1, 30))] + [12]
    n = len(answered) + len(censored)
    expected = (_brute_km(answered, censored, 10) * n + 0.5) / (n + 1)
    assert kaplan_meier(answered, censored, 10) == pytest.approx(expected, abs=1e-12)


def test_before_any_answer_is_learnt_the_score_is_the_shops_purchase_share():
    """A quarter of the users buy every day, the others never: the prior moves from 1/2
    towards the share it sees, and never to 0 or 1."""
    spy = GroupSpy()
    m = PurchasePropensity(("f",), model=spy, horizon_us=7 * DAY_US)
    assert m.predict_proba_one({"f": 0.0}) == 0.5  # nothing seen
    t = 0
    scores = []
    for day in range(6):  # less than a horizon: nothing can be learnt yet
        for u in range(40):
            t = day * DAY_US + u * MINUTE
            scores.append(m.observe(f"u{u}", t, {"f": 1.0}, is_purchase=(u % 4 == 0 and day)))
    assert spy.calls == []  # nothing learnt: every score came from the prior
    # a quarter of the users buy every day (P = 1/4 per question): with most of a horizon
    # seen the prior is close to it, having started at 1/2
    assert scores[0] == 0.5 and 0.2 < scores[-1] < 0.32
    assert all(0.0 < s < 1.0 for s in scores)
    assert m.predict_proba_one({"f": 5.0}) == scores[-1]  # one number for every x


def test_a_learner_that_knows_something_scores_from_the_start():
    learner = WindowedLogistic()
    learner.warm_start({"f": 0.0}, {"f": 1.0}, {"f": 2.0}, -1.0)
    m = PurchasePropensity(("f",), model=learner, horizon_us=DAY_US)
    assert m.observe("ann", 0, {"f": 1.0}) == pytest.approx(
        learner.predict_proba_one({"f": 1.0})[True])
    # and once anything is learnt, the learner scores even an uninformed one
    fresh = PurchasePropensity(("f",), model=GroupSpy(), horizon_us=DAY_US)
    fresh.observe("ann", 0, {"f": 1.0})
    fresh.advance(2 * DAY_US)
    assert fresh.stats()["n_learnt"] == 1
    assert fresh.observe("bob", 2 * DAY_US, {"f": 1.0}) == 0.3


def test_the_compiled_kaplan_meier_pass_is_the_python_one_bit_for_bit():
    from online.kernels.survival import km_pass
    from online.models.survival import _km_pass

    rng = random.Random(11)
    for _ in range(400):
        horizon = rng.choice([10, 7 * 86_400_000_000])
        answered = [rng.randrange(-horizon // 10, 2 * horizon) for _ in range(rng.randrange(40))]
        censored = [rng.choice([horizon, rng.randrange(2 * horizon)])
                    for _ in range(rng.randrange(1, 40))]
        got = km_pass(np.array(answered, np.int64), np.array(censored, np.int64), horizon)
        assert tuple(float(v) for v in got) == tuple(
            float(v) for v in _km_pass(answered, censored, horizon))
    # floats and ints beyond 2^61 take the Python pass, with the same meaning
    assert kaplan_meier([1.5, 2.0], [10.0, 10.0], 10) == pytest.approx(0.5)
    assert kaplan_meier([2**70], [2**70], 2**70) == kaplan_meier([1], [1], 1)


def test_kaplan_meier_reads_half_with_nothing_seen_and_carries_a_falling_hazard():
    assert kaplan_meier([], [0, 0, 0], 100) == pytest.approx(0.5)
    # answers come early (ages 1-2), none later: the late hazard is 0, so what the window
    # did not show reads 1/2 only for its unseen share
    early = kaplan_meier([1, 2] * 10, list(range(3, 60)), 100)
    constant = kaplan_meier(list(range(1, 60, 3)), list(range(3, 60)), 100)
    assert early < constant


def test_an_erased_users_examples_leave_the_learners_window():
    m = PurchasePropensity(("f",), model=WindowedLogistic(), horizon_us=HOUR_US,
                           min_spacing_us=MINUTE)
    for i in range(300):
        for user in ("ann", "bob", "cat"):
            m.observe(user, i * 2 * MINUTE, {"f": float(i % 7)}, is_purchase=i % 5 == 0)
    learner = m._model
    ann = user_key("ann")
    mine = int((learner._g == ann).sum())
    assert mine > 50
    assert m.erase_learnt("ann") == mine
    assert not (learner._g == ann).any() and m.erase_learnt("ann") == 0
    assert learner._w[:learner._n].sum() > 0  # the others' examples stay
    learner._fit()  # a refit after the erasure reads only the others
    assert math.isfinite(learner.intercept)


def test_draws_read_from_a_block_are_the_counters_own():
    from online.models.draws import unit

    def splitmix(n):
        z = (n * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        return ((z ^ (z >> 31)) >> 11) * (1.0 / 9007199254740992.0)

    rng = random.Random(2)
    counters = [*range(3000), *(rng.randrange(2**63) for _ in range(300)), 2**63 - 3, 2**64, -5]
    rng.shuffle(counters[1000:])
    assert [unit(n) for n in counters] == [splitmix(n) for n in counters]
    assert all(0.0 <= unit(n) < 1.0 for n in range(100))
