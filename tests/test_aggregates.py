"""Private segment aggregates: the rule, the noise scale per epsilon, the persistent budget."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient

from offline.datasets.synthetic import generate
from offline.privacy.dp_report import budget_status, segments_report
from online.api import ApiSettings, create_app
from online.eventlog import EventLog
from online.privacy import (
    SEGMENTS,
    BudgetExhausted,
    PrivacyBudget,
    SegmentInputs,
    SegmentRule,
    release_segments,
    segment_inputs,
)
from online.privacy.dp import BOUNDS, SPLIT
from online.projector import Projector
from online.settings import Settings

NAMES = list(SEGMENTS)


def discrete_laplace_mean_abs(scale: float) -> float:
    """E|X| of the geometric (discrete Laplace) noise OpenDP draws with this scale."""
    a = math.exp(-1.0 / scale)
    return 2 * a / (1 - a * a)


def fixed_inputs(per_segment: int = 60, seed: int = 0) -> SegmentInputs:
    """Users spread evenly over the segments, values inside the bounds (clamping is a no-op)."""
    rng = np.random.default_rng(seed)
    codes = np.repeat(np.arange(len(NAMES), dtype=np.int8), per_segment)
    n = len(codes)
    values = {
        "spend_total": rng.uniform(0, BOUNDS["spend_total"], n),
        "order_count": rng.integers(0, 20, n).astype(float),
        "rfm_recency_days": rng.uniform(0, 300, n),
    }
    return SegmentInputs(0, n, codes, values)


def true_sums(inputs: SegmentInputs) -> dict[str, np.ndarray]:
    return {f: np.array([np.clip(inputs.values[f][inputs.segment == k], 0, BOUNDS[f]).sum()
                         for k in range(len(NAMES))]) for f in BOUNDS}


# -- the segment rule ----------------------------------------------------------------------


def test_rule_assigns_each_user_one_public_segment() -> None:
    orders = np.array([0, 0, 1, 1, 2, 7, 3])
    recency = np.array([-1.0, -1.0, 10.0, 200.0, 90.0, 91.0, 0.0])
    codes = SegmentRule(active_days=90).assign(orders, recency)
    assert [NAMES[c] for c in codes] == [
        "browsers", "browsers", "new", "one_time_lapsed", "repeat_active", "repeat_lapsed",
        "repeat_active"]


# -- the release ---------------------------------------------------------------------------


def test_release_reports_every_segment_with_scales_from_epsilon(tmp_path) -> None:
    budget = PrivacyBudget(tmp_path / "b.json", total=10)
    body = release_segments(fixed_inputs(), 2.0, budget=budget)
    assert [s["segment"] for s in body["segments"]] == NAMES
    p = body["privacy"]
    assert p["size"]["epsilon"] == pytest.approx(2.0 * SPLIT["size"])
    assert p["size"]["scale"] == pytest.approx(1 / (2.0 * SPLIT["size"]))
    for f, upper in BOUNDS.items():
        assert p["features"][f]["bounds"] == [0.0, upper]
        # OpenDP's search lands on bound / eps_f, inflated a hair for float rounding
        assert p["features"][f]["scale"] == pytest.approx(upper / (2.0 * SPLIT[f]), rel=1e-6)
    assert p["budget"] == {"total": 10.0, "spent": 2.0, "remaining": 8.0, "releases": 1}
    browsers = body["segments"][0]
    assert browsers["mean"]["rfm_recency_days"] is None  # no purchase, no recency
    for s in body["segments"]:
        for f, m in s["mean"].items():
            assert m is None or 0.0 <= m <= BOUNDS[f]


def test_noise_matches_the_scale_of_epsilon_on_many_draws(tmp_path) -> None:
    """Empirical mean |noise| within 15% of its expectation (~4 standard errors)."""
    inputs = fixed_inputs(per_segment=60)
    truth_sizes = np.bincount(inputs.segment, minlength=len(NAMES))
    truth = true_sums(inputs)
    budget = PrivacyBudget(tmp_path / "b.json", total=1e9)
    eps, draws = 1.0, 200
    size_noise, sum_noise = [], {f: [] for f in BOUNDS}
    for _ in range(draws):
        body = release_segments(inputs, eps, budget=budget)
        size_noise += [s["size"] - t for s, t in zip(body["segments"], truth_sizes, strict=True)]
        for f in BOUNDS:
            for k, s in enumerate(body["segments"]):
                if s["sum"][f] is not None:
                    sum_noise[f].append(s["sum"][f] - truth[f][k])
    size_scale = 1 / (eps * SPLIT["size"])
    expected = discrete_laplace_mean_abs(size_scale)
    assert np.mean(np.abs(size_noise)) == pytest.approx(expected, rel=0.15)
    assert abs(np.mean(size_noise)) < 0.5  # centred
    for f, noise in sum_noise.items():
        b = BOUNDS[f] / (eps * SPLIT[f])
        assert np.mean(np.abs(noise)) == pytest.approx(b, rel=0.15), f  # Laplace: E|X| = b
        assert np.std(noise) == pytest.approx(math.sqrt(2) * b, rel=0.2), f
    # a smaller epsilon means proportionally more noise
    body = release_segments(inputs, 0.1, budget=budget)
    assert body["privacy"]["size"]["scale"] == pytest.approx(10 * size_scale)


def test_release_validates_before_spending(tmp_path) -> None:
    budget = PrivacyBudget(tmp_path / "b.json", total=1)
    for bad in (0.0, -1.0, float("nan"), float("inf"), 5e-324):
        with pytest.raises(ValueError):
            release_segments(fixed_inputs(), bad, budget=budget)
    with pytest.raises(ValueError, match="split"):
        release_segments(fixed_inputs(), 0.5, budget=budget, split={"size": 1.0})
    assert budget.status()["spent"] == 0.0


# -- the budget ----------------------------------------------------------------------------


def test_budget_is_persistent_and_refuses_once_spent(tmp_path) -> None:
    path = tmp_path / "privacy" / "budget.json"
    PrivacyBudget(path, total=1.0).charge(0.6, "segments")
    again = PrivacyBudget(path, total=1.0)  # a new process sees what was spent
    assert again.status() == {"total": 1.0, "spent": 0.6, "remaining": 0.4, "releases": 1}
    with pytest.raises(BudgetExhausted) as info:
        again.charge(0.5, "segments")
    assert info.value.remaining == pytest.approx(0.4)
    again.charge(0.4, "segments")
    with pytest.raises(BudgetExhausted):
        again.charge(1e-6, "segments")
    assert again.status()["releases"] == 2
    for _ in range(10):  # float sums of charges still fit exactly
        PrivacyBudget(tmp_path / "tenths.json", total=1.0).charge(0.1, "x")


def test_concurrent_charges_never_overspend(tmp_path) -> None:
    path = tmp_path / "budget.json"
    ok, refused = [], []

    def spend() -> None:
        for _ in range(5):
            try:
                PrivacyBudget(path, total=2.0).charge(0.1, "segments")
                ok.append(1)
            except BudgetExhausted:
                refused.append(1)

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ok) == 20 and len(refused) == 20
    assert PrivacyBudget(path, total=2.0).status()["spent"] == pytest.approx(2.0)


# -- the report over a data dir, CLI and REST ----------------------------------------------


def ingest(data_dir, n_users: int = 500, n_events: int = 20_000) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    with EventLog(data_dir / "events.db") as log:
        for chunk in generate(n_users, n_events, seed=3):
            log.append(chunk)


def test_segments_report_over_a_data_dir_spends_the_budget(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path / "data", privacy_budget_epsilon=1.5)
    ingest(settings.data_dir)
    body = segments_report(settings, 1.0)
    with EventLog(settings.event_log_path) as log:
        projector = Projector(log, tmp_path / "fresh")
        projector.run()
    assert body["offset"] == projector.offset == 20_000
    assert sum(s["size"] for s in body["segments"]) == pytest.approx(projector.state.n_users,
                                                                     abs=60)
    assert budget_status(settings)["remaining"] == pytest.approx(0.5)
    with pytest.raises(BudgetExhausted):
        segments_report(settings, 1.0)
    assert not (settings.state_dir / "CURRENT").exists()  # a report checkpoints nothing


@pytest.fixture
def api(tmp_path, request):
    """A served data dir whose privacy budget is the (indirect) parameter."""
    settings = ApiSettings(data_dir=tmp_path / "data", privacy_budget_epsilon=request.param)
    ingest(settings.data_dir)
    with TestClient(create_app(settings)) as client:
        yield client, settings


@pytest.mark.parametrize("api", [1000.0], indirect=True)
def test_endpoint_noise_scale_matches_epsilon(api) -> None:
    client, settings = api
    with EventLog(settings.event_log_path) as log:
        projector = Projector(log, settings.data_dir / "reference")
        projector.run()
        inputs = segment_inputs(projector.state, projector.watermark_us, projector.offset)
    truth = np.bincount(inputs.segment, minlength=len(NAMES))
    big = [k for k in range(len(NAMES)) if truth[k] >= 30]  # noise never floors these at 0
    assert big
    eps, noise = 2.0, []
    for _ in range(150):
        r = client.post("/v1/segments", json={"epsilon": eps})
        assert r.status_code == 200, r.text
        body = r.json()
        noise += [body["segments"][k]["size"] - truth[k] for k in big]
    scale = body["privacy"]["size"]["scale"]
    assert scale == pytest.approx(1 / (eps * SPLIT["size"]))
    assert np.mean(np.abs(noise)) == pytest.approx(discrete_laplace_mean_abs(scale), rel=0.2)
    assert body["offset"] == inputs.offset and body["as_of"].startswith("2024-")
    assert body["privacy"]["budget"]["spent"] == pytest.approx(300.0)


@pytest.mark.parametrize("api", [1.0], indirect=True)
def test_endpoint_refuses_once_the_budget_is_spent(api) -> None:
    client, settings = api
    assert client.get("/v1/segments").status_code == 404  # no release yet
    first = client.post("/v1/segments", json={"epsilon": 0.6})
    assert first.status_code == 200
    r = client.post("/v1/segments", json={"epsilon": 0.6})
    assert r.status_code == 429, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["status"] == 429 and problem["field"] == "epsilon"
    assert "budget" in problem["detail"] and "never comes back" in problem["detail"]
    # reading the release again is safe to retry: it spends nothing
    for _ in range(3):
        again = client.get("/v1/segments")
        assert again.status_code == 200 and again.json() == first.json()
    assert client.post("/v1/segments", json={"epsilon": 0.4}).status_code == 200
    assert client.post("/v1/segments", json={"epsilon": 0.01}).status_code == 429
    for bad in (0, -1, "nan", "inf", "x", 5e-324, None):
        assert client.post("/v1/segments", json={"epsilon": bad}).status_code == 422
    assert client.post("/v1/segments", json={}).status_code == 422
    # the old spending GET is refused, naming the field and where spending went
    old = client.get("/v1/segments", params={"epsilon": 0.01})
    assert old.status_code == 422 and old.json()["field"] == "epsilon"
    assert "POST" in old.json()["detail"]
    assert PrivacyBudget.for_settings(settings).status()["releases"] == 2


def test_only_a_privacy_key_spends_the_budget(tmp_path) -> None:
    settings = ApiSettings(data_dir=tmp_path / "data", api_read_keys=["r" * 20],
                           api_write_keys=["w" * 20], api_privacy_keys=["p" * 20])
    ingest(settings.data_dir)
    with TestClient(create_app(settings)) as client:
        for key in ("r" * 20, "w" * 20):
            r = client.post("/v1/segments", json={"epsilon": 9.5}, headers={"X-API-Key": key})
            assert r.status_code == 403 and "privacy scope" in r.json()["detail"]
        assert PrivacyBudget.for_settings(settings).status()["spent"] == 0
        made = client.post("/v1/segments", json={"epsilon": 1.0},
                           headers={"X-API-Key": "p" * 20})
        assert made.status_code == 200
        read = client.get("/v1/segments", headers={"X-API-Key": "r" * 20})
        assert read.status_code == 200 and read.json() == made.json()
    assert PrivacyBudget.for_settings(settings).status()["spent"] == 1.0
