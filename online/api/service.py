"""The server's live state: the event log, the projector, and the locks that keep reads consistent.

One `ProfileService` per app, opened by the lifespan. Concurrency (routes do their work in a
thread pool; latest profiles already serialized at the offset, one or a batch, are answered on
the event loop with no lock: see `online.api.profile_cache`):

- `EventLog` is thread-safe (a writer connection under its lock, one reader per thread).
- The projector's in-memory state is guarded by a readers-writer lock: projection runs alone,
  profile reads share. A read therefore sees every feature and model output at one offset.
- `ingest` appends (durable on return), then projects up to at least the new offset before it
  answers: a profile read after a successful POST reflects it (read-your-writes).
- A follower thread catches up with events appended by other processes (e.g.
  ``portrait ingest --no-project`` into the same data dir) and checkpoints every N events or
  T seconds, never inside a request. The server is the data dir's one projecting writer
  while it runs (`online.writerlock`): a second server or a projecting CLI ingest is refused.
- As-of profiles are recomputed from the log with no projector lock held (see `profiles`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from online import catalogue
from online.eventlog import AppendResult, EventLog
from online.writerlock import WriterLock

from .consistency import ProfileSampler
from .deferred_writes import DeferredWrites, writes_waiting
from .errors import AsOfWorkLimit, UnknownFeature, UnknownUserError
from .history import history_rows
from .metrics import ApiMetrics
from .profile_cache import ProfileCache, profile_json, served_body, warm_up
from .rwlock import ReadWriteLock
from .service_gauges import service_gauges, service_stats
from .settings import ApiSettings

__all__ = ["Eraser", "ProfileService", "ProjectorFactory", "default_eraser", "default_projector"]

# (log, settings) -> Projector: the CLI passes one that adds contributors living outside
# `online` (e.g. offline.feast_online.OnlineWriter for Feast online writes)
ProjectorFactory = Callable[[EventLog, ApiSettings], Any]
# (settings, raw user id, open log, live projector) -> receipt dict with a bool "found";
# called with projection held still. The CLI passes offline.privacy.erasure.erase_user, which also
# reaches the parquet snapshot, the Feast online store and the profile sample log.
Eraser = Callable[[ApiSettings, str, EventLog, Any], dict[str, Any]]

_log = logging.getLogger("portrait.api")
_FOLLOW_POLL_S = 0.25
_KNOWN_FEATURES = frozenset(catalogue.served_names())


def default_projector(log: EventLog, settings: ApiSettings):
    """The projector over ``log`` resuming from the data dir's checkpoint (no extra writers)."""
    from online.projector import Projector  # heavy (numba, River): only when serving

    return Projector(log, settings.state_dir)


def default_eraser(settings: ApiSettings, user_id: str, log: EventLog, projector) -> dict:
    """Erase from the stores `online` knows: the event log (and quarantine) and the state."""
    stored = log.stored_user_id(user_id)
    erased = dict(log.erase_user(stored))
    erased["projection"] = projector.erase_user(stored)
    erased["found"] = bool(erased["events"] or erased["projection"].get("state_rows"))
    return erased


class ProfileService:
    """Ingest, profiles and history over one data dir, safe under concurrent requests."""

    def __init__(
        self,
        settings: ApiSettings,
        metrics: ApiMetrics,
        projector_factory: ProjectorFactory | None = None,
        eraser: Eraser | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._projector_factory = projector_factory or default_projector
        self._eraser = eraser or default_eraser
        self.log: EventLog | None = None
        self.projector = None
        self.sampler: ProfileSampler | None = None
        self._writer: WriterLock | None = None
        self._lock = ReadWriteLock()
        self.cache = ProfileCache(settings.profile_cache_users)
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._follower: threading.Thread | None = None
        self._checkpoint_offset = 0
        self._checkpoint_time = time.monotonic()
        self._caught_up_at = time.monotonic()
        self._flushed_at = time.monotonic()
        self._ingested_at = time.monotonic()

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Open the log, load the projector's checkpoint and catch up with the log."""
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        # the server is the data dir's one projecting writer while it runs (WriterBusy else)
        self._writer = WriterLock(s.state_dir, command="portrait serve").acquire()
        try:
            self.log = EventLog(s.event_log_path, pseudonymizer=_pseudonymizer(s))
            self.projector = self._projector_factory(self.log, s)
            self._checkpoint_offset = self.projector.offset
            self._project()
            self.cache.invalidate(self.projector.offset)  # the map of the loaded offset
            warm_up(self.projector)
        except BaseException:
            if self.log is not None:
                self.log.close()
                self.log = None
            self._writer.release()
            self._writer = None
            raise
        if s.profile_sample_path is not None and s.profile_sample_rate > 0:
            self.sampler = ProfileSampler(s.profile_sample_path, s.profile_sample_rate,
                                          data_dir=s.data_dir)
        self.metrics.add_gauges(lambda: service_gauges(self))
        self.metrics.add_stats(lambda: service_stats(self))
        self._follower = threading.Thread(target=self._follow, name="portrait-follower",
                                          daemon=True)
        self._follower.start()

    def close(self) -> None:
        """Stop the follower, write a final checkpoint, close the log (idempotent)."""
        self._stop.set()
        self._wake.set()
        if self._follower is not None:
            self._follower.join(timeout=30)
            self._follower = None
        if self.projector is not None and self.log is not None:
            try:
                try:
                    self._flush_writes()
                except Exception:  # still pending: the checkpoint below keeps them
                    _log.exception("final online-store flush failed")
                self._checkpoint(force=False)
            finally:
                for c in (c for c in self.projector.contributors if isinstance(c, DeferredWrites)):
                    c.close()  # e.g. the online writer's process
                self.log.close()
        if self.sampler is not None:
            self.sampler.close()
        self.log = None
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    @property
    def offset(self) -> int:
        """The log offset the projector has reached (events below it are reflected)."""
        return self.projector.offset

    # -- writes ------------------------------------------------------------------------------

    def ingest(self, payloads: list[Any]) -> tuple[AppendResult, int]:
        """Append ``payloads`` (validated per event), then project them; return the offset."""
        result = self.log.append(payloads, source="http")
        offset = self.projector.offset
        if result.accepted or offset < result.next_offset:
            offset = self._project()
        self._ingested_at = time.monotonic()
        if offset - self._checkpoint_offset >= self.settings.checkpoint_every_events:
            self._wake.set()  # the follower checkpoints; this request does not wait for it
        return result, offset

    def _project(self) -> int:
        """Bring the projector to the end of the log (exclusive section); return its offset."""
        with self._lock.write():
            if self.projector.offset < self.log.next_offset:
                start = time.perf_counter()
                try:
                    self.projector.run(batch_size=self.settings.batch_size)
                finally:  # moved, or reloaded from the checkpoint after a failure
                    self.cache.invalidate(self.projector.offset)
                self.metrics.projection_seconds.observe(time.perf_counter() - start)
            self._caught_up_at = time.monotonic()
            return self.projector.offset

    def _flush_writes(self) -> int:
        """Push deferred online writes (contributors with ``collect``/``push``).

        The rows are copied with projection held still (a shared section: profile reads go
        on), then pushed with no lock held, so neither reads nor ingestion wait for the store.
        """
        writers = [c for c in self.projector.contributors if isinstance(c, DeferredWrites)]
        if not writers:
            return 0
        with self._flush_lock:  # one flush at a time; erasure waits for a push in flight
            start = time.perf_counter()
            with self._lock.read():
                jobs = [(c, job) for c in writers
                        if (job := c.collect(self.projector)) is not None]
            with self.metrics.online_flush_failures.count_exceptions():
                n = sum(c.push(job) for c, job in jobs)
            if jobs:
                self.metrics.flushed(time.perf_counter() - start, n)
        self._flushed_at = time.monotonic()
        return n

    def _checkpoint(self, *, force: bool) -> bool:
        s = self.settings
        due = force or self.projector.offset > self._checkpoint_offset and (
            self.projector.offset - self._checkpoint_offset >= s.checkpoint_every_events
            or time.monotonic() - self._checkpoint_time >= s.checkpoint_every_seconds
            or self._stop.is_set()
        )
        if not due:
            return False
        with self._lock.write():  # a checkpoint must not see a half-applied batch
            self.projector.checkpoint()
            self._checkpoint_offset = self.projector.offset
        self._checkpoint_time = time.monotonic()
        self.metrics.checkpoints.inc()
        return True

    def _follow(self) -> None:
        s = self.settings
        while not self._stop.is_set():
            # with writes waiting, look again once ingestion may have paused long enough
            waiting = writes_waiting(self.projector)
            self._wake.wait(min(_FOLLOW_POLL_S, s.online_flush_idle_seconds) if waiting
                            else _FOLLOW_POLL_S)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if self.log.next_offset > self.projector.offset:
                    self._project()
                now = time.monotonic()
                # once a period while events stream in, and as soon as they pause: the
                # store then holds a burst's rows right after it, not up to a period later
                if now - self._flushed_at >= s.online_flush_seconds or (
                        now - self._ingested_at >= s.online_flush_idle_seconds
                        and writes_waiting(self.projector)):
                    self._flush_writes()
                self._checkpoint(force=False)
            except Exception:  # keep following; the next round retries
                _log.exception("follower: projection or checkpoint failed")

    def erase(self, user_id: str) -> tuple[dict[str, Any], int]:
        """Erase a user everywhere the eraser reaches (404 when no store held the user)."""
        self._flush_writes()  # pending online writes land before, never after, the erasure
        with self._flush_lock, self._lock.write():  # no push in flight, projection still
            with self.sampler.paused() if self.sampler is not None else nullcontext():
                try:
                    erased = self._eraser(self.settings, user_id, self.log, self.projector)
                finally:
                    self.cache.invalidate(self.projector.offset)
            offset = self.projector.offset
        # the erased state must not survive in the last checkpoint, even at the same offset
        # (nothing was erased from memory for an unknown user: no checkpoint is due then)
        if not erased.get("found"):
            raise UnknownUserError(user_id)
        self._checkpoint(force=True)
        return erased, offset

    # -- reads -------------------------------------------------------------------------------

    def cached_profile(self, user_id: str) -> bytes | None:
        """The serialized latest profile of ``user_id`` when cached at the offset (no lock)."""
        if (entry := self.cache.get(user_id)) is None:
            return None
        self._sample([entry[0]])
        return entry[1]

    def cached_batch(self, user_ids: list[str]) -> tuple[int, list[bytes]] | None:
        """(offset, serialized profiles) when every one of ``user_ids`` is cached at one
        offset (ids de-duplicated, as `profiles_json`), else None (no lock)."""
        offset, entries = self.cache.current
        ids = dict.fromkeys(user_ids)
        found = [e for u in ids if (e := entries.get(u)) is not None]
        if len(found) < len(ids):
            return None
        self.cache.hits += len(found)
        self._sample([body for body, _ in found])
        return offset, [data for _, data in found]

    def profiles_json(self, user_ids: list[str], *, wait=True) -> tuple[int, list[bytes], list]:
        """Latest profiles serialized (`profile_json`), from one offset: (offset, bodies, ids
        with no events). Cached bodies are reused, the others computed in one call and cached;
        ids de-duplicated. ``wait=False``: `LockBusy` at once while a projection holds or
        waits for the state (the event loop's call, which must not block)."""
        ids = list(dict.fromkeys(user_ids))
        with self._lock.read(wait):  # the map and the projector's state belong to one offset
            offset, entries = self.projector.offset, self.cache.entries
            found = {u: entries[u] for u in ids if u in entries}
            todo = [u for u in ids if u not in found]
            missing: list[str] = []
            if todo:
                bodies, missing = self.projector.profiles(todo)
                for body in bodies:
                    body = served_body(body, None)
                    entry = found[body["user_id"]] = (body, profile_json(body))
                    kept = body if self.sampler is not None else None  # only for the sampler
                    self.cache.put(entries, body["user_id"], kept, entry[1])
            self.cache.hits += len(ids) - len(todo)
        absent = set(missing)
        out = [found[u] for u in ids if u not in absent]
        self._sample([body for body, _ in out])
        return offset, [data for _, data in out], missing

    def profile(
        self, user_id: str, *, as_of_us: int | None = None, features: list[str] | None = None
    ) -> dict[str, Any]:
        """One user's profile body (latest or as of ``as_of_us``), features optionally cut."""
        _, bodies, _ = self.profiles([user_id], as_of_us=as_of_us, features=features)
        if not bodies:
            raise UnknownUserError(user_id)
        return bodies[0]

    def profiles(
        self,
        user_ids: list[str],
        *,
        as_of_us: int | None = None,
        features: list[str] | None = None,
    ) -> tuple[int, list[dict[str, Any]], list[str]]:
        """Many users' profiles from one offset: (offset, bodies, ids with no events).

        Ids are de-duplicated. Latest profiles are read in one shared section of the
        projector's lock. As-of profiles are recomputed from the log below the projector's
        offset with no lock held (the log is the source of truth), so a heavy as-of request
        never holds up latest reads or ingestion; only the models' part (contributors) is
        added in a short shared section. Their work is bounded by ``max_asof_events``.
        """
        _check_features(features)
        from online.projector import TooMuchWork, features_as_of_many

        ids = list(dict.fromkeys(user_ids))
        if as_of_us is None:
            with self._lock.read():  # one section: every profile reflects the same offset
                offset = self.projector.offset
                bodies, missing = self.projector.profiles(ids)
        else:
            offset = self.projector.offset  # events below it are in the log, durably
            try:
                served, missing = features_as_of_many(
                    self.log, ids, as_of_us, below_offset=offset,
                    max_events=self.settings.max_asof_events)
            except TooMuchWork as exc:
                raise AsOfWorkLimit(exc) from None
            with self._lock.read():
                bodies = self.projector.bodies(served)
        out = [served_body(b, features) for b in bodies]
        self._sample(out)
        return offset, out, missing

    def _sample(self, bodies: list[dict[str, Any] | None]) -> None:
        """Offer served bodies to the profile sampler (None: not kept, sampling is off)."""
        if self.sampler is not None:
            for body in bodies:
                if body is not None:
                    self.sampler.maybe_record(body, self.log.stored_user_id(body["user_id"]))

    def history(
        self,
        user_id: str,
        *,
        limit: int,
        before_us: int | None = None,
        before_offset: int | None = None,
    ) -> list[dict[str, Any]]:
        """The user's newest ``limit`` events (time before ``before_us``, offset before
        ``before_offset``), newest first."""
        return history_rows(self.log, user_id, limit=limit, before_us=before_us,
                            before_offset=before_offset)

    def readiness(self) -> tuple[bool, int, int]:
        """(log open, projector offset, log next offset)."""
        if self.log is None:
            return False, 0, 0
        try:
            return True, self.projector.offset, self.log.next_offset
        except Exception:
            return False, self.projector.offset, 0


def _pseudonymizer(settings: ApiSettings):
    """The data dir's user-id pseudonymizer (None without a key; `PseudonymKeyError` when
    the key does not match the data dir's), as every writer uses."""
    from online.privacy import pseudonymizer_from_settings

    return pseudonymizer_from_settings(settings)


def _check_features(features: list[str] | None) -> None:
    if features:
        unknown = [n for n in features if n not in _KNOWN_FEATURES]
        if unknown:
            raise UnknownFeature(unknown)
