"""Event time: conversions between aware datetimes, ISO 8601 text and int64 µs since the epoch.

Inside portrait every time is an int64 count of microseconds since 1970-01-01 UTC; these are
the only conversions to and from the outside world.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)
US_PER_SECOND = 1_000_000


def to_us(when: datetime) -> int:
    """Microseconds since the epoch of an aware datetime.

    >>> to_us(datetime(2011, 6, 1, tzinfo=UTC))
    1306886400000000
    """
    if when.tzinfo is None:
        raise ValueError(f"a time needs a zone, got naive {when.isoformat()}")
    return (when - EPOCH) // ONE_US


def from_us(us: int) -> datetime:
    """The aware UTC datetime of a µs timestamp."""
    return EPOCH + timedelta(microseconds=int(us))


def iso(us: int) -> str:
    """ISO 8601 text (UTC, ``+00:00``) of a µs timestamp.

    >>> iso(1306886400000000)
    '2011-06-01T00:00:00+00:00'
    """
    return from_us(us).isoformat()


def parse_time(text: str) -> int:
    """Parse ISO 8601 text with a zone (or a bare date, meaning its UTC midnight) into µs.

    >>> parse_time("2011-06-01")
    1306886400000000
    >>> parse_time("2011-06-01T01:00:00+01:00")
    1306886400000000
    """
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text[:40]!r}") from None
    if when.tzinfo is None:
        if len(text) == 10:
            when = when.replace(tzinfo=UTC)
        else:
            raise ValueError(f"a time needs a zone (e.g. {text[:40]}+00:00): {text[:40]!r}")
    return to_us(when)


_UNITS_US = {"d": 86_400 * US_PER_SECOND, "h": 3_600 * US_PER_SECOND, "m": 60 * US_PER_SECOND,
             "s": US_PER_SECOND}


def parse_duration(text: str) -> int:
    """A duration such as ``7d``, ``12h``, ``30m`` or ``45s`` in µs.

    >>> parse_duration("7d") == 7 * 86_400 * US_PER_SECOND
    True
    """
    text = text.strip().lower()
    unit = text[-1:]
    if unit not in _UNITS_US or not text[:-1].isdigit() or int(text[:-1]) <= 0:
        raise ValueError(f"not a duration like 7d, 12h, 30m or 45s: {text[:20]!r}")
    return int(text[:-1]) * _UNITS_US[unit]
