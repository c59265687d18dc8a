"""The served propensity learner, `WindowedLogistic`."""

from __future__ import annotations

import math
import pickle
import random
from array import array

import numpy as np
import pytest

from online.kernels.signed import signed_log_rows
from online.models import DAY_US, ModelSet, PurchasePropensity
from online.models.contributor import propensity_model
from online.models.learners import WindowedLogistic, signed_log1p
from online.models.signed import signed_logs


def _examples(n: int, seed: int = 0, flip_after: int | None = None) -> list[tuple[dict, bool]]:
    """Carts and spend drive purchases (or, after `flip_after`, their opposite)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        x = {"carts": float(rng.randrange(6)), "spend": rng.lognormvariate(3, 1.5),
             "noise": rng.random()}
        logit = 1.2 * math.log1p(x["carts"]) - 2.0 + 0.2 * math.log1p(x["spend"])
        if flip_after is not None and i >= flip_after:
            logit = -logit
        out.append((x, rng.random() < 1 / (1 + math.exp(-logit))))
    return out


def test_a_refit_is_the_batch_logistic_regression_on_the_window():
    from sklearn.linear_model import LogisticRegression

    data = _examples(600, seed=1)
    model = WindowedLogistic(window=400, first_fit=600, iterations=30, l2_grid=(1.0,))
    for x, y in data:
        model.learn_one(x, y)  # one fit, at the 600th example, on the last 400
    names = list(data[0][0])
    Z = np.array([[signed_log1p(x[k]) for k in names] for x, _ in data[-400:]])
    y = np.array([y for _, y in data[-400:]])
    X = (Z - Z.mean(axis=0)) / Z.std(axis=0)
    batch = LogisticRegression(C=1.0, tol=1e-10, max_iter=1000).fit(X, y)
    got = [model.weights[k] for k in names]
    np.testing.assert_allclose(got, batch.coef_[0], rtol=1e-5, atol=1e-6)
    # the intercept is then set so that the newest fifth's mean score is its positive share
    newest = data[-80:]
    mean_score = np.mean([model.predict_proba_one(x)[True] for x, _ in newest])
    assert mean_score == pytest.approx(np.mean([y for _, y in newest]), abs=1e-9)


def test_the_window_follows_a_drift():
    data = _examples(3000, seed=2, flip_after=1500)
    model = WindowedLogistic(window=500, refit_every=100)
    for x, y in data[:1500]:
        model.learn_one(x, y)
    assert model.weights["carts"] > 0.3
    for x, y in data[1500:]:
        model.learn_one(x, y)
    assert model.weights["carts"] < -0.3  # only the newest 500 examples are fitted


def test_before_a_fit_the_score_is_the_smoothed_base_rate():
    model = WindowedLogistic(first_fit=10)
    assert model.predict_proba_one({"a": 1.0})[True] == 0.5
    for _ in range(3):
        model.learn_one({"a": 1.0}, True)
    assert model.predict_proba_one({"a": 5.0})[True] == pytest.approx(3.5 / 4.0)


def test_one_class_only_gives_no_weights_and_a_finite_intercept():
    model = WindowedLogistic(first_fit=5, refit_every=5)
    for i in range(40):
        model.learn_one({"a": float(i)}, False)
    assert all(w == 0.0 for w in model.weights.values())
    assert 0.0 < model.predict_proba_one({"a": 3.0})[True] < 0.05


def test_separable_labels_do_not_blow_up_the_fit():
    model = WindowedLogistic(first_fit=20, refit_every=20)
    for i in range(400):
        a = float(i % 10)
        model.learn_one({"a": a, "b": float(i % 3)}, a >= 5)
    p_hi, p_lo = (model.predict_proba_one({"a": v, "b": 1.0})[True] for v in (9.0, 0.0))
    assert math.isfinite(model.intercept) and p_hi > 0.9 and p_lo < 0.1


def test_contributions_add_up_to_the_logit_and_are_zero_at_the_mean():
    model = WindowedLogistic(first_fit=50)
    for x, y in _examples(400, seed=3):
        model.learn_one(x, y)
    x = {"carts": 4.0, "spend": 120.0, "noise": 0.3}
    p = model.predict_proba_one(x)[True]
    total = sum(model.contributions_one(x).values()) + model.intercept
    assert total == pytest.approx(math.log(p / (1 - p)), rel=1e-9, abs=1e-12)
    at_mean = model.contributions_one(model.reference_one(x))
    assert all(abs(c) < 1e-9 for c in at_mean.values())


def test_scoring_copy_scores_the_same_and_drops_the_window():
    model = WindowedLogistic(first_fit=50)
    data = _examples(500, seed=4)
    for x, y in data:
        model.learn_one(x, y)
    twin = model.scoring_copy()
    for x, _ in data[:50]:
        assert twin.predict_proba_one(x) == model.predict_proba_one(x)
        assert twin.contributions_one(x) == model.contributions_one(x)
    assert len(pickle.dumps(twin)) * 10 < len(pickle.dumps(model))
    model.learn_one(*data[0])  # the original goes on learning; the copy does not change
    assert twin.predict_proba_one(data[1][0]) == WindowedLogistic.predict_proba_one(
        pickle.loads(pickle.dumps(twin)), data[1][0])


def test_model_versions_keep_the_served_learner_without_its_window():
    models = ModelSet(PurchasePropensity(("carts", "spend"), model=propensity_model(),
                                         horizon_us=DAY_US, min_spacing_us=0))
    for i, (x, y) in enumerate(_examples(400, seed=5)):
        models.propensity.learn_one(x, y)
        models.observe(f"u{i % 7}", i * 60_000_000, x, y)
    frozen = models.frozen()
    x = {"carts": 2.0, "spend": 50.0}
    assert frozen.score(x) == models.score(x)
    assert frozen.propensity._model._Z.shape[0] == 0
    # nothing in the version reaches the window (the constructor's argument was the learner)
    assert frozen.propensity.model is frozen.propensity._model
    assert len(pickle.dumps(frozen.propensity)) < len(pickle.dumps(models.propensity._model))


def test_warm_start_serves_the_given_fit_until_the_first_refit():
    model = WindowedLogistic(first_fit=100)
    model.warm_start({"a": 1.0}, {"a": 2.0}, {"a": 0.5}, -1.0)
    z = signed_log1p(7.0)
    want = 1 / (1 + math.exp(-(-1.0 + 0.5 * (z - 1.0) / 2.0)))
    assert model.predict_proba_one({"a": 7.0})[True] == pytest.approx(want, rel=1e-12)
    model.learn_one({"a": 7.0}, True)
    assert model.predict_proba_one({"a": 7.0})[True] == pytest.approx(want, rel=1e-12)


def test_replays_give_the_same_model_bytes():
    def run():
        m = PurchasePropensity(("carts", "spend", "noise"), model=propensity_model(),
                               horizon_us=DAY_US, min_spacing_us=0)
        scores = [m.observe(f"u{i % 11}", i * 3_600_000_000, x, y)
                  for i, (x, y) in enumerate(_examples(1500, seed=6))]
        return scores, pickle.dumps(m._model)

    assert run() == run()


def test_bad_parameters_name_the_rule():
    with pytest.raises(ValueError, match="window >= 2"):
        WindowedLogistic(window=1)


def test_a_rare_class_with_few_examples_gives_no_weights_yet():
    model = WindowedLogistic(first_fit=20, refit_every=20, min_class=10)
    data = [({"a": float(i % 7)}, i % 50 == 0) for i in range(400)]  # 8 positives in 400
    for x, y in data:
        model.learn_one(x, y)
    assert model.weights == {"a": 0.0}
    assert model.predict_proba_one({"a": 0.0})[True] == pytest.approx(
        model.predict_proba_one({"a": 6.0})[True])
    for x, y in [({"a": 6.0}, True)] * 2:
        model.learn_one(x, y)
    for x, _ in data[:20]:
        model.learn_one(x, False)  # a refit with 10 positives in the window
    assert model.weights["a"] != 0.0


def test_a_weighted_refit_is_the_batch_fit_with_those_sample_weights():
    from sklearn.linear_model import LogisticRegression

    data = _examples(600, seed=5)
    w = np.random.default_rng(5).lognormal(0.0, 1.0, len(data))
    model = WindowedLogistic(window=600, first_fit=600, iterations=30, l2_grid=(1.0,))
    for (x, y), wi in zip(data, w, strict=True):
        model.learn_one(x, y, w=float(wi))
    names = list(data[0][0])
    Z = np.array([[signed_log1p(x[k]) for k in names] for x, _ in data])
    y = np.array([y for _, y in data])
    sw = w * len(w) / w.sum()  # the weights of mean 1 the ridge is counted against
    mean = sw @ Z / len(w)
    std = np.sqrt(sw @ (Z - mean) ** 2 / len(w))
    batch = LogisticRegression(C=1.0, tol=1e-10, max_iter=1000).fit((Z - mean) / std, y,
                                                                      sample_weight=sw)
    np.testing.assert_allclose([model.weights[k] for k in names], batch.coef_[0],
                               rtol=1e-5, atol=1e-6)
    # equal weights are no weights
    plain, scaled = WindowedLogistic(first_fit=600), WindowedLogistic(first_fit=600)
    for x, y in data:
        plain.learn_one(x, y)
        scaled.learn_one(x, y, w=3.0)
    np.testing.assert_allclose([scaled.weights[k] for k in names],
                               [plain.weights[k] for k in names], rtol=1e-9)


def test_a_heavy_user_weighed_down_no_longer_sets_the_model():
    """Light users buy after carts; one heavy user, with as many examples as all of them
    together, does the opposite. Unweighted, the fit splits the difference; weighted by one
    over each user's count, every user counts once and the light users' rule wins."""
    rng = random.Random(3)
    rows = []
    for _ in range(1500):  # light users, one example each
        carts = float(rng.randrange(4))
        rows.append(({"carts": carts}, rng.random() < (0.8 if carts >= 2 else 0.1), 1.0))
    for _ in range(1500):  # the heavy user
        carts = float(rng.randrange(4))
        rows.append(({"carts": carts}, rng.random() < (0.1 if carts >= 2 else 0.8), 1 / 1500))
    rng.shuffle(rows)
    plain, weighted = WindowedLogistic(first_fit=3000), WindowedLogistic(first_fit=3000)
    for x, y, w in rows:
        plain.learn_one(x, y)
        weighted.learn_one(x, y, w=w)
    assert abs(plain.weights["carts"]) < 0.3 < weighted.weights["carts"]


def test_weights_must_be_positive_and_finite():
    model = WindowedLogistic()
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="w must be"):
            model.learn_one({"a": 1.0}, True, w=bad)


def test_signed_logs_in_a_fixed_order_learn_and_score_as_dicts_do():
    """`learn_logs` / `proba_logs` (the propensity's per-event path) give the model and the
    scores `learn_one` / `predict_proba_one` give, bit for bit, also for an order other than
    the learnt one (summed in that order, as a dict in it is)."""
    by_dict, by_logs = WindowedLogistic(first_fit=40), WindowedLogistic(first_fit=40)
    names = ("carts", "spend", "noise")
    data = _examples(700, seed=5)
    for i, (x, y) in enumerate(data):
        if i % 97 == 3:
            x = {**x, "spend": 0.0}
        by_dict.learn_one(x, y, w=1.0 + i % 3, group=i % 13)
        by_logs.learn_logs(names, signed_logs([x[k] for k in names]), y, 1.0 + i % 3, i % 13)
    assert by_logs.weights == by_dict.weights and by_logs.intercept == by_dict.intercept
    assert by_logs.fitted and by_logs._Z.tobytes() == by_dict._Z.tobytes()
    for x, _ in data[:50]:
        assert by_logs.proba_logs(names, signed_logs([x[k] for k in names])) == \
            by_dict.predict_proba_one(x)[True]
        other = ("noise", "carts", "spend")
        assert by_logs.proba_logs(other, signed_logs([x[k] for k in other])) == \
            by_dict.predict_proba_one({k: x[k] for k in other})[True]


def test_the_batch_transform_is_the_per_value_one():
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.lognormal(0, 6, (4000, 3)), -rng.lognormal(0, 2, (1000, 3)),
                        np.array([[0.0, -0.0, 5e-324], [np.nan, np.inf, -np.inf]])])
    got = signed_log_rows(X, 0.0)
    filled = np.where(np.isfinite(X), X, 0.0)
    expected = np.array([signed_logs(row) for row in filled.tolist()])
    assert got.tobytes() == expected.tobytes()


def test_a_propensity_pickled_when_questions_held_raw_values_holds_their_logs():
    raw = PurchasePropensity(features=("carts", "spend"), model=WindowedLogistic())
    held = PurchasePropensity(features=("carts", "spend"), model=WindowedLogistic())
    for i in range(30):
        x = {"carts": float(i % 4), "spend": 10.0 * i}
        held.observe(f"u{i % 5}", i * DAY_US // 10, x)
        raw.observe(f"u{i % 5}", i * DAY_US // 10, x)
    # as pickled before questions held logs: raw values, no `_by_logs`
    state = dict(raw.__dict__)
    del state["_by_logs"]
    for q in state["_open"].values():
        for j, item in enumerate(q):
            q[j] = item[:3] + (array("d", [math.expm1(abs(z)) for z in item[3]]),) + item[4:]
    loaded = PurchasePropensity.__new__(PurchasePropensity)
    loaded.__setstate__(state)
    assert loaded._by_logs
    for q_loaded, q_held in zip(loaded._open.values(), held._open.values(), strict=True):
        for a, b in zip(q_loaded, q_held, strict=True):
            assert a[3] == pytest.approx(b[3], rel=1e-12)


def _newton_reference(A, y, sw, theta, l2, iterations):
    """Newton's method step by step, each step's products made afresh (the shape the shared
    first step of `newton_grid` must reproduce bit for bit)."""
    from online.models.newton import _objective, sigmoid_array

    m, d1 = A.shape
    reg = np.full(d1, l2)
    reg[-1] = 1e-9
    theta = np.array(theta, dtype=np.float64)
    a = A @ theta
    loss = _objective(a, y, sw, theta, reg)
    for _ in range(iterations):
        p = sigmoid_array(a)
        g = A.T @ (sw * (p - y)) / m + reg * theta
        H = (A * (sw * p * (1.0 - p))[:, None]).T @ A / m + np.diag(reg)
        step = np.linalg.solve(H, g)
        t, along = 1.0, float(g @ step)
        while True:
            trial = theta - t * step
            a_trial = A @ trial
            trial_loss = _objective(a_trial, y, sw, trial, reg)
            if trial_loss <= loss - 1e-4 * t * along or t < 1e-3:
                break
            t *= 0.5
        if trial_loss > loss:
            break
        theta, a, loss = trial, a_trial, trial_loss
    return theta


@pytest.mark.parametrize("seed", range(4))
def test_a_ridge_grid_sharing_its_first_step_fits_each_ridge_bit_for_bit(seed):
    from online.models.newton import newton, newton_grid

    rng = np.random.default_rng(seed)
    m, d = 600, 7
    A = np.hstack([rng.normal(size=(m, d)) * rng.uniform(0.1, 5, d), np.ones((m, 1))])
    separable = seed == 3  # classes nearly separate: backtracking and early stops
    y = ((A[:, 0] * (8 if separable else 1) + rng.normal(size=m)) > 0.3).astype(float)
    sw = rng.uniform(0.2, 3, m)
    sw *= m / sw.sum()
    theta = rng.normal(size=d + 1) * 0.1
    ridges = [1.0 / m, 10.0 / m, 100.0 / m, 1000.0 / m]
    grid = newton_grid(A, y, sw, theta, ridges, 3)
    for l2, got in zip(ridges, grid, strict=True):
        want = _newton_reference(A, y, sw, theta, l2, 3)
        assert got.tobytes() == want.tobytes()
        assert newton(A, y, sw, theta, l2, 3).tobytes() == want.tobytes()


def test_the_ridge_is_validated_as_the_window_doubles_then_every_few_refits(monkeypatch):
    from online.models import newton as nt

    validated, fits = [], []
    real = nt.forward_ridge

    def spy(*args, **kwargs):
        validated.append(model._n)
        return real(*args, **kwargs)

    monkeypatch.setattr(nt, "forward_ridge", spy)
    model = WindowedLogistic(window=2_000, refit_every=100, first_fit=50, min_class=5,
                             ridge_every=3)
    fit = model._fit_window

    def counted():
        fits.append(model._n)
        fit()

    model._fit_window = counted
    for x, y in _examples(3_000, seed=6):
        model.learn_one(x, y)
    assert validated[0] == fits[0]  # the first fit that can validate, validates
    # a validation once the labels since the last one reach as many as before it, or 300
    for before, at in zip(validated, validated[1:], strict=False):
        assert at - before >= min(300, before)
        later = [n for n in fits if before < n < at]
        assert not later or later[-1] - before < min(300, before)
    assert len(fits) > 2 * len(validated) > 10
    # each validation chose among the grid; between them the ridge stays
    assert model.l2_ in model.l2_grid
