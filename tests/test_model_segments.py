"""User segments: the restart choice on a snapshot and the cache of segment labels."""

from __future__ import annotations

import math
import pickle
import random

import numpy as np
import pytest

from online.models import DAY_US
from online.models.kmeans import choose, inertia, kmeans_pp, lloyd, separation
from online.models.segments import UserSegments

COLUMNS = ("rfm_recency_days", "rfm_frequency", "rfm_monetary", "avg_order_value")


def _snapshot(seed: int, shift: float = 0.0) -> np.ndarray:
    rng = random.Random(seed)
    loyal = [[1.0 + shift + rng.random(), 30.0 + rng.random() * 5, 3000.0, 100.0]
             for _ in range(60)]
    casual = [[40.0 + shift + rng.random() * 5, 3.0, 90.0 + rng.random() * 20, 30.0]
              for _ in range(60)]
    lapsed = [[300.0 + shift + rng.random() * 20, 1.0, 20.0, 20.0] for _ in range(60)]
    return np.array(loyal + casual + lapsed)


def test_choose_prefers_the_better_separated_of_near_equal_fits():
    g = np.random.default_rng(7)
    centres = g.uniform(-4, 4, size=(5, 2))
    Z = np.concatenate([g.normal(c, g.uniform(0.3, 1.2), size=(60, 2)) for c in centres])
    rng = np.random.default_rng(7)
    cands = [lloyd(Z, kmeans_pp(Z, 3, rng), 50)[0] for _ in range(10)]
    cost = [inertia(Z, C) for C in cands]
    sep = [separation(Z, C) for C in cands]
    lowest = int(np.argmin(cost))
    assert choose(Z, cands, 0.0) == lowest
    kept = choose(Z, cands, 0.02)
    # another partition, within 2% of the lowest inertia and better separated
    assert kept != lowest and cost[kept] <= 1.02 * cost[lowest] and sep[kept] > sep[lowest]
    assert sep[kept] == max(s for c, s in zip(cost, sep, strict=True)
                            if c <= 1.02 * cost[lowest])
    # ties go to the first candidate (the warm start)
    assert choose(Z, [cands[kept], cands[kept].copy()], 0.02) == 0
    assert separation(Z, cands[0][:1]) == 1.0  # one centre: nothing to be confused with


def test_snapshot_choice_is_a_function_of_the_snapshots():
    def learnt(tolerance):
        seg = UserSegments(n_clusters=3, seed=0, inertia_tolerance=tolerance)
        for day in range(4):
            seg.learn_snapshot(_snapshot(day, shift=day), COLUMNS)
        return seg

    assert pickle.dumps(learnt(0.02).describe()) == pickle.dumps(learnt(0.02).describe())
    labels = [d["label"] for d in learnt(0.0).describe()]
    assert len(set(labels)) == 3 and any("lapsed" in w for w in labels), labels
    with pytest.raises(ValueError, match="inertia_tolerance"):
        UserSegments(inertia_tolerance=-0.1)


def _labels(seg: UserSegments) -> list[str]:
    return [seg.label(c) for c in range(seg.n_clusters)]


def _rebuilt(seg: UserSegments) -> list[str]:
    return seg._build_labels()


def test_labels_are_cached_until_the_centres_change():
    seg = UserSegments(n_clusters=3, seed=0)
    seg.learn_snapshot(_snapshot(0), COLUMNS)
    first = _labels(seg)
    assert seg._labels is not None and first == _rebuilt(seg)
    assert seg.label(0) is seg.label(0)  # served from the cache, not rebuilt
    # a snapshot of another population moves the centres: labels follow
    other = np.array([[2.0, 50.0, 9000.0, 200.0]] * 100 + [[5.0, 2.0, 30.0, 15.0]] * 100
                     + [[200.0, 1.0, 10.0, 10.0]] * 100)
    seg.learn_snapshot(other, COLUMNS)
    assert _labels(seg) == _rebuilt(seg)
    # learning one user at a time invalidates too
    online = UserSegments(n_clusters=2, seed=1, avg_order_value=None)
    before = _labels(online)
    assert before == ["unformed", "unformed"]
    for i in range(40):
        online.observe("loyal", i * DAY_US, {"rfm_recency_days": 2.0, "rfm_frequency": 30,
                                             "rfm_monetary": 3e3})
        online.observe("lapsed", i * DAY_US, {"rfm_recency_days": 300.0, "rfm_frequency": 1,
                                              "rfm_monetary": 20})
        assert _labels(online) == _rebuilt(online)
    assert _labels(online) != before


def test_label_cache_survives_pickling_and_old_pickles():
    seg = UserSegments(n_clusters=3, seed=0)
    seg.learn_snapshot(_snapshot(0), COLUMNS)
    labels = _labels(seg)
    twin = pickle.loads(pickle.dumps(seg))
    assert _labels(twin) == labels
    twin.learn_snapshot(_snapshot(1, shift=30.0), COLUMNS)  # the copy's cache is its own
    assert _labels(twin) == _rebuilt(twin) and _labels(seg) == labels
    # a model pickled before labels were cached (no `_labels`) builds them on first read
    old = pickle.loads(pickle.dumps(seg))
    del old.__dict__["_labels"]
    assert _labels(old) == labels
    assert [d["label"] for d in old.describe()] == labels


@pytest.mark.parametrize("options", [{}, {"avg_order_value": None},
                                     {"recency_days_per_unit": 1 / 86400, "recency_cap_days": 30},
                                     {"recency_cap_days": math.inf}])
def test_rfm_by_column_equals_rfm_per_row_bit_for_bit(options):
    seg = UserSegments(**options)
    columns = seg.inputs
    g = np.random.default_rng(3)
    X = g.lognormal(2, 3, size=(5000, len(columns))) * g.choice([-1, 1], size=(5000, len(columns)),
                                                                p=[0.1, 0.9])
    odd = g.random(X.shape) < 0.2  # NaN, infinities, signed zeros, negatives, extremes
    X[odd] = g.choice([np.nan, np.inf, -np.inf, -0.0, 0.0, -1.0, 1e308, 5e-324], size=odd.sum())
    by_column = seg.rfm_many(X, columns)
    per_row = np.array([list(seg.rfm(dict(zip(columns, row, strict=True))).values())
                        for row in X.tolist()])
    assert by_column.shape == per_row.shape == (len(X), 4)
    assert np.array_equal(by_column.view(np.int64), per_row.view(np.int64))
    with pytest.raises(ValueError, match="shape"):
        seg.rfm_many(X[:, :2], columns)
