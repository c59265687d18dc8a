"""Loader output: one record per input line, and a tally that accounts for every line."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["Record", "Tally"]


class Record(NamedTuple):
    """One input line: an event payload to append, or the reason the line yields none.

    ``line`` is the 1-based physical line number in the input (a CSV header is line 1).
    Exactly one of ``payload`` and ``skip`` is set. ``skip`` is a short reason code
    (``no_customer``, ``blank``, ``invalid_json``, ``not_an_object``, ``bad_row``) and
    ``message`` the human-readable form, e.g. ``"line 7: invalid JSON: Expecting value"``.
    A payload is *not* validated here: schema breaks are left in so that the event log
    rejects and quarantines them with its own rule. ``raw`` is the line's text when it holds
    no event object (``invalid_json``, ``not_an_object``, ``bad_row``), so that it can be
    quarantined as read.
    """

    line: int
    payload: dict[str, Any] | None
    skip: str | None = None
    message: str | None = None
    raw: str | None = None


@dataclass
class Tally:
    """Counts of a loader's output, so that payloads + skipped lines == input lines.

    >>> t = Tally.of([Record(2, {"type": "purchase"}), Record(3, None, "no_customer", "")])
    >>> t.as_dict()
    {'lines': 2, 'payloads': 1, 'skipped': {'no_customer': 1}, 'types': {'purchase': 1}}
    >>> t.balanced
    True
    """

    lines: int = 0
    payloads: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    types: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of(cls, records: Iterable[Record]) -> Tally:
        """Consume ``records`` and return their tally."""
        tally = cls()
        for _ in tally.observe(records):
            pass
        return tally

    def add(self, record: Record) -> None:
        """Count one record."""
        self.lines += 1
        if record.payload is None:
            self.skipped[record.skip or "unknown"] += 1
        else:
            self.payloads += 1
            # str(): a malformed payload may carry any JSON value as its type
            self.types[str(record.payload.get("type"))] += 1

    def observe(self, records: Iterable[Record]) -> Iterator[Record]:
        """Pass ``records`` through unchanged while counting them (for streaming consumers)."""
        for record in records:
            self.add(record)
            yield record

    @property
    def n_skipped(self) -> int:
        """Lines that produced no payload."""
        return sum(self.skipped.values())

    @property
    def balanced(self) -> bool:
        """True when every line is accounted for as a payload or a skip."""
        return self.lines == self.payloads + self.n_skipped

    def as_dict(self) -> dict[str, Any]:
        """Plain-JSON form for ``--json`` reports."""
        return {
            "lines": self.lines,
            "payloads": self.payloads,
            "skipped": dict(sorted(self.skipped.items())),
            "types": dict(sorted(self.types.items())),
        }
