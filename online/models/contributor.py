"""The online models inside the projector: learn per event, fill a profile's model fields.

`ModelContributor` is the `ProfileContributor` that drives a `ModelSet` from the projector.
Per applied batch it takes the projector's per-event rows (the user's stored values right
after each event, no look-ahead inside the batch), serves them at the event's effective time
with `kernels.evaluate_stored` (the one serving function), and calls `ModelSet.observe_many`
in log order with the effective times and purchase flags, then `advance(watermark)`. The
models therefore see exactly what a profile served at that event would show, and their state
after a batch is a function of the log prefix alone: replays, batch sizes and restarts agree.

Checkpoints: the models are pickled next to the projector's state in the same atomic
checkpoint (the projector's `save`/`load` hooks), so they always reflect the same offset.

Profiles:

- latest (at the watermark): the models at the projector's offset applied to the served
  features: ``segment``, ``propensity`` (score, horizon, top features with contributions),
  ``model_version``, ``model_source: "current"`` and ``model_offset`` (the log offset the
  models have learnt up to, equal to the profile's ``offset``).
- as of a past T: the projector recomputes the features as of T from the log; the model
  fields are the *current* models applied to those features (``model_source: "current"``,
  ``model_offset`` the live offset, past the features' ``offset``). Models as they were at T
  would need a model checkpoint per point in time or a replay up to T per request; the
  current ones are what a data scientist scoring a historical row would use. Scores as they
  were emitted online are what `offline.evaluation` replays and reports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from river import linear_model, optim

from online import catalogue as cat
from online import kernels
from online.durable import write_synced
from online.events import EventType
from online.projector import ProfileContributor, ServedFeatures

from .learners import SignedLogScaler, WindowedLogistic
from .modelset import ModelSet, StaleModels
from .propensity import DAY_US, PurchasePropensity
from .segments import UserSegments
from .snapshots import SegmentSnapshots
from .versions import ModelVersions

__all__ = ["ALIASES", "DEFAULT_FEATURES", "PROPENSITY_FEATURES", "ModelContributor",
           "Predictions", "SignedLogScaler", "default_propensity_model", "propensity_model"]

# Every numeric served feature of the catalogue, in its order: the propensity model's inputs.
# Absolute timestamps are left out (they only grow with time, a trend not a behaviour).
DEFAULT_FEATURES: tuple[str, ...] = tuple(
    f.name for f in cat.FEATURES if f.dtype in ("int64", "float64")
)
# Catalogue features that are another one by definition (or a fixed multiple of it): the
# model reads the original only, so a profile never gives one reason twice.
ALIASES = {"rfm_frequency": "order_count", "rfm_monetary": "spend_total",
           "rfm_recency_days": "seconds_since_last_purchase"}
PROPENSITY_FEATURES: tuple[str, ...] = tuple(f for f in DEFAULT_FEATURES if f not in ALIASES)
_MODELS_FILE = "models.pkl"
_NO_TS = cat.NO_TS
_PURCHASE = int(EventType.PURCHASE)

# (batch, effective ts, scores) after each batch: how `offline.evaluation` collects predictions.
Recorder = Callable[[Any, np.ndarray, np.ndarray], None]


def propensity_model():
    """The served propensity learner: `WindowedLogistic` (Newton refits on the latest labels).

    Measured with `bench/quality.py`: one pass of constant-step SGD stayed 0.02 AUC short of
    the batch logistic regression on the same labels (Online Retail 0.686 vs 0.710, a
    synthetic purchase log 0.858 vs 0.877); refitting on a window of the latest examples
    closes it (0.709, 0.867) and follows drift through the window.
    """
    return WindowedLogistic()


def default_propensity_model():
    """`SignedLogScaler() | LogisticRegression` with a constant SGD step of 2e-3: the shape a
    federated model is installed into (`offline.federation.install`).

    River's default step (1e-2) lets the weights follow the latest few hundred labels (AUC
    0.65 vs 0.69 on Online Retail); 5e-4 learns too slowly on a 60-day funnel (0.833 vs 0.852,
    batch 0.861). The intercept gets its own faster step (0.05) so the score finds the base
    rate quickly after the first labels (they all arrive one horizon after the log starts).
    """
    return SignedLogScaler() | linear_model.LogisticRegression(
        optimizer=optim.SGD(2e-3), intercept_lr=0.05)


class Predictions:
    """Every score the propensity model emitted, with its event: the evaluation's raw data.

    One row per event in log order: offset, stored user id, effective time, score (the
    prediction made at that event, before its label could be known) and whether the event was
    a purchase (labels follow from the purchases, see `offline.evaluation`).
    """

    def __init__(self) -> None:
        self._parts: list[tuple] = []

    def __call__(self, batch, eff_ts: np.ndarray, scores: np.ndarray) -> None:
        self._parts.append((np.asarray(batch.offset, np.int64), np.asarray(batch.user_id),
                            np.asarray(eff_ts, np.int64), np.asarray(scores, np.float64),
                            np.asarray(batch.type) == _PURCHASE))

    def __len__(self) -> int:
        return sum(len(p[0]) for p in self._parts)

    def columns(self) -> dict[str, np.ndarray]:
        """``offset``, ``user_id``, ``t_us``, ``score``, ``is_purchase`` (equal lengths)."""
        names = ("offset", "user_id", "t_us", "score", "is_purchase")
        if not self._parts:
            empty = (np.int64, object, np.int64, np.float64, bool)
            return {n: np.zeros(0, dtype=d) for n, d in zip(names, empty, strict=True)}
        return {n: np.concatenate([p[k] for p in self._parts]) for k, n in enumerate(names)}


class ModelContributor(ProfileContributor):
    """Propensity and segments learnt online from the projector's events, checkpointed with it.

    Parameters
    ----------
    models
        The model set to drive; None means propensity over `features` with
        `propensity_model()` and the default `UserSegments`.
    features
        Propensity inputs (catalogue names) when `models` is None.
    horizon_us
        Label horizon of the default propensity model (default 7 days).
    top
        Features listed in a profile's ``propensity.top_features``.
    recorder
        Called after each batch with (batch, effective ts, scores), e.g. a `Predictions`.
    """

    name = "models"
    wants_event_rows = True

    def __init__(self, models: ModelSet | None = None, *,
                 features: Sequence[str] = PROPENSITY_FEATURES, horizon_us: int = 7 * DAY_US,
                 top: int = 5, recorder: Recorder | None = None) -> None:
        if models is None:
            segments = UserSegments()
            models = ModelSet(
                PurchasePropensity(tuple(features), model=propensity_model(),
                                   horizon_us=horizon_us),
                segments, SegmentSnapshots(segments.inputs))
        self.models = models
        self.top = top
        self.recorder = recorder
        self.loaded = False  # True once restored from a checkpoint
        self.offset = 0  # the log offset the models have learnt up to
        self.version_period_us = DAY_US
        self._version_watermark = _NO_TS
        self._cache: ModelSet | None = None
        self._cache_key: tuple | None = None
        self._set_columns()

    def _set_columns(self) -> None:
        # Catalogue order: the served columns the models read, computed once per batch.
        wanted = {*self.models.propensity.features, *self.models.segments.inputs}
        unknown = wanted - set(DEFAULT_FEATURES)
        if unknown:
            raise ValueError(f"models read features that are not numeric catalogue features: "
                             f"{sorted(unknown)}")
        self.columns = tuple(n for n in DEFAULT_FEATURES if n in wanted)

    @property
    def model_version(self) -> str:
        return self.models.model_version

    # -- the projector's calls ---------------------------------------------------------------

    def on_batch(self, projector, batch, user_idx: np.ndarray, eff_ts: np.ndarray) -> None:
        """Observe every event of the batch in log order, then advance to the watermark.

        Where event time enters a new version period (a UTC day) inside the batch, the batch
        is observed in parts and the models in force are kept at each period start (see
        `online.models.versions`), so versions do not depend on batch boundaries.
        """
        rows = projector.event_rows
        if rows is None:
            raise RuntimeError("ModelContributor needs the projector's per-event rows")
        eff_ts = np.asarray(eff_ts, np.int64)
        X = self.served_rows(rows, eff_ts)
        is_purchase = np.asarray(batch.type) == _PURCHASE
        users = np.asarray(batch.user_id)
        offsets = np.asarray(batch.offset, np.int64)
        scores: list[float] = []
        at = 0
        for start, valid_from in self._version_starts(eff_ts):
            scores += self._observe(users, eff_ts, X, is_purchase, rows, at, start)
            self.models.save_version(valid_from, int(offsets[start]))
            at = start
        scores += self._observe(users, eff_ts, X, is_purchase, rows, at, len(eff_ts))
        if self.models.versions is not None:  # checkpointed with the models
            self.models.versions.watermark_us = self._version_watermark
        self.models.advance(int(projector.watermark_us))
        self.offset = int(offsets[-1]) + 1
        if self.recorder is not None:
            self.recorder(batch, eff_ts, np.asarray(scores, np.float64))

    def _observe(self, users, eff_ts, X, is_purchase, rows, a: int, b: int) -> list[float]:
        if a == b:
            return []
        part = slice(a, b)
        self.models.observe_rows(users[part], eff_ts[part], {k: v[part] for k, v in rows.items()})
        # the per-event scores only for a recorder (the evaluation's replay): learning is the
        # same without them, and the events that open no question are then not scored
        return self.models.observe_many(users[part], eff_ts[part], X[part], is_purchase[part],
                                        self.columns, scores=self.recorder is not None)

    def _version_starts(self, eff_ts: np.ndarray) -> list[tuple[int, int]]:
        """(position, period start) of each event at which event time enters a new period."""
        period = self.version_period_us
        before = self._version_watermark
        running = np.maximum.accumulate(np.maximum(eff_ts, before))
        previous = np.r_[before, running[:-1]]
        if before == _NO_TS:  # the very first event: the fresh models are in force before it
            previous[0] = _NO_TS
            starts = [(0, _NO_TS)]
        else:
            starts = []
        moved = np.flatnonzero((running // period > previous // period) & (previous != _NO_TS))
        starts += [(int(i), int(running[i] // period * period)) for i in moved]
        self._version_watermark = int(running[-1])
        return starts

    def served_rows(self, stored: dict[str, np.ndarray], t_us: np.ndarray) -> np.ndarray:
        """The model columns served at ``t_us`` from stored rows, as a float64 matrix."""
        served = kernels.evaluate_stored(stored, np.asarray(t_us, np.int64), names=self.columns)
        return np.column_stack([np.asarray(served[c], np.float64) for c in self.columns])

    def contribute(self, body: dict[str, Any], features: ServedFeatures) -> None:
        """Segment, propensity (score, horizon, reasons) and version for ``features``.

        Scored by the models in force at the profile's time (`ModelSet.at`): for a latest
        profile the version of the current period (``model_source: "current"``), for an
        as-of profile before the newest event time the version of T's period
        (``"as_of"``); ``model_valid_from`` says from when that version serves and
        ``model_offset`` the log offset it had learnt up to.
        """
        values = features.values
        x = {c: values[c] for c in self.columns}
        watermark = self._version_watermark
        as_of = watermark != _NO_TS and features.as_of_us < watermark
        t = features.as_of_us if as_of else watermark
        models, entry = self._serving(t)
        body.update(models.profile(x, top=self.top))
        body["model_source"] = "as_of" if as_of else "current"
        if entry is None:
            body["model_offset"] = self.offset
            body["model_valid_from"] = None
        else:
            body["model_offset"] = entry["offset"]
            body["model_valid_from"] = (None if entry["valid_from_us"] == _NO_TS
                                        else cat.iso_utc(entry["valid_from_us"]))

    def _serving(self, t_us: int) -> tuple[ModelSet, dict | None]:
        versions = self.models.versions
        entry = versions.at(t_us) if versions is not None else None
        if entry is None:
            return self.models, None
        key = (entry["valid_from_us"], entry["offset"], id(entry))
        if self._cache_key != key or self._cache is None:
            self._cache = ModelVersions.load(entry)
            self._cache_key = key
        return self._cache, entry

    def stats(self) -> dict:
        """The model set's counters (pending labels, drift, segment sizes) for /metrics."""
        return self.models.stats()

    # -- checkpoints and lifecycle -----------------------------------------------------------

    def save(self, directory: Path) -> None:
        write_synced(Path(directory) / _MODELS_FILE, self.models.to_bytes())
        (Path(directory) / "offset").write_text(str(self.offset), "utf-8")

    def load(self, directory: Path) -> None:
        try:
            models = ModelSet.from_bytes((Path(directory) / _MODELS_FILE).read_bytes())
        except StaleModels:  # another version's state: rebuilt from the log, as below
            return
        if models.propensity.horizon_us != self.models.propensity.horizon_us:
            # Checkpointed with another horizon: keep the configured fresh models and stay
            # not `loaded`, so the wiring rebuilds them from the log (a new model_version).
            return
        self.models = models
        offset = Path(directory) / "offset"
        self.offset = int(offset.read_text("utf-8")) if offset.exists() else 0
        versions = models.versions
        self._version_watermark = (versions.watermark_us if versions is not None
                                   else _NO_TS)
        self._cache_key = None
        self._set_columns()
        self.loaded = True

    def reset(self) -> None:
        """Fresh models with the same configuration (a new `model_version`), offset 0."""
        self.models.reset()
        self.offset = 0
        self._version_watermark = _NO_TS
        self._cache_key = None

    def erase_user(self, stored_id: str) -> dict[str, int]:
        """Drop what the models hold keyed by a user (pending questions, the period's set).

        The learnt weights and centroids are aggregates and stay (see `offline.privacy.erasure`).
        """
        return self.models.erase_user(stored_id)
