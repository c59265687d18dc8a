"""The projector's online models as one unit: what it calls per event, per batch, per checkpoint."""

from __future__ import annotations

import copy
import hashlib
import pickle
from collections.abc import Sequence

from .drift import ErrorDrift
from .propensity import DAY_US, HOUR_US, QUESTION_SPACING_US, PurchasePropensity
from .segments import UserSegments
from .snapshots import SegmentSnapshots
from .versions import ModelVersions

__all__ = ["ModelSet", "STATE_FORMAT", "StaleModels"]

# Bump when the pickled layout of the models changes incompatibly.
# 2: questions hold moments and the prior's tallies (a checkpoint of 1 is rebuilt from the log)
# 3: the segment snapshots' sample is held by column
STATE_FORMAT = 3


class StaleModels(ValueError):
    """A checkpoint's model state is of another format: rebuild the models from the log."""


class ModelSet:
    """Propensity, segments and drift under one `model_version`, checkpointed together.

    `model_version` is ``"<config>-g<generation>"``: `config` is the first 12 hex digits of a
    SHA-256 over the state format and the `repr` of both models (River's `repr` lists every
    constructor parameter, nested ones included, and no learnt state), so a different
    configuration gives a different version; `generation` counts `reset` and `replace_*` calls
    since this set was created, so a reset model with an unchanged configuration still gets a
    new version. Learning does not change the version: the log offset a profile carries says
    how much the models have seen. A replay from offset 0 starts at generation 0 and so agrees
    with a live projector that was never reset.

    How the projector drives it (the models belong to the projector; nothing else learns):

    - per batch of events in log order, after the kernels applied them: `observe_many(users,
      ts, X, is_purchase, columns)` with each event's *effective* time and the row of its
      user's served features at that time (the event included); or `observe` per event.
      Results do not depend on where batches start or end, so a replay matches a live run.
    - at the end of a batch: `advance(watermark)` (a no-op when every event was observed),
      then `profile_many(X_users, columns)` (or `profile(x)`) for the users the batch touched,
      served at the watermark: the segment, score, reasons and version to write online.
      Scoring is pure, so serving never waits for learning.
    - with each checkpoint: `to_bytes()` next to the offset; on restart `from_bytes(blob)`.

    Parameters
    ----------
    propensity
        The purchase propensity model (its drift monitor comes with it).
    segments
        The segment model; None means `UserSegments()` with its default RFM feature names.

    Examples
    --------

    >>> models = ModelSet.for_features(("purchase_count", "spend_total"), horizon_us=DAY_US)
    >>> p = models.observe("ann", 0, {"purchase_count": 1.0, "spend_total": 20.0})
    >>> profile = models.profile({"purchase_count": 1.0, "spend_total": 20.0}, top=1)
    >>> profile["propensity"]["horizon"], profile["segment"]["label"]
    ('1d', 'unformed')
    >>> version = models.model_version
    >>> models.reset()
    >>> models.model_version != version
    True

    """

    def __init__(self, propensity: PurchasePropensity, segments: UserSegments | None = None,
                 snapshots: SegmentSnapshots | None = None):
        self.propensity = propensity
        self.segments = segments if segments is not None else UserSegments()
        # With snapshots, the segments learn from them (`observe_rows`), not from events.
        self.snapshots = snapshots
        # The scoring models of past times (None: not kept; see `save_version`, `at`).
        self.versions: ModelVersions | None = None
        self._generation = 0
        self._config = self._config_hash()

    @classmethod
    def for_features(
        cls,
        features: tuple[str, ...],
        *,
        horizon_us: int = 7 * DAY_US,
        min_spacing_us: int = QUESTION_SPACING_US,
        max_pending: int = 100_000,
        segments: UserSegments | None = None,
        model=None,
    ) -> ModelSet:
        """The default models over `features` (a tuple of catalogue names); `model` is the
        propensity's River classifier (None: `PurchasePropensity`'s default)."""
        propensity = PurchasePropensity(
            features,
            model=model,
            horizon_us=horizon_us,
            min_spacing_us=min_spacing_us,
            max_pending=max_pending,
        )
        return cls(propensity, segments)

    def _config_hash(self) -> str:
        text = f"{STATE_FORMAT}|{self.propensity!r}|{self.propensity._model!r}|{self.segments!r}"
        if self.snapshots is not None:
            sn = self.snapshots
            text += f"|snapshots({sn.share},{sn.max_users},{sn.period_us},{sn.refresh_every})"
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def model_version(self) -> str:
        return f"{self._config}-g{self._generation}"

    @property
    def drift(self) -> ErrorDrift:
        return self.propensity.drift_monitor

    # -- the projector's calls ---------------------------------------------------------------

    def observe(self, user: str, t_us: int, x: dict, is_purchase: bool = False) -> float:
        """Per event, in log order: feed both models, return the propensity score at t_us."""
        if self.snapshots is None:
            self.segments.observe(user, t_us, x)
        return self.propensity.observe(user, t_us, x, is_purchase)

    def observe_many(self, users, t_us, X, is_purchase, columns: Sequence[str], *,
                     scores: bool = True) -> list[float]:
        """`observe` for a batch of events given as columns; the scores, in order (none with
        ``scores=False``: only the events held as questions are then scored).

        `X` is a 2-D float array with one row per event (log order) and one column per name
        in `columns` (e.g. every numeric served feature of the catalogue, in its order); it
        must hold every propensity feature, and the segments read their RFM columns from it.
        The same results as `observe` per event.
        """
        columns = tuple(columns)
        position = {c: i for i, c in enumerate(columns)}
        missing = [f for f in self.propensity.features if f not in position]
        if missing:
            raise ValueError(f"columns lack the propensity features {missing}")
        if self.snapshots is None:
            self.segments.observe_many(users, t_us, X, columns)
        wanted = [position[f] for f in self.propensity.features]
        if hasattr(X, "shape"):
            X_propensity = X[:, wanted]
        else:
            X_propensity = [[row[j] for j in wanted] for row in X]
        return self.propensity.observe_many(users, t_us, X_propensity, is_purchase,
                                            scores=scores)

    def observe_rows(self, users, t_us, rows: dict) -> int:
        """Per batch, with snapshots: the stored row after each event (the projector's
        per-event rows) for the segments' user sample; returns snapshots learnt."""
        if self.snapshots is None:
            return 0
        return self.snapshots.observe_many(self.segments, users, t_us, rows)

    def advance(self, watermark_us: int) -> None:
        """Per batch (optional): move event time on without an event; expired labels learn."""
        self.propensity.advance(watermark_us)

    def score(self, x: dict) -> float:
        """The propensity score of `x` without learning: cheap, pure."""
        return self.propensity.predict_proba_one(x)

    def profile(self, x: dict, top: int = 5) -> dict:
        """The model fields of a profile for served features `x`; pure (learns nothing)."""
        return {
            "segment": self.segments.segment(x),
            "propensity": {
                "score": self.propensity.predict_proba_one(x),
                "horizon": format_duration(self.propensity.horizon_us),
                "top_features": self.propensity.explain_one(x, top=top),
            },
            "model_version": self.model_version,
        }

    def profile_many(self, X, columns: Sequence[str], top: int = 5) -> list[dict]:
        """`profile` for each row of `X` (one user's served features per row, named by
        `columns`), e.g. every user a batch touched, evaluated at the batch's watermark."""
        wanted = sorted(
            {*self.propensity.features, *self.segments.inputs} & set(columns),
            key=list(columns).index,
        )
        position = {c: i for i, c in enumerate(columns)}
        pairs = [(c, position[c]) for c in wanted]
        rows = X.tolist() if hasattr(X, "tolist") else X
        return [self.profile({c: row[j] for c, j in pairs}, top=top) for row in rows]

    def erase_user(self, user: str) -> dict[str, int]:
        """Drop everything the models keep under `user`'s id (their open questions, their
        examples in the propensity learner's window, their mark in the segments' current
        period); learnt weights and centroids are aggregates and stay. Returns what was
        dropped: ``{"pending_dropped": n, "window_rows": n, "period_seen": 0 or 1}``."""
        out = {
            "pending_dropped": self.propensity.erase_user(user),
            "window_rows": self.propensity.erase_learnt(user),
            "period_seen": int(self.segments.erase_user(user)),
        }
        if self.snapshots is not None:
            out["snapshot_row"] = int(self.snapshots.erase_user(user))
        return out

    def stats(self) -> dict:
        """Counters for /metrics and logs: pending queue, labels, drift, segment sizes."""
        return {
            "model_version": self.model_version,
            "propensity": self.propensity.stats(),
            "drift": self.drift.stats(),
            "segments": [
                {"id": s["id"], "label": s["label"], "size": s["size"], "empty": s["empty"]}
                for s in self.segments.describe()
            ],
            "segment_learning": {**self.segments.stats(), **(
                self.snapshots.stats() if self.snapshots is not None else {})},
        }

    # -- versions ----------------------------------------------------------------------------

    def frozen(self) -> ModelSet:
        """The scoring part of this set as it is now: no questions, no user ids, no versions."""
        twin = copy.copy(self)
        twin.propensity = self.propensity.frozen()
        twin.segments = copy.copy(self.segments)
        twin.segments._seen = set()
        twin.snapshots = twin.versions = None
        return twin

    def save_version(self, valid_from_us: int, offset: int) -> None:
        """Keep the models as they are now as the version in force from `valid_from_us`."""
        if self.versions is None:
            self.versions = ModelVersions()
        self.versions.save(self.frozen(), valid_from_us, offset)

    def at(self, t_us: int) -> tuple[ModelSet, dict] | None:
        """The models in force at event time `t_us` and their entry (valid_from_us, offset);
        None when no version was kept. A fresh copy: cache it by ``valid_from_us``."""
        entry = self.versions.at(t_us) if self.versions is not None else None
        if entry is None:
            return None
        return ModelVersions.load(entry), entry

    # -- lifecycle ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Start both models afresh with the same configuration (a new version)."""
        self.propensity = self.propensity.clone()
        self.segments = self.segments.clone()
        if self.snapshots is not None:
            sn = self.snapshots
            self.snapshots = SegmentSnapshots(sn.inputs, share=sn.share, max_users=sn.max_users,
                                              period_us=sn.period_us,
                                              refresh_every=sn.refresh_every)
        self.versions = None  # afresh: the replay that follows keeps its own
        self._bump()

    def replace_propensity(self, propensity: PurchasePropensity) -> None:
        self.propensity = propensity
        self._bump()

    def replace_segments(self, segments: UserSegments) -> None:
        self.segments = segments
        self._bump()

    def _bump(self) -> None:
        self._generation += 1
        self._config = self._config_hash()
        if self.versions is not None:  # a replacement is a version of its own
            watermark = self.propensity.watermark_us
            self.versions.save(self.frozen(), watermark if watermark is not None else -(2**63),
                               -1)

    def state_dict(self) -> dict:
        """Everything needed to resume, for the projector's checkpoint (values are picklable)."""
        return {
            "format": STATE_FORMAT,
            "model_version": self.model_version,
            "generation": self._generation,
            "propensity": self.propensity,
            "segments": self.segments,
            "snapshots": self.snapshots,
            "versions": self.versions,
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> ModelSet:
        """Rebuild a `ModelSet` from `state_dict()` output (after its pickle round trip)."""
        if state.get("format") != STATE_FORMAT:
            raise StaleModels(
                f"model state format {state.get('format')!r} is not {STATE_FORMAT}: "
                "rebuild the models by replaying the log"
            )
        models = cls(state["propensity"], state["segments"], state.get("snapshots"))
        models.versions = state.get("versions")
        models._generation = state["generation"]
        return models

    def to_bytes(self) -> bytes:
        """`state_dict()` pickled: the blob a checkpoint stores."""
        return pickle.dumps(self.state_dict(), protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_bytes(cls, blob: bytes) -> ModelSet:
        """Inverse of `to_bytes`; only for blobs this process's checkpoints wrote (pickle)."""
        return cls.from_state_dict(pickle.loads(blob))


def format_duration(us: int) -> str:
    """A duration in µs as the CLI writes it: "7d", "36h", "90m", "45s" (largest exact unit).

    >>> format_duration(7 * DAY_US), format_duration(36 * HOUR_US), format_duration(1_500_000)
    ('7d', '36h', '1500ms')
    """
    for unit, size in (("d", DAY_US), ("h", HOUR_US), ("m", 60_000_000), ("s", 1_000_000)):
        if us % size == 0:
            return f"{us // size}{unit}"
    if us % 1000 == 0:
        return f"{us // 1000}ms"
    return f"{us}us"
