"""Event time: conversions between aware datetimes, ISO 8601 text and int64 µs since the epoch.

Inside portrait every time is an int64 count of microseconds since 1970-01-01 UTC; these are
the only conversions to and from the outside world.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)
#: Durations in µs: the one place they are defined (the catalogue re-exports them).
SECOND_US = 1_000_000
MINUTE_US = 60 * SECOND_US
HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US
US_PER_SECOND = SECOND_US
#: The representable range (UTC): a time outside it has no ISO text, so it is refused at the edge.
MIN_US = (datetime.min.replace(tzinfo=UTC) - EPOCH) // ONE_US
MAX_US = (datetime.max.replace(tzinfo=UTC) - EPOCH) // ONE_US
RANGE_TEXT = "between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z (UTC)"

#: ISO 8601 calendar date and time (the zone optional here: its absence has its own error),
#: extended (2024-01-01T10:00:00+01:00) or basic (20240101T100000Z), "T" or one space between.
#: Checked before the stdlib parser, which stops at a NUL (it accepts
#: "2024-01-01T00:00:00Z\x00garbage"); week and ordinal dates are not accepted.
#: re.ASCII: \d must not match other scripts' digits.
ISO_DATETIME = re.compile(
    r"\d{4}(?:-\d{2}-\d{2}|\d{4})[T ]"
    r"\d{2}(?::?\d{2}(?::?\d{2}(?:[.,]\d{1,12})?)?)?"
    r"(?:Z|[+-]\d{2}(?::?\d{2}(?::?\d{2}(?:\.\d{1,6})?)?)?)?",
    re.ASCII,
)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
MAX_TIME_CHARS = 64


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
    >>> parse_time("0001-01-01T00:00:00+14:00")
    Traceback (most recent call last):
    ...
    ValueError: must lie between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z (UTC), \
got '0001-01-01T00:00:00+14:00'
    """
    shown = repr(text[:40])
    date_only = _ISO_DATE.fullmatch(text) is not None
    if len(text) > MAX_TIME_CHARS or not (date_only or ISO_DATETIME.fullmatch(text)):
        raise ValueError(f"not an ISO 8601 time with a zone (or a date): {shown}")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {shown}") from None
    if when.tzinfo is None:
        if not date_only:
            raise ValueError(f"a time needs a zone (e.g. {text[:40]}+00:00): {shown}")
        when = when.replace(tzinfo=UTC)
    us = to_us(when)
    if not MIN_US <= us <= MAX_US:
        raise ValueError(f"must lie {RANGE_TEXT}, got {shown}")
    return us


_UNITS_US = {"d": DAY_US, "h": HOUR_US, "m": MINUTE_US, "s": SECOND_US}


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
