"""Federated learning across shops: isolation, what crosses, accounting, failures, quality."""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import signal
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from offline.datasets.synthetic import generate
from offline.federation import model as fm
from offline.federation.coordinator import federate
from offline.federation.engines import LocalTenants, RayTenants
from offline.federation.privacy import GaussianAccountant
from offline.federation.report import evaluate
from offline.federation.tenant import TenantWorker, Update
from online.eventlog import EventLog

DAY_US = 24 * 3600 * 10**6
HORIZON = 7 * DAY_US


def _shop_of(user_id: str) -> str:
    """One synthetic shop's customers dealt into an uneven federation: 80%, 12%, 8%."""
    h = zlib.crc32(user_id.encode()) % 100
    return "big" if h < 80 else "small" if h < 92 else "tiny"


@pytest.fixture(scope="module")
def shop_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shops")
    events = [e for chunk in generate(500, 40_000, seed=1) for e in chunk]
    out = {}
    for name in ("big", "small", "tiny"):
        d = root / name
        d.mkdir()
        with EventLog(d / "events.db") as log:
            assert log.append([e for e in events if _shop_of(e["user_id"]) == name]).rejected == 0
        out[name] = d
    return out


@pytest.fixture(scope="module")
def specs(shop_dirs) -> dict[str, dict]:
    return {n: {"data_dir": d, "horizon_us": HORIZON} for n, d in shop_dirs.items()}


@pytest.fixture(scope="module")
def local(specs) -> LocalTenants:
    shops = LocalTenants(specs)
    for w in shops.workers.values():
        assert len(w.examples.y)  # built once for the module (replays each shop's own log)
    return shops


class Recording:
    """The tenants as the coordinator sees them, keeping every answer it received."""

    def __init__(self, inner) -> None:
        self.inner, self.received = inner, []

    @property
    def names(self):
        return self.inner.names

    def map(self, method, kwargs=None, names=None):
        out = self.inner.map(method, kwargs, names)
        self.received += [(method, a) for a in out.values()]
        return out


def test_the_coordinator_receives_only_parameter_arrays(local) -> None:
    rec = Recording(local)
    result = federate(rec, rounds=4)
    assert {m for m, _ in rec.received} == {"moments", "update"}
    for _, answer in rec.received:
        assert type(answer) is Update
        assert answer.vector.dtype == np.float64 and answer.vector.ndim == 1
        assert isinstance(answer.weight, float)
    d = len(local.workers["big"].features)
    assert {len(a.vector) for m, a in rec.received if m == "update"} == {d + 1}
    assert {len(a.vector) for m, a in rec.received if m == "moments"} == {2 * d + 1}
    # what crosses per round: three updates up, the model down to three shops
    assert result.bytes_per_round == 3 * ((d + 1) * 8 + 8) + 3 * (3 * d + 1) * 8


def test_federated_model_matches_central_and_helps_small_shops(local) -> None:
    result = federate(local, rounds=30)
    report = evaluate(local, result, l2=1e-2)
    pooled = report["pooled"]
    assert pooled["federated_auc"] >= pooled["central_auc"] - 0.01, pooled
    assert pooled["federated_auc"] > 0.65, pooled  # the shop's signal is learnt
    shops = report["tenants"]
    assert sum(s["events"] for s in shops.values()) == 40_000
    small_gain = [shops[n]["federated_auc"] - shops[n]["local_auc"] for n in ("small", "tiny")
                  if shops[n]["local_auc"] is not None]
    assert small_gain and np.mean(small_gain) > 0, shops


def _cks_epsilon(rho: float, delta: float) -> float:
    """Reference: epsilon of rho-zCDP at delta by Canonne, Kamath and Steinke (2020), Prop. 12.

    delta(eps) = inf_a exp((a - 1)(a rho - eps)) / a * (1 - 1/a)^(a - 1); invert in eps.
    """
    alphas = np.exp(np.linspace(np.log(1.0 + 1e-6), np.log(1e4), 400_000))

    def delta_of(eps: float) -> float:
        with np.errstate(over="ignore"):
            logs = ((alphas - 1) * (alphas * rho - eps) - np.log(alphas)
                    + (alphas - 1) * np.log1p(-1 / alphas))
        return float(np.exp(logs.min()))

    lo, hi = 0.0, rho + 2 * math.sqrt(rho * math.log(1 / delta)) + 1
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if delta_of(mid) > delta else (lo, mid)
    return hi


@pytest.mark.parametrize("epsilon,rounds", [(1.0, 10), (4.0, 30), (8.0, 5)])
def test_accountant_matches_a_reference_computation(epsilon, rounds) -> None:
    acc = GaussianAccountant.for_budget(epsilon, 1e-5, rounds)
    assert acc.releases == rounds + 1
    rho = sum(1 / (2 * z * z) for z in acc.multipliers)  # Gaussian: 1/(2 sigma^2) per release
    assert acc.rho() == pytest.approx(rho, rel=1e-9)
    assert acc.epsilon() == pytest.approx(_cks_epsilon(rho, 1e-5), rel=1e-3)
    assert acc.epsilon() <= epsilon * (1 + 1e-9) and acc.epsilon() == pytest.approx(epsilon,
                                                                                    rel=1e-3)


def test_noise_has_the_accounted_scale() -> None:
    acc = GaussianAccountant((2.0, 3.0), 1e-5)
    draws = acc.noised(np.zeros(20_000), sensitivity=0.5, release=1)
    assert np.std(draws) == pytest.approx(1.5, rel=0.05)  # 3.0 x 0.5
    assert abs(np.mean(draws)) < 0.05


def test_dp_run_spends_the_budget_once_per_shop_and_refuses_beyond(specs, monkeypatch) -> None:
    monkeypatch.setenv("PORTRAIT_FEDERATED_BUDGET_EPSILON", "5")
    shops = LocalTenants(specs)
    first = federate(shops, rounds=3, epsilon=4.0)
    assert first.epsilon_spent == pytest.approx(4.0, rel=1e-3) and not first.refused
    for d in (s["data_dir"] for s in specs.values()):
        ledger = (d / "privacy" / "federated.json").read_text()
        assert "federate rounds=3" in ledger
    with pytest.raises(RuntimeError, match="every shop refused.*BudgetExhausted"):
        federate(shops, rounds=3, epsilon=4.0)  # 4 + 4 > 5 everywhere: every shop refuses


class FailsInRound(TenantWorker):
    """A shop whose third update call raises (its worker breaks mid-run)."""

    calls = 0

    def update(self, *args, **kwargs):
        type(self).calls += 1
        if type(self).calls == 3:
            raise OSError("disk went away")
        return super().update(*args, **kwargs)


def test_a_failing_shop_is_dropped_from_that_round_and_the_run_completes(specs) -> None:
    shops = LocalTenants(specs)
    shops.workers["small"] = FailsInRound("small", **specs["small"])
    result = federate(shops, rounds=5)
    assert result.dropped == {3: {"small": "OSError: disk went away"}}
    assert result.participants[3] == ["big", "tiny"]
    assert result.participants[4] == ["big", "small", "tiny"]
    assert np.all(np.isfinite(result.theta))


class _Inotify:
    """Every file opened or read below some directories, by any process (Linux inotify)."""

    IN_ACCESS, IN_OPEN = 0x1, 0x20

    def __init__(self, roots: list[Path]) -> None:
        self.libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK)
        assert self.fd >= 0
        self.watches = {}
        for root in roots:
            for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
                wd = self.libc.inotify_add_watch(self.fd, str(d).encode(),
                                                 self.IN_ACCESS | self.IN_OPEN)
                assert wd >= 0, d
                self.watches[wd] = d

    def events(self) -> list[Path]:
        out = []
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return out
            i = 0
            while i < len(buf):
                wd, _, _, length = struct.unpack_from("iIII", buf, i)
                name = buf[i + 16:i + 16 + length].rstrip(b"\0").decode()
                out.append(self.watches[wd] / name)
                i += 16 + length

    def close(self) -> None:
        os.close(self.fd)


def test_a_shop_worker_touches_no_other_shops_files(specs) -> None:
    for name, spec in specs.items():
        others = [s["data_dir"] for n, s in specs.items() if n != name]
        watch = _Inotify(others)
        try:
            worker = TenantWorker(name, **spec)
            assert len(worker.examples.y)  # reads its log, replays, reads its snapshot
            theta = np.zeros(len(worker.features) + 1)
            d = len(worker.features)
            worker.moments(None)
            worker.update(theta, np.zeros(d), np.ones(d), accountant=None, release=1,
                          local_steps=2, lr=1.0, l2=1e-2, clip=1.0)
            worker.evaluate({"federated": (theta, np.zeros(d), np.ones(d))}, l2=1e-2)
            touched = watch.events()
        finally:
            watch.close()
        assert touched == [], f"{name} touched {touched[:5]}"
    # and the watch does see opens: reading a shop's log is reported
    watch = _Inotify([specs["big"]["data_dir"]])
    try:
        with EventLog(specs["big"]["data_dir"] / "events.db") as log:
            log.count()
        assert watch.events()
    finally:
        watch.close()


def test_histogram_auc_equals_the_exact_auc() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(5_000) < 0.3
    p = np.clip(rng.normal(0.4 + 0.2 * y, 0.15), 0, 1)
    pos, neg = fm.score_histogram(y, p)
    assert fm.histogram_auc(pos, neg) == pytest.approx(fm.auc(y, p), abs=2e-4)


@pytest.mark.slow
def test_ray_engine_equals_local_and_survives_a_killed_shop(specs, ray_local) -> None:
    shops = RayTenants(specs, max_restarts=0)  # a killed shop stays dead
    try:
        local_result = federate(LocalTenants(specs), rounds=3)
        ray_result = federate(shops, rounds=3)
        np.testing.assert_allclose(ray_result.theta, local_result.theta, rtol=1e-9)
        pid = shops.pids()["tiny"]

        def kill_after_round_1(r, _n):
            if r == 1:
                os.kill(pid, signal.SIGKILL)

        result = federate(shops, rounds=3, progress=kill_after_round_1)
        assert set(result.dropped) == {2, 3} and all(
            set(v) == {"tiny"} for v in result.dropped.values())
        assert result.participants[3] == ["big", "small"]
        assert np.all(np.isfinite(result.theta))
    finally:
        shops.close()


def test_installed_model_serves_the_federated_scores_and_keeps_learning(specs, local,
                                                                        tmp_path) -> None:
    import shutil

    from offline.federation.install import federated_pipeline
    from offline.wiring import build_projector
    from online.models.contributor import ModelContributor
    from online.privacy.pseudonym import open_event_log
    from online.settings import Settings

    result = federate(local, rounds=5)
    shop = tmp_path / "small"
    shutil.copytree(specs["small"]["data_dir"], shop)  # the module's shop stays as it was
    worker = TenantWorker("small", shop, horizon_us=HORIZON)
    receipt = worker.install(*result.model(), note="test")
    assert receipt["model_version"] != receipt["previous_version"]
    from online.models.registry import ModelRegistry

    entry = ModelRegistry(shop).get(receipt["model_version"])
    assert (entry["source"], entry["replaces"]) == ("federated", receipt["previous_version"])
    assert ModelRegistry(shop).get(receipt["previous_version"])["until_offset"] == \
        receipt["offset"]

    settings = Settings(data_dir=shop)
    with open_event_log(settings) as log:
        projector = build_projector(log, settings, online_writes=False)
        models = next(c for c in projector.contributors
                      if isinstance(c, ModelContributor)).models
        assert models.model_version == receipt["model_version"]  # it survived the checkpoint
        ex = worker.examples
        X = fm.Standardiser(result.mean, result.scale)(ex.Z[ex.test][:20])
        want = fm.predict(result.theta, X)
        raw = np.expm1(np.abs(ex.Z[ex.test][:20])) * np.sign(ex.Z[ex.test][:20])
        features = worker.features
        got = [models.propensity.predict_proba_one(dict(zip(features, row, strict=True)))
               for row in raw]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
        # a warm start, not a frozen model: one more label moves the weights
        pipe = federated_pipeline(features, *result.model())
        before = dict(pipe["LogisticRegression"].weights)
        pipe.learn_one(dict(zip(features, raw[0], strict=True)), True)
        assert dict(pipe["LogisticRegression"].weights) != before


def test_cli_prints_one_json_object_with_the_contract_keys(shop_dirs) -> None:
    import json

    from click.testing import CliRunner

    from offline.cli import cli

    args = ["federate", "--rounds", "3", "--json",
            *[f"--tenant={n}={d}" for n, d in shop_dirs.items()]]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout.strip().splitlines()[-1])
    assert body["rounds"] == 3 and body["epsilon"] is None and body["epsilon_spent"] is None
    assert body["bytes_per_round"] > 0
    assert set(body["pooled"]) >= {"central_auc", "federated_auc"}
    assert set(body["tenants"]) == set(shop_dirs)
    for shop in body["tenants"].values():
        assert set(shop) >= {"events", "local_auc", "federated_auc", "central_auc"}
    bad = CliRunner().invoke(cli, ["federate", "--tenant", "nodir"])
    assert bad.exit_code == 2 and "NAME=DATA_DIR" in bad.output


def test_install_refuses_while_another_process_writes_the_shop(specs, local, tmp_path) -> None:
    import shutil

    from online.writerlock import WriterBusy, WriterLock

    result = federate(local, rounds=2)
    shop = tmp_path / "tiny"
    shutil.copytree(specs["tiny"]["data_dir"], shop)
    worker = TenantWorker("tiny", shop, horizon_us=HORIZON)
    before = sorted(p.name for p in (shop / "state").iterdir()) if (shop / "state").exists() \
        else []
    with WriterLock(shop / "state", command="a running server"):  # the shop's writer
        with pytest.raises(WriterBusy, match="a running server"):
            worker.install(*result.model(), note="test")
    after = sorted(p.name for p in (shop / "state").iterdir() if p.name != "writer.lock")
    assert after == [n for n in before if n != "writer.lock"]  # nothing was written
