"""The feature catalogue: the one list that Feast, parquet and the API schemas are built from.

Every feature has a name, a dtype, a unit, a description, the Feast feature view (theme) it
belongs to, and a ``kind`` that says how its served value at time T follows from the stored
value (the value a snapshot row or an online row holds):

- ``stored``: served as stored (changes only when an event of the user is applied).
- ``decay``: the stored value is the decayed sum at the user's ``last_event_ts``; the served
  value at T is ``stored * 2 ** (-(T - last_event_ts) / half_life)``.  The four half-lives
  divide ``DECAY_BASE_US`` (5040 h, their least common multiple), so one exponential
  ``g = exp(-dt * ln 2 / 5040 h)`` serves all four as integer powers ``g ** k`` by a fixed
  chain of multiplications (``decay_factors``; relative difference to ``2 ** (-dt / hl)``
  below 1e-12): one ``exp`` per event instead of four, the same code on every path.
- ``since``: the stored column is the timestamp feature named by ``source``; the served value
  is ``(T - source) / scale`` (seconds, or days for ``rfm_recency_days``), ``-1.0`` when the
  source timestamp is null (no such event yet).
- ``window``: a sliding-window sum computed from the user's bucket rings at T.  A window of
  ``n`` buckets of width ``w`` at T covers the whole buckets ``(b(T) - n, b(T)]`` with
  ``b(t) = t // w`` (epoch-aligned), i.e. the current partial bucket plus ``n - 1`` whole ones:
  an event leaves the window between ``window - w`` and ``window`` after it happened.  The
  stored column holds the window value at the row's own time; window values change when a
  non-empty bucket falls out, so offline snapshots add rows at those expiry times.

Sessions: a gap of more than 30 minutes of effective time between two events of a user starts
a new session (the events' own ``session_id`` is not used).  Orders: purchase events with
distinct effective timestamps.  Category interest: every event with a category adds
``INTEREST_WEIGHTS[type]`` to that category's affinity, decayed with a 7-day half-life; a user
keeps ``INTEREST_SLOTS`` categories, and a new category arriving when all slots are taken
replaces the one with the smallest affinity (the lowest slot on ties) and starts from its
own weight, so values are exact while a user has at most that many categories.  Top
categories rank by affinity, ties by slot (first come first).  ``distinct_items_viewed`` is
a HyperLogLog estimate (128 registers, ~9 % standard error; linear counting for small counts),
hashing item ids with blake2b so it does not depend on internal codes.

All times are int64 µs since the epoch (UTC), and every time is the *effective* event time:
``max(ts, newest effective ts already applied for the user)`` in log order (spec.md).
Zero denominators give ``0.0`` (JSON has no NaN).  Timestamps are int64 µs internally,
``NO_TS`` (int64 min) when null, and ISO 8601 UTC strings (or null) in a profile body.

>>> len(served_names()) == len(FEATURES)
True
>>> feature("spend_total").view, feature("seconds_since_last_purchase").source
('monetary', 'last_purchase_ts')
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from online.clock import DAY_US, HOUR_US, MINUTE_US, SECOND_US, iso

NO_TS = int(np.iinfo(np.int64).min)  # null timestamp sentinel (numpy's NaT has the same bits)

DTYPES = ("int64", "float64", "timestamp", "str", "str_list")
KINDS = ("stored", "decay", "since", "window")
VIEWS = ("activity", "monetary", "recency", "decay", "windows", "sessions", "funnel", "interest")

# (label, half-life): decayed event counts and spend; index order is fixed (kernels rely on it).
HALF_LIVES = (("1h", HOUR_US), ("1d", DAY_US), ("7d", 7 * DAY_US), ("30d", 30 * DAY_US))
# (label, bucket width, bucket count): sliding windows over bucket rings; fixed order too.
WINDOWS = (
    ("1h", 5 * MINUTE_US, 12),
    ("24h", HOUR_US, 24),
    ("7d", 6 * HOUR_US, 28),
    ("30d", DAY_US, 30),
)
DECAY_BASE_US = 5040 * HOUR_US  # every half-life divides it (kernels rely on the powers below)
assert [DECAY_BASE_US // hl for _, hl in HALF_LIVES] == [5040, 210, 30, 7]
SESSION_GAP_US = 30 * MINUTE_US  # a gap of more than this starts a new session
INTEREST_SLOTS = 8  # category affinity slots per user (exact up to this many categories)
INTEREST_TOP = 3  # top categories exposed
INTEREST_HALF_LIFE_US = 7 * DAY_US
# affinity added per event with a category, by event type (remove/refund add nothing)
INTEREST_WEIGHTS = (1.0, 2.0, 0.0, 3.0, 0.0)
RECENT_ITEMS = 20  # last-N item history length
HLL_P = 7  # HyperLogLog precision: 2**7 registers, standard error 1.04/sqrt(128) ~ 9.2%


@dataclass(frozen=True)
class Feature:
    """One feature: its schema, its theme and how its served value follows from storage."""

    name: str
    dtype: str
    unit: str
    view: str
    kind: str
    description: str
    half_life_us: int | None = None  # kind "decay"
    source: str | None = None  # kind "since": the timestamp feature it counts from
    scale_us: int | None = None  # kind "since": µs per output unit
    bucket_us: int | None = None  # kind "window"
    buckets: int | None = None  # kind "window"

    @property
    def half_life_index(self) -> int:
        """Position of the half-life in ``HALF_LIVES`` (the index into ``decay_factors``)."""
        if self.half_life_us is None:
            raise ValueError(f"feature {self.name!r}: half_life_us is set only for kind "
                             f"'decay', got kind {self.kind!r}")
        return [hl for _, hl in HALF_LIVES].index(self.half_life_us)

    @property
    def stored_column(self) -> str:
        """The stored column the served value is computed from: its own, or its ``source``."""
        if self.kind != "since":
            return self.name
        if self.source is None:
            raise ValueError(f"feature {self.name!r}: kind 'since' needs a source timestamp")
        return self.source


def _span(us: int) -> str:
    for unit, size in (("d", DAY_US), ("h", HOUR_US), ("min", MINUTE_US)):
        if us % size == 0:
            return f"{us // size} {unit}"
    return f"{us} µs"


def _f(name, dtype, unit, view, description, kind="stored", **extra) -> Feature:
    return Feature(name, dtype, unit, view, kind, description, **extra)


_TYPES = ("view", "add_to_cart", "remove_from_cart", "purchase", "refund")

FEATURES: tuple[Feature, ...] = (
    _f("event_count", "int64", "events", "activity", "all events of the user"),
    *(
        _f(f"{t}_count", "int64", "events", "activity", f"{t} events of the user")
        for t in _TYPES
    ),
    _f("order_count", "int64", "orders", "activity",
       "orders: purchase events with distinct effective timestamps"),
    _f("items_purchased", "int64", "items", "activity", "sum of quantity over purchases"),
    _f("rfm_frequency", "int64", "orders", "activity", "RFM frequency (= order_count)"),
    _f("spend_total", "float64", "currency", "monetary",
       "sum of price x quantity over purchases (refunds not subtracted)"),
    _f("refund_total", "float64", "currency", "monetary", "sum of price x quantity over refunds"),
    _f("refund_rate", "float64", "ratio", "monetary",
       "refund_total / spend_total (0.0 when spend_total is 0)"),
    _f("avg_order_value", "float64", "currency", "monetary",
       "spend_total / order_count (0.0 without orders)"),
    _f("rfm_monetary", "float64", "currency", "monetary", "RFM monetary (= spend_total)"),
    _f("first_event_ts", "timestamp", "UTC", "recency", "effective time of the first event"),
    _f("last_event_ts", "timestamp", "UTC", "recency", "newest effective event time"),
    _f("last_purchase_ts", "timestamp", "UTC", "recency",
       "effective time of the newest purchase (null without purchases)"),
    _f("seconds_since_first_event", "float64", "s", "recency", "T - first_event_ts",
       kind="since", source="first_event_ts", scale_us=SECOND_US),
    _f("seconds_since_last_event", "float64", "s", "recency", "T - last_event_ts",
       kind="since", source="last_event_ts", scale_us=SECOND_US),
    _f("seconds_since_last_purchase", "float64", "s", "recency",
       "T - last_purchase_ts (-1.0 without purchases)",
       kind="since", source="last_purchase_ts", scale_us=SECOND_US),
    _f("rfm_recency_days", "float64", "d", "recency",
       "RFM recency: days from last_purchase_ts to T (-1.0 without purchases)",
       kind="since", source="last_purchase_ts", scale_us=DAY_US),
    _f("purchase_interarrival_mean_s", "float64", "s", "recency",
       "mean time between consecutive orders (0.0 with fewer than 2 orders)"),
    *(
        _f(f"decayed_{what}_{label}", "float64", unit, "decay",
           f"exponentially decayed {desc} with half-life {label}, at T",
           kind="decay", half_life_us=hl)
        for what, unit, desc in (
            ("events", "events", "event count"),
            ("spend", "currency", "spend (price x quantity over purchases)"),
        )
        for label, hl in HALF_LIVES
    ),
    *(
        _f(f"{what}_{label}", dtype, unit, "windows",
           f"{desc} in the sliding {label} window ({n} buckets of {_span(w)})",
           kind="window", bucket_us=w, buckets=n)
        for what, dtype, unit, desc in (
            ("events", "int64", "events", "events"),
            ("spend", "float64", "currency", "spend"),
        )
        for label, w, n in WINDOWS
    ),
    _f("session_count", "int64", "sessions", "sessions",
       "sessions: a gap of more than 30 min of effective time starts a new one"),
    _f("session_events_mean", "float64", "events", "sessions", "event_count / session_count"),
    _f("last_session_events", "int64", "events", "sessions", "events in the latest session"),
    _f("view_to_cart_rate", "float64", "ratio", "funnel",
       "add_to_cart_count / view_count (0.0 without views)"),
    _f("cart_to_purchase_rate", "float64", "ratio", "funnel",
       "purchase_count / add_to_cart_count (0.0 without carts)"),
    _f("cart_abandonment_rate", "float64", "ratio", "funnel",
       "share of sessions with an add_to_cart but no purchase, among sessions with an "
       "add_to_cart (the latest session counts as it stands; 0.0 without carts)"),
    *(
        f
        for k in range(1, INTEREST_TOP + 1)
        for f in (
            _f(f"interest_top{k}", "str", "category", "interest",
               f"category with the {k}th highest 7d-decayed affinity (null when none)"),
            _f(f"interest_top{k}_weight", "float64", "affinity", "interest",
               f"7d-decayed affinity of interest_top{k} at T (0.0 when none)",
               kind="decay", half_life_us=INTEREST_HALF_LIFE_US),
        )
    ),
    _f("distinct_items_viewed", "int64", "items", "interest",
       "distinct items viewed, HyperLogLog estimate (128 registers, ~9% standard error)"),
    _f("recent_items", "str_list", "items", "interest",
       f"the last {RECENT_ITEMS} item ids of events with an item, newest first"),
)

_BY_NAME = {f.name: f for f in FEATURES}
FIXED_NAMES = (
    "event_count", "purchase_count", "spend_total", "refund_total",
    "last_event_ts", "last_purchase_ts",
)


def feature(name: str) -> Feature:
    """The catalogue entry of ``name`` (KeyError naming it when unknown)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown feature {name!r}") from None


def served_names() -> list[str]:
    """Names of all served features, in catalogue order (the profile's ``features`` keys)."""
    return [f.name for f in FEATURES]


def stored_features() -> list[Feature]:
    """Features that a snapshot row stores ("since" values are derived from timestamps)."""
    return [f for f in FEATURES if f.kind != "since"]


def stored_names() -> list[str]:
    """Column names of a snapshot row / online row, in catalogue order."""
    return [f.name for f in stored_features()]


def names_by_view(*, stored_only: bool = False) -> dict[str, list[str]]:
    """Feature names per Feast feature view (theme), in catalogue order."""
    out: dict[str, list[str]] = {v: [] for v in VIEWS}
    for f in FEATURES:
        if not (stored_only and f.kind == "since"):
            out[f.view].append(f.name)
    return out


def arrow_type(dtype: str):
    """The pyarrow type of a catalogue dtype (timestamps: µs, UTC)."""
    import pyarrow as pa

    return {
        "int64": pa.int64(),
        "float64": pa.float64(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "str": pa.string(),
        "str_list": pa.list_(pa.string()),
    }[dtype]


def arrow_schema(*, stored_only: bool = True):
    """pyarrow schema of the feature columns (stored ones by default), catalogue order."""
    import pyarrow as pa

    feats = stored_features() if stored_only else list(FEATURES)
    return pa.schema([pa.field(f.name, arrow_type(f.dtype)) for f in feats])


def iso_utc(ts_us: int) -> str | None:
    """ISO 8601 UTC text of a µs timestamp, None for ``NO_TS``.

    >>> iso_utc(1_306_886_400_000_000)
    '2011-06-01T00:00:00+00:00'
    """
    return None if ts_us == NO_TS else iso(ts_us)


def json_value(name: str, value):
    """A served value as it appears in a profile body (plain Python, ISO timestamps)."""
    dtype = _BY_NAME[name].dtype
    if dtype == "timestamp":
        return iso_utc(int(value))
    if dtype == "int64":
        return int(value)
    if dtype == "float64":
        return float(value)
    if dtype == "str_list":
        return list(value)
    return value
