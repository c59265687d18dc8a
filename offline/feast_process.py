"""The server's online-store writes run in a child process, off the server's interpreter lock.

A flush writes every changed user's row through Feast's ``online_write_batch``: for Feast's
sqlite store one upsert per feature value, ~50 per user, driven by Python code in Feast that
holds the interpreter lock for most of its time (``offline.feast_sqlite``, the store we run,
batches them: ~2.7x less time, still mostly Python). In the server that time is taken from
ingestion and profile reads (one lock for every thread), though the machine has a core to
spare. `OnlineWriterProcess` runs `OnlineWriter.push_stored` in one worker process of a
``ProcessPoolExecutor`` (spawned, not forked: the server has threads), so the server only
pickles the flush's columns (~1 ms for 2,000 users) and waits with the lock released.

``push_stored`` has `OnlineWriter.push_stored`'s signature and blocks until the child has
written, so `DeferredWrites` keeps its accounting (pending users, retry after a failure) and
an erasure that flushes first still finds nothing in flight. The child imports Feast and
opens the store when the writer is made (in the background: the server starts meanwhile).
If the child dies, the flush fails (its users stay pending) and the next one starts a new
child. ``close`` stops the child; the server calls it when it shuts down.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from offline.feast_online import OnlineWriter, PushResult
from online.settings import Settings

__all__ = ["OnlineWriterProcess"]

_writer: OnlineWriter | None = None  # the child's writer
_PARENT_POLL_S = 0.5


def _open(settings: Settings) -> None:
    global _writer
    # Ctrl-C (the terminal's whole process group) or a SIGTERM to the group must not kill the
    # child before the server's last flush: it ends when the server stops it, or soon after
    # the server is gone (killed: the child holds both ends of its queue, so it would wait on
    # it forever)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(os.getppid(),), daemon=True).start()
    _writer = OnlineWriter(settings)


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL_S)
    os._exit(0)


def _warm() -> bool:
    assert _writer is not None
    _ = _writer.store  # import Feast, read the registry
    return True


def _push(user_ids: list[str], stored: dict[str, np.ndarray], offsets: np.ndarray
          ) -> PushResult:
    assert _writer is not None
    return _writer.push_stored(user_ids, stored, offsets)


class OnlineWriterProcess:
    """`OnlineWriter.push_stored` in a child process (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: ProcessPoolExecutor | None = None
        self._start()

    def _start(self) -> None:
        self._pool = ProcessPoolExecutor(max_workers=1,
                                         mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_open, initargs=(self.settings,))
        self._pool.submit(_warm)  # Feast's import (~3 s) while the server starts

    def push_stored(self, user_ids: Sequence[str], stored: Mapping[str, np.ndarray],
                    offsets: np.ndarray) -> PushResult:
        """Write the rows in the child (`OnlineWriter.push_stored`); returns its result."""
        if self._pool is None:
            raise RuntimeError("the online writer process is closed")
        try:
            return self._pool.submit(_push, list(user_ids), dict(stored),
                                     np.asarray(offsets, np.int64)).result()
        except BrokenProcessPool:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._start()  # the next flush writes through a new child
            raise

    def close(self) -> None:
        """Stop the child after the write in progress (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
