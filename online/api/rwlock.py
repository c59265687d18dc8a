"""A readers-writer lock: many profile reads at once, projection alone.

Writer-preferring, so a stream of reads cannot starve ingestion: once a writer waits, new
readers queue behind it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["ReadWriteLock"]


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
    def read(self) -> Iterator[None]:
        with self._cond:
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
