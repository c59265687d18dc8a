"""A readers-writer lock: many profile reads at once, projection alone.

Writer-preferring, so a stream of reads cannot starve ingestion: once a writer waits, new
readers queue behind it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["LockBusy", "ReadWriteLock"]


class LockBusy(Exception):
    """A writer holds or waits for the lock, and the reader asked not to wait."""


class ReadWriteLock:
    """Shared (`read`) and exclusive (`write`) sections over one piece of state.

    >>> lock = ReadWriteLock()
    >>> with lock.read(), lock.read():
    ...     lock.readers
    2
    >>> with lock.write():
    ...     lock.writing
    True
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self.readers = 0
        self.writing = False
        self._writers_waiting = 0

    @contextmanager
    def read(self, wait: bool = True) -> Iterator[None]:
        """A shared section; with ``wait=False``, `LockBusy` at once when a writer holds or
        waits for the lock (for a caller that must not block, e.g. an event loop).

        >>> lock = ReadWriteLock()
        >>> with lock.write(), lock.read(wait=False):  # doctest: +IGNORE_EXCEPTION_DETAIL
        ...     pass
        Traceback (most recent call last):
        LockBusy
        """
        with self._cond:
            if not wait and (self.writing or self._writers_waiting):
                raise LockBusy
            while self.writing or self._writers_waiting:
                self._cond.wait()
            self.readers += 1
        try:
            yield
        finally:
            with self._cond:
                self.readers -= 1
                if self.readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self.writing or self.readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self.writing = True
        try:
            yield
        finally:
            with self._cond:
                self.writing = False
                self._cond.notify_all()
