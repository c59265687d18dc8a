"""The projector: reads the event log in offset order, keeps feature state, serves profiles.

It applies batches through the kernels, tracks the offset it reached and the watermark (the
newest effective event time applied), checkpoints state + offset (+ the contributors' state)
atomically, and resumes from the latest checkpoint on construction, so a restart gives exactly
the state an uninterrupted run would.

Profile parts computed outside the kernels (segment, propensity, model version) come from
``ProfileContributor`` objects: the projector calls them once per applied batch (with the
users' row indices and effective times) and once per profile, and checkpoints them with the
state.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from online import catalogue as cat
from online import kernels
from online.checkpoints import current_checkpoint, point_current, remove_stale_checkpoints
from online.durable import fsync_dir, fsync_tree, write_synced
from online.progress import projection_progress as _progress
from online.state import UserState

CHECKPOINT_FORMAT = 1
NUMERIC_STORED = tuple(f.name for f in cat.stored_features() if f.dtype not in ("str", "str_list"))
_LOAD_ATTEMPTS = 5  # reads of CURRENT while writers replace it under us


class UnknownUser(LookupError):
    """A user with no events in the log (as of T: none with effective ts <= T)."""

    def __init__(self, user_id: str, as_of_us: int | None = None) -> None:
        self.user_id = user_id
        self.as_of_us = as_of_us
        when = "" if as_of_us is None else f" as of {cat.iso_utc(as_of_us)}"
        super().__init__(f"user {user_id!r} has no events{when}")


@dataclass(frozen=True)
class ServedFeatures:
    """Served feature values of one user at ``as_of_us``, reflecting the log below ``offset``."""

    user_id: str
    as_of_us: int
    offset: int
    values: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The ``features`` object of a profile body (ISO timestamps, plain numbers)."""
        return {name: cat.json_value(name, v) for name, v in self.values.items()}


class ProfileContributor(ABC):
    """A part of the profile computed outside the feature kernels (the online models)."""

    name: str = "contributor"  # its checkpoint sub-directory

    @abstractmethod
    def on_batch(self, projector: Projector, batch, user_idx: np.ndarray,
                 eff_ts: np.ndarray) -> None:
        """Called after each applied batch: row index and effective ts of every event.

        Per-event feature values (after each event, no look-ahead inside the batch) are
        ``kernels.apply(..., event_rows=...)`` rows; ``projector.event_rows`` holds them for
        the batch when this contributor sets ``wants_event_rows = True``.
        """

    @abstractmethod
    def contribute(self, body: dict[str, Any], features: ServedFeatures) -> None:
        """Fill this contributor's keys of a profile body (e.g. segment, propensity)."""

    def save(self, directory: Path) -> None:  # noqa: B027 - optional: stateless by default
        """Write the contributor's state into ``directory`` (exists, fsynced by the caller)."""

    def load(self, directory: Path) -> None:  # noqa: B027
        """Restore the state written by ``save``."""

    def reset(self) -> None:  # noqa: B027
        """Forget learnt state (before a reload from the checkpoint, or from offset 0)."""

    def erase_user(self, stored_id: str) -> dict[str, int]:
        """Forget what this contributor keeps of one user (its stored id): counts dropped."""
        return {}

    def stats(self) -> dict[str, Any] | None:
        """Figures for ``/metrics`` (None: nothing to report)."""
        return None

    @property
    def model_version(self) -> str | None:
        """The version of the models this contributor serves (None: it serves no models)."""
        return None

    wants_event_rows: bool = False
    # the stored columns wanted in ``projector.event_rows`` (default: all but the strings)
    event_row_names: tuple[str, ...] = NUMERIC_STORED


class Projector:
    """Projects the event log into per-user feature state; resumes from its checkpoint."""

    def __init__(self, log, state_dir: str | Path, *,
                 contributors: Iterable[ProfileContributor] = ()) -> None:
        self.log = log
        self.state_dir = Path(state_dir)
        self.contributors = list(contributors)
        self.state = UserState()
        self.offset = 0
        self.watermark_us = cat.NO_TS
        self.event_rows: dict[str, np.ndarray] | None = None
        self._load_latest()

    # -- projection ------------------------------------------------------------------------

    def run(self, batch_size: int = 100_000, until_offset: int | None = None,
            progress: bool = False) -> int:
        """Apply the log from the resume offset (to ``until_offset``); returns events applied."""
        applied = 0
        bar = _progress(progress, self.log, until_offset, self.offset)
        for batch, resume in self.log.batches(self.offset, until_offset, batch_size):
            try:
                self.apply_batch(batch)
            except BaseException:
                # a half-applied batch must not be applied again on top of itself: go back
                # to the checkpoint, so the next run re-applies from there exactly once
                self.reload()
                raise
            self.offset = resume
            applied += len(batch)
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()
        return applied

    def apply_batch(self, batch) -> np.ndarray:
        """Apply one batch (the caller moves ``offset``); returns effective ts per event."""
        state = self.state
        user_idx = state.index_users(batch.user_id)
        wanting = [c for c in self.contributors if c.wants_event_rows]
        rows = True if wanting else None
        names = {n for c in wanting for n in c.event_row_names}
        out = kernels.apply_encoded(
            state, user_idx, batch.ts, batch.type, batch.price, batch.quantity,
            state.encode_items(batch.item_id), state.encode_categories(batch.category),
            event_rows=rows, row_names=names,
        )
        eff, self.event_rows = out if rows else (out, None)
        if len(eff):
            self.watermark_us = max(self.watermark_us, int(eff.max()))
            for c in self.contributors:
                c.on_batch(self, batch, user_idx, eff)
        self.event_rows = None
        return eff

    # -- checkpoints -----------------------------------------------------------------------

    def checkpoint(self) -> Path:
        """Write state + offset + contributors atomically; returns the checkpoint directory.

        Safe with other processes checkpointing the same state dir (the writer lock,
        `online.writerlock`, normally prevents that): the new directory and the pointer's
        temporary file have unique names, ``CURRENT`` is replaced by one rename, and only the
        checkpoint ``CURRENT`` named before (plus leftovers of crashed writers) is removed,
        never one another process may be writing or has just made current.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        previous = current_checkpoint(self.state_dir)
        target = Path(tempfile.mkdtemp(prefix=f"ckpt-{self.offset:020d}-", dir=self.state_dir))
        try:
            self.state.write_into(target)
            for c in self.contributors:
                sub = target / c.name
                sub.mkdir()
                c.save(sub)
                fsync_tree(sub)
            meta = {"format": CHECKPOINT_FORMAT, "offset": self.offset,
                    "watermark_us": self.watermark_us}
            write_synced(target / "meta.json", json.dumps(meta).encode())
            fsync_dir(target)
            fsync_dir(self.state_dir)
            point_current(self.state_dir, target.name)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        remove_stale_checkpoints(self.state_dir, previous, superseded=target.name)
        return target

    def reload(self) -> None:
        """Drop the in-memory state and go back to the latest checkpoint (or to offset 0)."""
        self.state = UserState()
        self.offset = 0
        self.watermark_us = cat.NO_TS
        for c in self.contributors:
            c.reset()
        self._load_latest()

    def _load_latest(self) -> None:
        # a writer may replace CURRENT and remove the checkpoint it named while we read it:
        # then CURRENT names a newer one, which we read instead
        for attempt in range(_LOAD_ATTEMPTS):
            name = current_checkpoint(self.state_dir)
            if name is None:
                return
            try:
                self._load(self.state_dir / name)
                return
            except FileNotFoundError:
                if attempt + 1 == _LOAD_ATTEMPTS or current_checkpoint(self.state_dir) == name:
                    raise
                self.state = UserState()
                self.offset, self.watermark_us = 0, cat.NO_TS
                for c in self.contributors:
                    c.reset()

    def _load(self, directory: Path) -> None:
        meta = json.loads((directory / "meta.json").read_text("utf-8"))
        if meta["format"] != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint format: expected {CHECKPOINT_FORMAT}, "
                             f"got {meta['format']} in {directory}")
        self.state = UserState.load(directory)
        self.offset = int(meta["offset"])
        self.watermark_us = int(meta["watermark_us"])
        for c in self.contributors:
            if (directory / c.name).is_dir():
                c.load(directory / c.name)

    # -- reads -----------------------------------------------------------------------------

    def features(self, user_id: str, at_us: int | None = None) -> ServedFeatures:
        """Served values of a user from the live state at ``at_us`` (default the watermark)."""
        row = self.state.user_index(_stored_id(self.log, user_id))
        if row is None:
            raise UnknownUser(user_id)
        t = self.watermark_us if at_us is None else int(at_us)
        t = max(t, int(self.state.ints[row, kernels.I_LAST_TS]))
        values = kernels.evaluate(self.state, [row], t)
        return ServedFeatures(user_id, t, self.offset, {k: _scalar(v[0]) for k, v in
                                                        values.items()})

    def profile(self, user_id: str, as_of: int | None = None) -> dict[str, Any]:
        """The profile body: latest (at the watermark) or as of ``as_of`` (µs) via the log."""
        bodies, _ = self.profiles([user_id], as_of)
        if not bodies:
            raise UnknownUser(user_id, None if as_of is None else int(as_of))
        return bodies[0]

    def profiles(self, user_ids: Iterable[str], as_of: int | None = None, *,
                 max_events: int | None = None) -> tuple[list[dict[str, Any]], list[str]]:
        """Profile bodies of many users: (bodies of users with events, ids without any).

        Ids are de-duplicated (first appearance order). Latest: one kernel call over the
        users' rows of the live state. As of T: recomputed from each user's log history
        (`features_as_of_many`, at most ``max_events`` events in all).
        """
        ids = list(dict.fromkeys(user_ids))
        if as_of is None:
            served, missing = self.latest(ids)
        else:
            served, missing = features_as_of_many(self.log, ids, int(as_of),
                                                  max_events=max_events)
        return self.bodies(served), missing

    def latest(self, user_ids: list[str]) -> tuple[list[ServedFeatures], list[str]]:
        """Served values of users in the live state, evaluated together (one kernel call).

        Each user is evaluated at the watermark, or at its newest event time when later.
        """
        found: list[tuple[str, int]] = []
        missing: list[str] = []
        for user_id in user_ids:
            row = self.state.user_index(_stored_id(self.log, user_id))
            if row is None:
                missing.append(user_id)
            else:
                found.append((user_id, row))
        if not found:
            return [], missing
        rows = np.fromiter((r for _, r in found), dtype=np.int64, count=len(found))
        t = np.maximum(np.int64(self.watermark_us), self.state.ints[rows, kernels.I_LAST_TS])
        values = kernels.evaluate(self.state, rows, t)
        names = list(values)
        columns = [values[n].tolist() for n in names]  # plain Python scalars, one per column
        return [ServedFeatures(user_id, int(t[j]), self.offset,
                               {n: col[j] for n, col in zip(names, columns, strict=True)})
                for j, (user_id, _) in enumerate(found)], missing

    def bodies(self, served: list[ServedFeatures]) -> list[dict[str, Any]]:
        """Profile bodies of served values, the contributors' parts (models) filled in."""
        out = []
        for features in served:
            body: dict[str, Any] = {
                "user_id": features.user_id,
                "as_of": cat.iso_utc(features.as_of_us),
                "offset": features.offset,
                "features": features.to_json(),
                "segment": None,
                "propensity": None,
                "model_version": None,
            }
            for c in self.contributors:
                c.contribute(body, features)
            out.append(body)
        return out

    def erase_user(self, user_id: str) -> dict[str, Any]:
        """Forget a user's state (erasure); returns what was removed."""
        return {"state_rows": int(self.state.erase(_stored_id(self.log, user_id)))}


class TooMuchWork(ValueError):
    """An as-of request would recompute more events than its bound allows."""

    def __init__(self, seen: int, limit: int) -> None:
        self.seen, self.limit = seen, limit
        super().__init__(f"the requested users' histories hold more than {limit:,} events "
                         f"({seen:,} read before stopping); at most {limit:,} are recomputed "
                         "per request: ask for fewer users")


def features_as_of(log, user_id: str, t_us: int) -> ServedFeatures:
    """Served values as of T recomputed from the user's log history (the prefix rule).

    Effective times are taken over the user's whole history in offset order, and the state
    as of T is the one after the prefix of events with effective ts <= T, run through the
    same kernels with a fresh single-user state.  ``offset`` is the offset after the last
    event included.  Raises ``UnknownUser`` when no event has effective ts <= T.
    """
    served, _ = features_as_of_many(log, [user_id], t_us)
    if not served:
        raise UnknownUser(user_id, t_us)
    return served[0]


def features_as_of_many(log, user_ids: list[str], t_us: int, *,
                        max_events: int | None = None, below_offset: int | None = None
                        ) -> tuple[list[ServedFeatures], list[str]]:
    """`features_as_of` of several users: (served values, ids with no events as of T).

    Reads only the log (never the projector's state), so it needs no projector lock.
    ``below_offset``: only events below it count (the log as it was at that offset).
    Raises `TooMuchWork` as soon as the histories read exceed ``max_events`` in all.
    """
    served: list[ServedFeatures] = []
    missing: list[str] = []
    seen = 0
    for user_id in user_ids:
        batch = log.read_user(_stored_id(log, user_id))
        if below_offset is not None and len(batch) and batch.offset[-1] >= below_offset:
            batch = batch.take(np.flatnonzero(batch.offset < below_offset))
        seen += len(batch)
        if max_events is not None and seen > max_events:
            raise TooMuchWork(seen, max_events)
        n = 0
        if len(batch):
            eff = np.maximum.accumulate(batch.ts)
            n = int(np.searchsorted(eff, t_us, side="right"))
        if n == 0:
            missing.append(user_id)
            continue
        state = UserState(capacity=1)
        kernels.apply(state, batch.take(slice(0, n)))
        values = kernels.evaluate(state, [0], t_us)
        served.append(ServedFeatures(user_id, int(t_us), int(batch.offset[n - 1]) + 1,
                                     {k: _scalar(v[0]) for k, v in values.items()}))
    return served, missing


def _stored_id(log, user_id: str) -> str:
    # the log may pseudonymize ids; state and log hold the stored form
    to_stored = getattr(log, "stored_user_id", None)
    return to_stored(user_id) if to_stored is not None else user_id


def _scalar(v):
    return v.item() if isinstance(v, np.generic) else v
