"""Scoring only the events held as questions (``observe_many(..., scores=False)``, the
projector's path without a recorder) learns exactly what scoring every event learns."""

from __future__ import annotations

import operator
import pickle

import numpy as np
import pytest
from test_models import FEATURES, _as_columns, _modelset, _run_modelset, make_stream

from online.kernels.signed import row_logits
from online.models import HOUR_US, PurchasePropensity
from online.models.learners import WindowedLogistic


@pytest.mark.parametrize("chunk", [1, 13, 10_000])
def test_unscored_batches_learn_what_scored_ones_learn(chunk):
    events = make_stream(n=400, n_users=6)
    scored, unscored = _modelset(), _modelset()
    users, ts, X, flags = _as_columns(events, FEATURES)
    scores = []
    for lo in range(0, len(events), chunk):
        sl = slice(lo, lo + chunk)
        scores += scored.observe_many(users[sl], ts[sl], X[sl], flags[sl], FEATURES)
        assert unscored.observe_many(users[sl], ts[sl], X[sl], flags[sl], FEATURES,
                                     scores=False) == []
    assert len(scores) == len(events)
    # the held questions (their scores), the learner and the drift monitor: all the same
    assert pickle.dumps(unscored.propensity) == pickle.dumps(scored.propensity)
    assert unscored.stats() == scored.stats()
    probe = events[-20:]
    assert _run_modelset(unscored, probe) == _run_modelset(scored, probe)


def test_spacing_windows_skip_the_score_but_keep_the_held_ones():
    # one question per user-hour: most events are in a held window and are not asked
    events = make_stream(n=300, n_users=3)
    users, ts, X, flags = _as_columns(events, FEATURES)

    def propensity(counter):
        p = PurchasePropensity(features=FEATURES, horizon_us=6 * HOUR_US,
                               min_spacing_us=HOUR_US)
        ask = p._ask

        def counted(vals):
            counter.append(1)
            return ask(vals)

        p._ask = counted
        return p

    every, held = [], []
    a, b = propensity(every), propensity(held)
    Xp = np.ascontiguousarray(X)
    expected = a.observe_many(users, ts, Xp, flags)
    assert b.observe_many(users, ts, Xp, flags, scores=False) == []
    assert len(every) == len(events) > len(held) > 0
    del a._ask, b._ask  # the counters
    assert pickle.dumps(a) == pickle.dumps(b)
    assert [a.predict_proba_one(x) for _, _, x, _ in events[-5:]] == \
        [b.predict_proba_one(x) for _, _, x, _ in events[-5:]]
    assert len(expected) == len(events)


@pytest.mark.parametrize("chunk", [1, 37, 10_000])
def test_a_windowed_learner_scores_a_batch_as_it_scores_each_event(chunk):
    # The batch path (`BatchRows`: signed logs and logits of every row in one compiled call,
    # made again after a refit inside the batch) against `observe` event by event, refits
    # every 25 labels: the same scores, held questions and learner, bit for bit.
    events = make_stream(n=1500, n_users=25, seed=4)
    users, ts, X, flags = _as_columns(events, FEATURES)

    def propensity():
        return PurchasePropensity(FEATURES, model=WindowedLogistic(first_fit=20, refit_every=25,
                                                                   min_class=3),
                                  horizon_us=6 * HOUR_US, min_spacing_us=HOUR_US)

    one, batched = propensity(), propensity()
    expected = [one.observe(u, t, x, p) for u, t, x, p in events]
    got = []
    for lo in range(0, len(events), chunk):
        sl = slice(lo, lo + chunk)
        got += batched.observe_many(users[sl], ts[sl], X[sl], flags[sl])
    assert one._model._n_fits > 20  # refits happened inside batches
    assert np.array(got).tobytes() == np.array(expected).tobytes()
    assert pickle.dumps(batched) == pickle.dumps(one)


def test_row_logits_are_the_sum_of_python_floats():
    rng = np.random.default_rng(5)
    Z = rng.normal(0, 3, (200, 9))
    slopes = rng.normal(0, 1, 9)
    got = row_logits(Z, slopes, 0.37, 50)
    assert not got[:50].any()
    expected = [0.37 + sum(map(operator.mul, slopes.tolist(), row)) for row in Z[50:].tolist()]
    assert got[50:].tolist() == expected
    assert row_logits(np.zeros((3, 0)), np.zeros(0), -1.5, 0).tolist() == [-1.5] * 3
