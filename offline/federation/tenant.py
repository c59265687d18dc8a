"""A shop's side of a federation: it opens its own data dir and nothing else.

The worker turns its shop's log into propensity examples (a point per user and event time, the
served features as of that time from the replay's snapshot, the label "a purchase within the
horizon after it"), splits them by time, and then only answers with vectors: the moments of
its inputs (round 0), the update of the model parameters (every round) and, for the report,
its own evaluation figures.  Under a privacy budget every vector is clipped per user and
noised here, before it leaves (``offline.federation.privacy``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from offline.federation import model as fm
from offline.federation.privacy import GaussianAccountant

FEDERATED_BUDGET_ENV = "PORTRAIT_FEDERATED_BUDGET_EPSILON"
DEFAULT_FEDERATED_BUDGET = 20.0


@dataclass(frozen=True)
class Update:
    """What a tenant sends after a round: one float64 vector and, without noise, its weight."""

    vector: np.ndarray
    weight: float  # examples behind the vector (FedAvg's weight); 0.0 under DP

    @property
    def nbytes(self) -> int:
        return int(self.vector.nbytes) + 8


@dataclass
class Examples:
    """A tenant's propensity examples, split by time (train rows' labels known before the cut)."""

    Z: np.ndarray  # signed-log inputs
    y: np.ndarray
    users: np.ndarray
    train: np.ndarray  # boolean masks over the rows
    test: np.ndarray
    events: int
    cut_us: int


class TenantWorker:
    """One shop in a federation (a Ray actor on the Ray engine, an object locally).

    Parameters
    ----------
    name
        The shop's name in reports.
    data_dir
        The shop's data dir: the only place this worker reads or writes.
    horizon_us
        Label horizon: a purchase within it after a point makes the point positive.
    features
        Model inputs (catalogue names); default the online propensity model's.
    max_per_user, test_fraction, seed
        At most ``max_per_user`` points per user (heavy users would otherwise dominate); the
        latest ``test_fraction`` of point times is the test period; sampling seed.
    """

    def __init__(self, name: str, data_dir: str | os.PathLike, *, horizon_us: int,
                 features: tuple[str, ...] | None = None, max_per_user: int = 20,
                 test_fraction: float = 0.25, seed: int = 0) -> None:
        from online.models.contributor import PROPENSITY_FEATURES
        from online.settings import Settings

        self.name = name
        self.settings = Settings(data_dir=Path(data_dir))
        self.horizon_us = int(horizon_us)
        self.features = tuple(features or PROPENSITY_FEATURES)
        self.max_per_user = max_per_user
        self.test_fraction = test_fraction
        self.seed = seed
        self._examples: Examples | None = None

    # --- the data, built once per worker ------------------------------------------------
    @property
    def examples(self) -> Examples:
        if self._examples is None:
            self._examples = self._build_examples()
        return self._examples

    def _build_examples(self) -> Examples:
        from offline.backfill.replay import replay, replayed_end
        from offline.backfill.training_set import features_at, labels, watermark
        from online.eventlog import EventLog

        with EventLog(self.settings.event_log_path) as log:
            end = log.next_offset
            events = log.count()
            users, times = _event_times(log)
        if replayed_end(self.settings) < end:
            replay(self.settings, progress=False)
        known = times + self.horizon_us <= watermark(self.settings)
        users, times = _points(users[known], times[known], self.max_per_user, self.seed)
        if not len(times):
            raise ValueError(f"tenant {self.name}: no event with a known label "
                             f"(log shorter than the horizon?)")
        entities = pd.DataFrame({
            "user_id": users,
            "event_timestamp": pd.DatetimeIndex(times.view("datetime64[us]")).tz_localize("UTC"),
        })
        X = features_at(self.settings, entities, self.features).to_numpy(
            np.float64, na_value=np.nan)
        y = labels(self.settings, entities, self.horizon_us).iloc[:, 1].to_numpy(
            dtype=bool, na_value=False)
        cut = int(np.quantile(times, 1.0 - self.test_fraction))
        # train rows' labels are known at the cut: nothing after it leaks into training
        return Examples(fm.signed_log(X), y.astype(np.float64), users,
                        train=times + self.horizon_us <= cut, test=times > cut,
                        events=events, cut_us=cut)

    def summary(self) -> dict:
        """Sizes of this shop's data (for the report; not sent during training)."""
        ex = self.examples
        return {"events": ex.events, "train_rows": int(ex.train.sum()),
                "test_rows": int(ex.test.sum()),
                "train_users": int(len(np.unique(ex.users[ex.train])))}

    # --- training: vectors only ---------------------------------------------------------
    def charge(self, accountant: GaussianAccountant, purpose: str) -> dict:
        """Spend the run's epsilon from this shop's federated ledger (refused when short)."""
        from online.privacy.budget import PrivacyBudget

        budget = PrivacyBudget(self.settings.data_dir / "privacy" / "federated.json",
                               _budget_total())
        return budget.charge(accountant.epsilon(), f"{purpose} delta={accountant.delta:g}")

    def moments(self, accountant: GaussianAccountant | None) -> Update:
        """Round 0: summed per-user moments of the training inputs (noised under DP)."""
        ex = self.examples
        Z, users = ex.Z[ex.train], ex.users[ex.train]
        vec = fm.user_moments(Z, users)
        if accountant is not None:
            vec = accountant.noised(vec, fm.moments_sensitivity(Z.shape[1]), 0)
        return Update(vec, 0.0 if accountant is not None else float(len(Z)))

    def update(self, theta: np.ndarray, mean: np.ndarray, scale: np.ndarray, *,
               accountant: GaussianAccountant | None, release: int, local_steps: int,
               lr: float, l2: float, clip: float) -> Update:
        """One round from the global ``theta``.

        Without noise: ``local_steps`` of gradient descent on this shop's rows; the update and
        the row count (FedAvg).  Under DP: the sum over users of each user's clipped mean
        gradient, noised (DP-FedAvg with one local step per user).
        """
        ex = self.examples
        X = fm.Standardiser(mean, scale)(ex.Z[ex.train])
        y = ex.y[ex.train]
        theta = np.asarray(theta, np.float64)
        if accountant is None:
            # lr is a fraction of this shop's safe step 1 / L (L bounds the loss's curvature),
            # so local descent cannot diverge whatever the scale of the shop's inputs
            step = lr / fm.smoothness(X, l2)
            delta = fm.local_steps(theta, X, y, steps=local_steps, lr=step, l2=l2)
            return Update(delta, float(len(y)))
        total, _ = fm.clipped_user_gradients(theta, X, y, ex.users[ex.train], clip)
        return Update(accountant.noised(total, clip, release), 0.0)

    # --- evaluation: figures, never rows (except the central baseline's, on request) ------
    def evaluate(self, models: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], *,
                 l2: float) -> dict:
        """AUC, log loss and score histograms on this shop's test period, per model.

        ``models`` maps a name to ``(theta, mean, scale)``; a ``local`` model (this shop's
        data alone, same model and regularisation) is fitted and scored here as well.
        """
        ex = self.examples
        Ztr, ytr = ex.Z[ex.train], ex.y[ex.train]
        std = fm.Standardiser.from_moments(fm.user_moments(Ztr, ex.users[ex.train]),
                                           Ztr.shape[1])
        models = dict(models)
        models["local"] = (fm.fit_exact(std(Ztr), ytr, l2), std.mean, std.scale)
        y = ex.y[ex.test].astype(bool)
        out = {}
        for name, (theta, mean, scale) in models.items():
            p = fm.predict(theta, fm.Standardiser(mean, scale)(ex.Z[ex.test]))
            pos, neg = fm.score_histogram(y, p)
            out[name] = {"auc": fm.auc(y, p), "log_loss": fm.log_loss(y, p), "n": int(len(y)),
                         "positives": int(y.sum()), "hist_pos": pos, "hist_neg": neg}
        return out

    def training_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This shop's training rows: ONLY for the central baseline of an evaluation.

        The central model is the upper bound that needs every shop's data in one place; a real
        federation does not call this (``federate(..., central=False)``).
        """
        ex = self.examples
        return ex.Z[ex.train], ex.y[ex.train], ex.users[ex.train]

    # --- installing the result ----------------------------------------------------------
    def install(self, theta: np.ndarray, mean: np.ndarray, scale: np.ndarray,
                note: str) -> dict:
        """Make the federated model this shop's serving propensity model (a warm start)."""
        from offline.federation.install import install_propensity

        return install_propensity(self.settings, self.features, self.horizon_us, theta, mean,
                                  scale, note)


def _budget_total() -> float:
    raw = os.environ.get(FEDERATED_BUDGET_ENV)
    if raw is None:
        return DEFAULT_FEDERATED_BUDGET
    value = float(raw)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{FEDERATED_BUDGET_ENV}: expected a finite epsilon >= 0, got {raw!r}")
    return value


def _event_times(log) -> tuple[np.ndarray, np.ndarray]:
    users, times = [], []
    for batch, _ in log.batches():
        users.append(np.asarray(batch.user_id, dtype=object))
        times.append(np.asarray(batch.ts, np.int64))
    if not users:
        return np.zeros(0, object), np.zeros(0, np.int64)
    return np.concatenate(users), np.concatenate(times)


def _points(users: np.ndarray, times: np.ndarray, max_per_user: int,
            seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, time) pairs, at most ``max_per_user`` per user chosen at random."""
    df = pd.DataFrame({"u": users, "t": times}).drop_duplicates()
    df = df.sample(frac=1.0, random_state=seed)
    df = df[df.groupby("u").cumcount() < max_per_user].sort_values(["t", "u"], kind="stable")
    return df["u"].to_numpy(object), df["t"].to_numpy(np.int64)

