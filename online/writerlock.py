"""One projecting writer per data dir: an OS lock file held while a process owns the state.

The projector state (``<data_dir>/state``: checkpoints and ``CURRENT``) has one writer at a
time: the server for as long as it runs, or a CLI command (``ingest``, ``erase``, the
catch-up of ``profile``) for its duration. The lock is ``fcntl.flock`` on
``<data_dir>/state/writer.lock``, so the OS drops it when the holder exits, crashed or not:
there is never a stale lock to clean up. The file holds the holder's pid and command line,
which the second writer's error names.

Readers never take it: the event log is the source of truth and checkpoints are replaced
atomically, so ``profile``, ``as-of`` and ``consistency`` work while a writer holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from pathlib import Path
from types import TracebackType

__all__ = ["WriterBusy", "WriterLock", "LOCK_NAME"]

LOCK_NAME = "writer.lock"


class WriterBusy(RuntimeError):
    """Another process holds the data dir's writer lock."""

    def __init__(self, path: Path, holder: dict) -> None:
        self.path = path
        self.holder = holder
        pid = holder.get("pid", "?")
        what = holder.get("command") or "unknown command"
        super().__init__(
            f"another process (pid {pid}: {what}) is the writer of {path.parent.parent}; "
            "one process projects a data dir at a time: stop it, or send events to the "
            "server (POST /v1/events, or `portrait ingest --no-project`)")


class WriterLock:
    """The writer lock of a state dir; ``acquire()`` never waits (a second writer fails).

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> with WriterLock(d) as lock:
    ...     lock.held
    True
    """

    def __init__(self, state_dir: str | Path, command: str | None = None) -> None:
        self.path = Path(state_dir) / LOCK_NAME
        # a name, never arguments: those may hold a raw user id (``portrait erase ID``)
        self.command = command or Path(sys.argv[0]).name
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> WriterLock:
        """Take the lock or raise `WriterBusy` naming the holder (pid and command)."""
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WriterBusy(self.path, read_holder(self.path)) from None
        except BaseException:
            os.close(fd)
            raise
        # the holder's record: rewritten in place (the lock is on the inode, keep it)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": self.command}).encode(), 0)
        self._fd = fd
        return self

    def try_acquire(self) -> bool:
        """Take the lock if it is free; False (nothing raised) when another process has it."""
        try:
            self.acquire()
        except WriterBusy:
            return False
        return True

    def release(self) -> None:
        """Give the lock up (idempotent); the file stays, its record is stale until reused."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def read_holder(path: Path) -> dict:
    """The pid and command recorded by the lock's holder (empty when unreadable)."""
    try:
        return json.loads(Path(path).read_text("utf-8") or "{}")
    except (OSError, ValueError):
        return {}
