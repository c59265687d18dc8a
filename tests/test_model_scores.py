"""Scoring only the events held as questions (``observe_many(..., scores=False)``, the
projector's path without a recorder) learns exactly what scoring every event learns."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from test_models import FEATURES, _as_columns, _modelset, _run_modelset, make_stream

from online.models import HOUR_US, PurchasePropensity


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
