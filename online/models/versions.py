"""The model of any past time: a bounded store of the scoring models, one per event-time day.

The learner changes with every resolved label, so "the model at T" needs a copy kept from
then. `ModelVersions` keeps the scoring part of a `ModelSet` (the propensity's River model,
the segments; no pending questions) each time event time enters a new period (a UTC day by
default), valid from that period's start, plus one at each reset or replacement. Profiles are
scored by the version in force at their time: a latest profile by the one of the current
period, an as-of profile by the one of T's period. Both depend only on events before that
period's start, so an as-of profile recomputed later for the same T is the same body, scores
included, and nothing after T leaks into it.

At most `max_versions` are kept (the oldest go first; an as-of time before the oldest kept
version is scored by that oldest one, and says so through its ``valid_from``).
"""

from __future__ import annotations

import bisect
import pickle

__all__ = ["ModelVersions"]

_EARLIEST = -(2**63)


class ModelVersions:
    """Frozen scoring models by the event time they became valid from.

    >>> versions = ModelVersions(max_versions=2)
    >>> for day in (0, 1, 2):
    ...     versions.save(f"model of day {day}", valid_from_us=day * 100, offset=day)
    >>> ModelVersions.load(versions.at(150)), versions.at(10**9)["valid_from_us"], len(versions)
    ('model of day 1', 200, 2)
    """

    def __init__(self, max_versions: int = 400) -> None:
        if max_versions < 1:
            raise ValueError(f"max_versions must be >= 1, got {max_versions}")
        self.max_versions = max_versions
        self._from: list[int] = []
        self._entries: list[dict] = []
        # the newest event time its owner has seen (where the next period starts from)
        self.watermark_us = _EARLIEST

    def __len__(self) -> int:
        return len(self._from)

    def save(self, model, valid_from_us: int, offset: int) -> None:
        """Keep `model` (picklable; stored as bytes, so later learning cannot change it)."""
        entry = {"valid_from_us": int(valid_from_us), "offset": int(offset),
                 "blob": pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)}
        if self._from and valid_from_us <= self._from[-1]:
            # a replacement within the same instant: the newest one is in force
            valid_from_us = self._from[-1]
            entry["valid_from_us"] = valid_from_us
            self._entries[-1] = entry
        else:
            self._from.append(int(valid_from_us))
            self._entries.append(entry)
        if len(self._from) > self.max_versions:
            del self._from[0], self._entries[0]

    def at(self, t_us: int) -> dict | None:
        """The version in force at `t_us`: {"valid_from_us", "offset", "blob"}; None if none.

        `load` turns the entry into the model (callers cache it by ``valid_from_us``).
        """
        if not self._from:
            return None
        return self._entries[max(bisect.bisect_right(self._from, int(t_us)) - 1, 0)]

    @staticmethod
    def load(entry: dict):
        """The model of a version entry (a fresh copy)."""
        return pickle.loads(entry["blob"])

    def stats(self) -> dict:
        return {"versions": len(self._from),
                "oldest_from_us": self._from[0] if self._from else None}
