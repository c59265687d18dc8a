"""Online-store writes taken off the request path: each touched user pushed once per flush.

A projector contributor such as ``offline.feast_online.OnlineWriter`` pushes every batch's
touched users to the online store inside the projection, so an ingest request pays for the
push (Feast: ~100 µs per row), reads wait behind it, and a user active in ten requests is
pushed ten times. `DeferredWrites` replaces that: during projection it only notes which
users changed and the log offset their newest row reflects; the server's follower thread
flushes about once a second while events stream in, and as soon as they pause: `collect`
copies those users' stored rows (projection held still, briefly), then `push` hands them to
the writer with no lock held.

Why this is safe: profiles are served from the projector's state, not from the online store,
so read-your-writes does not depend on the push; the users not yet pushed are saved with
every checkpoint and restored with it, so a crash loses no online write (users changed after
the checkpoint are re-applied from the log and noted again); and the writer never lets an
older row replace a newer one, so a push that is repeated after a crash is harmless.

Wiring (the CLI, which may import ``offline``)::

    from offline.feast_process import OnlineWriterProcess
    writer = OnlineWriterProcess(settings)  # OnlineWriter.push_stored in a child process
    DeferredWrites(writer.push_stored, close=writer.close)
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from online import kernels
from online.projector import ProfileContributor

__all__ = ["DeferredWrites", "PushRows", "writes_waiting"]

# push_rows(user_ids, stored values by feature name (kernels.stored_values), offsets)
PushRows = Callable[[list[str], Mapping[str, np.ndarray], np.ndarray], Any]
_FILE = "pending.json"


class DeferredWrites(ProfileContributor):
    """Collect changed users during projection; push each once per flush."""

    name = "deferred_writes"

    def __init__(self, push_rows: PushRows, *, close: Callable[[], Any] | None = None) -> None:
        self.push_rows = push_rows
        self._close = close  # releases what pushes (e.g. the writer's process), at shutdown
        self._dirty: dict[int, int] = {}  # state row -> offset after its newest applied event
        self._inflight: dict[int, int] = {}  # collected, push not yet confirmed
        self._lock = threading.Lock()
        self.pushed_rows = 0

    @property
    def pending(self) -> int:
        """Users changed and not yet pushed."""
        with self._lock:
            return len(self._dirty.keys() | self._inflight.keys())

    @property
    def waiting(self) -> bool:
        """Whether users changed since the last `collect` (a hint, read without the lock)."""
        return bool(self._dirty)

    def on_batch(self, projector, batch, user_idx: np.ndarray, eff_ts: np.ndarray) -> None:
        # dict() keeps the last (highest) offset of a user repeated in the batch
        newest = dict(zip(np.asarray(user_idx).tolist(),
                          (np.asarray(batch.offset) + 1).tolist(), strict=True))
        with self._lock:
            self._dirty.update(newest)

    def contribute(self, body: dict[str, Any], features) -> None:
        """Nothing: writes add no profile keys."""

    def collect(self, projector) -> tuple | None:
        """The rows to push (call with projection held still); None when nothing changed."""
        with self._lock:
            dirty, self._dirty = self._dirty, {}
            self._inflight.update(dirty)
        names = projector.state.users.values
        rows = [(u, o) for u, o in dirty.items() if names[u] is not None]  # erased: skipped
        if not rows:
            return None
        users = np.array([u for u, _ in rows], dtype=np.int64)
        offsets = np.array([o for _, o in rows], dtype=np.int64)
        stored = kernels.stored_values(projector.state, users)  # fresh arrays: a snapshot
        return [names[u] for u in users.tolist()], stored, offsets, dict(rows)

    def push(self, job: tuple) -> int:
        """Push collected rows (no lock needed); on failure they are pending again."""
        ids, stored, offsets, rows = job
        try:
            self.push_rows(ids, stored, offsets)
        except BaseException:
            with self._lock:
                for u, o in rows.items():
                    self._dirty.setdefault(u, o)
            raise
        with self._lock:
            for u, o in rows.items():
                if self._inflight.get(u) == o:
                    del self._inflight[u]
        self.pushed_rows += len(ids)
        return len(ids)

    def flush(self, projector) -> int:
        """`collect` then `push` (for callers that hold no lock, e.g. a CLI at exit)."""
        job = self.collect(projector)
        return 0 if job is None else self.push(job)

    def close(self) -> None:
        """Release the pushing side (after the last flush); pushes fail from then on."""
        if self._close is not None:
            self._close()

    def save(self, directory: Path) -> None:
        with self._lock:
            pending = {**self._inflight, **self._dirty}
        (directory / _FILE).write_text(json.dumps(sorted(pending.items())), "utf-8")

    def load(self, directory: Path) -> None:
        path = directory / _FILE
        if path.exists():
            with self._lock:
                self._dirty = {int(u): int(o) for u, o in json.loads(path.read_text("utf-8"))}
                self._inflight = {}

    def reset(self) -> None:
        """Forget pending users: a reload from the checkpoint brings back its own pending set,
        and re-projecting the events after it marks their users again."""
        with self._lock:
            self._dirty, self._inflight = {}, {}

    def stats(self) -> dict[str, int]:
        return {"pending_users": self.pending, "pushed_rows": self.pushed_rows}


def writes_waiting(projector) -> bool:
    """Whether a `DeferredWrites` of the projector holds users changed since its last
    `collect` (a hint: read without its lock)."""
    return any(c.waiting for c in projector.contributors if isinstance(c, DeferredWrites))
