"""Event schema (version 1): what a shop may send, validated once at the edge of the log.

``Event`` is one validated event; ``EventBatch`` the same events in numpy columns, the form
the log's reads return and the kernels consume.

Validation is pydantic-core doing the work: field types are strict where lax coercion would
hide bad data (``quantity="3.5"``, ``quantity=True``, ``user_id=123``), and only the rules
pydantic cannot express run in Python, in two hops per event: ``ts`` parsing
(ISO 8601 calendar date and time with a zone and nothing else, stdlib parser, normalised to
UTC and within 0001-01-01..9999-12-31 UTC; digits past the microsecond are truncated) and one
model validator for the future limit, the price of purchases/refunds, the line amount
(price x quantity <= ``MAX_LINE_AMOUNT``, so no money sum can overflow) and control
characters in text fields (none of U+0000-U+001F, U+007F; lone surrogates are refused as
invalid Unicode). Anything else that fails on a payload is still one rejected event
(``unprocessable``), never an exception out of the batch.

>>> e = validate_event({"event_id": "e1", "user_id": "u1", "type": "purchase",
...                     "ts": "2011-06-01T02:00:00+02:00", "price": 3, "quantity": 2})
>>> e.ts.isoformat(), e.ts_us, e.event_type, e.price
('2011-06-01T00:00:00+00:00', 1306886400000000, <EventType.PURCHASE: 3>, 3.0)
>>> try:
...     validate_event({"event_id": "e2", "user_id": "u1", "type": "refund",
...                     "ts": "2011-06-01T00:00:00Z"})
... except InvalidEvent as exc:
...     print(exc)
price: is required for purchase and refund [rule=required_for_type, value=None]
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from functools import cached_property
from operator import itemgetter
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from online.clock import ISO_DATETIME, MAX_TIME_CHARS, MINUTE_US, RANGE_TEXT, to_us

__all__ = [
    "BATCH_COLUMNS",
    "EVENT_FIELDS",
    "MAX_FUTURE_US",
    "MAX_LINE_AMOUNT",
    "N_EVENT_TYPES",
    "SCHEMA_VERSION",
    "TYPE_CODES",
    "WIRE_NAMES",
    "Event",
    "EventBatch",
    "EventType",
    "InvalidEvent",
    "validate_event",
]

SCHEMA_VERSION = 1
MAX_FUTURE_US = 5 * MINUTE_US  # events stamped more than 5 minutes ahead are rejected
#: The most one event may move a money total: price x quantity above it is rejected. With it a
#: sum over n events stays below n x 1e12, finite for any log that can exist (float64 overflows
#: past 1.8e308), so no spend or refund total can become inf. A trillion in the shop's currency
#: is far above any real order line (Online Retail's largest is 168,469.60).
MAX_LINE_AMOUNT = 1e12


class EventType(IntEnum):
    """Event type codes as stored in the log and the kernels' int8 arrays."""

    VIEW = 0
    ADD_TO_CART = 1
    REMOVE_FROM_CART = 2
    PURCHASE = 3
    REFUND = 4

    @property
    def wire_name(self) -> str:
        """The name used on the wire (JSON), e.g. ``"add_to_cart"``."""
        return self.name.lower()

    @classmethod
    def from_name(cls, name: str) -> EventType:
        """The type for a wire name; ``ValueError`` names the accepted ones."""
        try:
            return _TYPE_BY_NAME[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown event type {name!r}; expected one of {WIRE_NAMES}") from None


N_EVENT_TYPES = len(EventType)
_TYPE_BY_NAME = {t.wire_name: t for t in EventType}
TYPE_CODES = {name: int(t) for name, t in _TYPE_BY_NAME.items()}  # wire name -> int code
WIRE_NAMES = tuple(_TYPE_BY_NAME)
WireType = Literal["view", "add_to_cart", "remove_from_cart", "purchase", "refund"]
_PRICED = frozenset({"purchase", "refund"})


class InvalidEvent(Exception):
    """A payload broke a schema rule: names the field, the rule and (truncated) the value."""

    def __init__(self, field: str, rule: str, value: Any, message: str | None = None) -> None:
        self.field = field
        self.rule = rule
        self.value = _short(value)
        self.message = message or rule
        super().__init__(f"{field}: {self.message} [rule={rule}, value={self.value}]")


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING = _Missing()


def _short(value: Any, limit: int = 80) -> str:
    """A repr of ``value`` cut to ``limit`` chars, so a 10 MB payload never lands in a log."""
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__ must not mask the validation error
        text = f"<unrepresentable {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_ts(value: Any) -> datetime:
    # The stdlib C parser, not pydantic's: lax pydantic would read 1306886400 as Unix seconds,
    # and its Rust TzInfo makes every later offset lookup ~5x slower than datetime.timezone.
    if isinstance(value, str):
        if len(value) > MAX_TIME_CHARS or ISO_DATETIME.fullmatch(value) is None:
            raise _rule_error("ts", "iso8601")
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise _rule_error("ts", "iso8601") from None
    elif isinstance(value, datetime):
        dt = value
    else:
        raise _rule_error("ts", "iso8601")
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise _rule_error("ts", "timezone_required")
    try:
        # 0001-01-01T00:00:00+14:00 is a valid text whose UTC time is before year 1
        return dt.astimezone(UTC)
    except OverflowError:
        raise _rule_error("ts", "ts_range") from None


_Id = Annotated[str, Field(strict=True, min_length=1, max_length=128)]
_Label = Annotated[str, Field(strict=True, max_length=128)] | None
# strict float still takes an int-valued number (JSON ``3``) but never a bool or a string.
_Price = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)] | None


class Event(BaseModel):
    """One behaviour event (schema version 1), immutable once validated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: _Id
    user_id: _Id
    type: WireType
    ts: Annotated[AwareDatetime, BeforeValidator(_parse_ts)]
    item_id: _Label = None
    category: _Label = None
    session_id: _Label = None
    price: _Price = None
    quantity: Annotated[int, Field(strict=True, ge=1, le=100_000)] = 1

    @model_validator(mode="after")
    def _rules_across_fields(self, info: ValidationInfo) -> Event:
        state = self.__dict__
        ts_us = to_us(state["ts"])
        ctx = info.context
        now_us = ctx.get("now_us") if ctx else None
        if now_us is None:
            now_us = time.time_ns() // 1000
        if ts_us > now_us + MAX_FUTURE_US:
            raise _rule_error("ts", "not_in_future")
        price = self.price
        if price is None:
            if self.type in _PRICED:
                raise _rule_error("price", "required_for_type")
        elif price * self.quantity > MAX_LINE_AMOUNT:
            raise _rule_error("price", "max_amount")
        text = f"{self.event_id}{self.user_id}{self.item_id}{self.category}{self.session_id}"
        # isprintable() is False for every control character, and cheaper than the regex
        if not text.isprintable() and _CONTROL.search(text) is not None:
            raise _rule_error(_control_field(state), "no_control_chars")
        state["ts_us"] = ts_us  # frozen model: prime the cached_property below
        return self

    @property
    def event_type(self) -> EventType:
        """The type as its ``EventType`` code."""
        return _TYPE_BY_NAME[self.type]

    @cached_property
    def ts_us(self) -> int:
        """Event time in integer microseconds since the Unix epoch (UTC).

        Filled in by validation; computed here only for ``model_construct``-ed events.
        """
        return to_us(self.ts)

    def to_record(self) -> tuple:
        """The log row, in ``EVENT_FIELDS`` order (type as its int code, ts in µs)."""
        return (
            self.event_id,
            self.user_id,
            TYPE_CODES[self.type],
            self.ts_us,
            self.item_id,
            self.category,
            self.session_id,
            self.price,
            self.quantity,
        )


EVENT_FIELDS = (
    "event_id", "user_id", "type", "ts", "item_id", "category", "session_id", "price", "quantity",
)  # fmt: skip

# pydantic error types -> our rule vocabulary (stable names clients and the quarantine can use)
_RULES = {
    "missing": "required",
    "required_for_type": "required_for_type",  # ours; must not fall into the "*_type" bucket
    "extra_forbidden": "unknown_field",
    "string_too_short": "min_length",
    "string_too_long": "max_length",
    "greater_than_equal": "min",
    "less_than_equal": "max",
    "finite_number": "finite",
    "literal_error": "one_of",
    "string_unicode": "unicode",
}
_MESSAGES = {
    "required": "is required",
    "not_in_future": "is more than 5 minutes in the future",
    "required_for_type": "is required for purchase and refund",
    "unknown_field": "is not a field of the event schema",
    "one_of": f"must be one of {', '.join(WIRE_NAMES)}",
    "timezone_required": "must carry a time zone (naive times are rejected)",
    "iso8601": "must be an ISO 8601 date and time with a zone, e.g. 2024-01-01T10:00:00+01:00",
    "ts_range": f"must lie {RANGE_TEXT}",
    "max_amount": f"times quantity (the line amount) must be at most {MAX_LINE_AMOUNT:.0e}",
    "no_control_chars": "must not contain control characters (U+0000-U+001F, U+007F)",
    "unicode": "must be valid Unicode text (UTF-8; no lone surrogates)",
    "unprocessable": "could not be processed as an event",
}
_TEXT_FIELDS = ("event_id", "user_id", "item_id", "category", "session_id")
# C0 controls and DEL: a NUL or an escape sequence in an id ends up in logs, terminals and
# other systems' keys; no real id, SKU or category needs one. (Lone surrogates are pydantic's
# "string_unicode" error, caught before this.)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _control_field(state: Mapping) -> str:
    """The first text field holding a control character."""
    for name in _TEXT_FIELDS:
        value = state[name]
        if value is not None and _CONTROL.search(value) is not None:
            return name
    return "<event>"


def _rule_error(field: str, rule: str) -> PydanticCustomError:
    return PydanticCustomError(rule, _MESSAGES[rule], {"field": field})


def _from_validation_error(exc: ValidationError) -> InvalidEvent:
    errors = exc.errors(include_url=False)
    err = errors[0]
    kind = err["type"]
    loc = err.get("loc") or ()
    field = str(loc[0]) if loc else (err.get("ctx") or {}).get("field", "<event>")
    rule = _RULES.get(kind) or ("type" if kind.endswith("_type") else kind)
    message = _MESSAGES.get(rule) or err["msg"][:1].lower() + err["msg"][1:]
    if rule == "type":
        message += f" (got {type(err['input']).__name__})"
    if len(errors) > 1:
        message += f" (+{len(errors) - 1} more)"
    value = err["input"]
    if kind == "missing":
        value = MISSING
    elif not loc and isinstance(value, Mapping):  # a cross-field rule: show the field's value
        value = value.get(field)
    return InvalidEvent(field, rule, value, message)


def validate_event(payload: Mapping, *, now_us: int | None = None) -> Event:
    """Validate one wire payload into an ``Event``; raise ``InvalidEvent`` on the first bad field.

    ``now_us`` pins "now" for the future-time rule (tests, replays of old files); the wall
    clock is used when it is None.
    """
    if not isinstance(payload, Mapping):
        raise InvalidEvent("<event>", "type", payload, "must be a JSON object")
    try:
        return Event.model_validate(payload, context=None if now_us is None else {"now_us": now_us})
    except ValidationError as exc:
        raise _from_validation_error(exc) from None
    except (ArithmeticError, RecursionError, UnicodeError, ValueError) as exc:
        # A payload the rules above did not foresee must still be one rejected event, never
        # an error that fails the batch it came in (the promise of per-event outcomes).
        raise InvalidEvent("<event>", "unprocessable", MISSING,
                           f"{_MESSAGES['unprocessable']} ({type(exc).__name__})") from None


@dataclass(frozen=True, eq=False)
class EventBatch:
    """Events in columns (numpy arrays of equal length), the form the kernels consume.

    >>> b = EventBatch.empty()
    >>> len(b), b.ts.dtype, b.type.dtype, b.user_id.dtype
    (0, dtype('int64'), dtype('int8'), dtype('O'))
    """

    offset: np.ndarray  # int64 log offsets
    ts: np.ndarray  # int64 µs UTC
    type: np.ndarray  # int8 EventType codes
    user_id: np.ndarray  # object str (as stored, i.e. pseudonymized)
    item_id: np.ndarray  # object str | None
    category: np.ndarray  # object str | None
    session_id: np.ndarray  # object str | None
    price: np.ndarray  # float64, NaN when absent
    quantity: np.ndarray  # int64
    event_id: np.ndarray  # object str

    def __len__(self) -> int:
        return len(self.offset)

    @classmethod
    def from_rows(cls, rows: list[tuple], positions: tuple[int, ...] | None = None,
                  ) -> EventBatch:
        """A batch from row tuples in ``BATCH_COLUMNS`` order (as the log's SELECT returns),
        or with each of those columns at its index of `positions`."""
        if not rows:
            return cls.empty()
        n = len(rows)
        arrays = {}
        at = range(len(_BATCH_DTYPES)) if positions is None else positions
        # one C-level pass per column; zip(*rows) would build an iterator per row
        for k, (name, dtype) in zip(at, _BATCH_DTYPES.items(), strict=True):
            values = map(itemgetter(k), rows)
            if name == "price":
                arrays[name] = np.array(list(values), dtype=np.float64)  # None -> NaN
            else:
                arrays[name] = np.fromiter(values, dtype=dtype, count=n)
        return cls(**arrays)

    @classmethod
    def empty(cls) -> EventBatch:
        """A batch of no events, with the right dtypes."""
        return cls(**{name: np.empty(0, dtype=dtype) for name, dtype in _BATCH_DTYPES.items()})

    @classmethod
    def concat(cls, batches: Iterable[EventBatch]) -> EventBatch:
        """The batches one after the other (offset order is the caller's business)."""
        batches = [b for b in batches if len(b)]
        if not batches:
            return cls.empty()
        if len(batches) == 1:
            return batches[0]
        return cls(**{name: np.concatenate([getattr(b, name) for b in batches])
                      for name in BATCH_COLUMNS})  # fmt: skip

    def take(self, idx: np.ndarray | slice | list[int]) -> EventBatch:
        """The events at ``idx`` (integer indices, a boolean mask or a slice)."""
        return type(self)(**{name: getattr(self, name)[idx] for name in BATCH_COLUMNS})

    def to_dict(self) -> dict[str, np.ndarray]:
        """Column name -> array (e.g. for ``pandas.DataFrame``)."""
        return {name: getattr(self, name) for name in BATCH_COLUMNS}


_BATCH_DTYPES: dict[str, Any] = {
    "offset": np.int64, "ts": np.int64, "type": np.int8, "user_id": object, "item_id": object,
    "category": object, "session_id": object, "price": np.float64, "quantity": np.int64,
    "event_id": object,
}  # fmt: skip
BATCH_COLUMNS = tuple(_BATCH_DTYPES)
