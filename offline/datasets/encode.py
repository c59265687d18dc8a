"""Event columns in wire form: payload dicts and JSON Lines, vectorised per chunk.

Columns are a dict of equal-length numpy arrays named like the event fields: ``event_id``,
``user_id``, ``item_id``, ``category``, ``session_id`` (object arrays of str or None),
``type`` (int8 codes), ``ts`` (int64 µs since the epoch, UTC), ``price`` (float64, NaN when
absent) and ``quantity`` (int64) -- the layout of the event log's ``EventBatch``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pandas as pd

from online.clock import DAY_US
from online.events import EVENT_FIELDS, EventType

__all__ = ["TYPE_NAMES", "format_ts", "jsonl_from_columns", "payloads_from_columns"]

TYPE_NAMES = tuple(t.wire_name for t in sorted(EventType))
"""Wire names by type code: ``TYPE_NAMES[EventType.PURCHASE] == "purchase"``."""

_US_PER_DAY = DAY_US
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')


def ts_chars(ts_us: np.ndarray) -> np.ndarray:
    """ISO 8601 UTC texts of µs timestamps as a (width, n) matrix of ASCII codes.

    Filled one character row at a time (contiguous writes): numpy's own datetime formatting
    costs ~0.6 µs a value, this ~0.1.
    """
    ts_us = np.asarray(ts_us, dtype=np.int64)
    if not np.any(ts_us % 1_000_000):
        digits = 0
    elif not np.any(ts_us % 1_000):
        digits = 3
    else:
        digits = 6
    days, in_day = np.divmod(ts_us, _US_PER_DAY)
    day_codes, distinct_days = pd.factorize(days, sort=False)
    dates = np.datetime_as_string(distinct_days.astype("datetime64[D]"), unit="D")
    date_chars = np.frombuffer("".join(f"{d}T" for d in dates.tolist()).encode(), np.uint8)
    width = 11 + 8 + (digits + 1 if digits else 0) + 6
    text = np.empty((width, len(ts_us)), np.uint8)
    text[:11] = date_chars.reshape(-1, 11).T[:, day_codes]
    seconds, fraction = np.divmod(in_day, 1_000_000)
    text[[13, 16]] = ord(":")
    for row, value in zip((11, 14, 17), (seconds // 3600, (seconds // 60) % 60, seconds % 60),
                          strict=True):
        tens, ones = np.divmod(value, 10)
        text[row] = tens + 48
        text[row + 1] = ones + 48
    if digits:
        text[19] = ord(".")
        value = fraction // 10 ** (6 - digits)
        for k in range(digits):
            value, digit = np.divmod(value, 10)
            text[19 + digits - k] = digit + 48
    text[-6:] = np.frombuffer(b"+00:00", np.uint8)[:, None]
    return text


def format_ts(ts_us: np.ndarray) -> np.ndarray:
    """ISO 8601 UTC strings for µs timestamps, e.g. ``2024-01-01T00:00:00.250+00:00``.

    The fraction has 3 digits when every value is a whole millisecond, none when every value
    is a whole second, else 6 digits (one format per call, so a chunk is uniform). Returns a
    fixed-width unicode array; ``.tolist()`` gives str.

    >>> format_ts(np.array([0, 1_704_067_200_250_000])).tolist()
    ['1970-01-01T00:00:00.000+00:00', '2024-01-01T00:00:00.250+00:00']
    >>> format_ts(np.array([1_306_886_400_000_000])).tolist()
    ['2011-06-01T00:00:00+00:00']
    """
    chars = ts_chars(ts_us)
    return np.ascontiguousarray(chars.T, dtype=np.uint32).view(f"U{len(chars)}").ravel()


def byte_table(texts: list[str]) -> np.ndarray:
    """Texts as the rows of a uint8 matrix, UTF-8, right-padded with NUL bytes."""
    joined = "".join(texts)
    if joined.isascii():
        buffer = joined.encode("ascii")
        lengths = np.fromiter(map(len, texts), np.int64, len(texts))
    else:
        encoded = [t.encode("utf-8") for t in texts]
        buffer = b"".join(encoded)
        lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
    width = int(lengths.max()) if len(texts) else 0
    table = np.zeros((len(texts), width), np.uint8)
    # row-major order of the mask's True cells is the order of the joined bytes
    table[np.arange(width) < lengths[:, None]] = np.frombuffer(buffer, np.uint8)
    return table


def digit_chars(numbers: np.ndarray) -> np.ndarray:
    """Decimal digits of non-negative integers as a (n, max digits) uint8 matrix of ASCII
    codes, right-aligned after NUL padding (a ``join_slots`` slot: the NULs go).

    >>> digit_chars(np.array([7, 42, 100])).tobytes()
    b'\\x00\\x007\\x0042100'
    """
    numbers = np.asarray(numbers, dtype=np.int64)
    width = len(str(int(numbers.max()))) if len(numbers) else 1
    chars = np.empty((width, len(numbers)), np.uint8)  # transposed: contiguous row writes
    value = numbers
    for row in range(width - 1, -1, -1):
        left = value  # the digits not yet written: none left means padding
        value, digit = np.divmod(value, 10)
        chars[row] = digit + 48 if row == width - 1 else np.where(left > 0, digit + 48, 0)
    return chars.T


def join_slots(n: int, slots: list[bytes | np.ndarray]) -> bytes:
    """Concatenate per-row byte slots (constants or (n, width) NUL-padded matrices) into one
    text, dropping the padding: every row's slots, in order, then the next row's."""
    widths = [len(s) if isinstance(s, bytes) else s.shape[1] for s in slots]
    lines = np.zeros((n, sum(widths)), np.uint8)
    at = 0
    for slot, width in zip(slots, widths, strict=True):
        lines[:, at:at + width] = np.frombuffer(slot, np.uint8) if isinstance(slot, bytes) else slot
        at += width
    flat = lines.ravel()
    return flat[flat != 0].tobytes()


def _json_text(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value.item() if isinstance(value, np.generic) else value)


def _json_slot(key: str, values: np.ndarray, *, distinct: bool = False) -> np.ndarray:
    """``,"key":<JSON value>`` for each value (null for None/NaN), as NUL-padded byte rows.

    Values are encoded once per distinct value; ``distinct=True`` says they are all
    different (event ids), which skips the hashing.
    """
    if distinct:
        codes, uniques = None, values.tolist()
    else:
        codes, found = pd.factorize(values, sort=False)
        uniques = found.tolist()
    prefix = f',"{key}":'
    try:
        joined = "".join(uniques)  # TypeError unless all are str
    except TypeError:
        joined = None
    if joined is not None and _NEEDS_ESCAPE.search(joined) is None:
        texts = [f'{prefix}"{v}"' for v in uniques]  # nothing to escape: skip json.dumps
    else:
        texts = [prefix + _json_text(v) for v in uniques]
    table = byte_table([*texts, prefix + "null"])  # pandas codes a missing value -1
    return table[:-1] if codes is None else table[codes]


def jsonl_from_columns(columns: dict[str, np.ndarray]) -> bytes:
    """The events as JSON Lines, UTF-8 (compact, fields in schema order, ``\\n`` after each).

    All lines are laid out in one byte matrix, each field in a fixed-width slot padded with
    NUL bytes, and the NULs are dropped at the end: numpy copies instead of Python string
    operations per field and event (JSON text never holds a raw NUL: it is escaped).
    ``event_id`` values are taken to be distinct (they are the idempotency key).

    >>> cols = {"event_id": np.array(["e1"], object), "user_id": np.array(["u1"], object),
    ...         "type": np.array([3], np.int8), "ts": np.array([1_306_886_400_000_000]),
    ...         "item_id": np.array(["i1"], object), "category": np.array([None], object),
    ...         "session_id": np.array(['s"1'], object), "price": np.array([2.5]),
    ...         "quantity": np.array([2])}
    >>> print(jsonl_from_columns(cols).decode(), end="")
    {"event_id":"e1","user_id":"u1","type":"purchase","ts":"2011-06-01T00:00:00+00:00",\
"item_id":"i1","category":null,"session_id":"s\\"1","price":2.5,"quantity":2}
    """
    n = len(columns["ts"])
    if n == 0:
        return b""
    types = byte_table([f',"type":"{name}"' for name in TYPE_NAMES])
    slots: list[bytes | np.ndarray] = [b"{"]
    for name in EVENT_FIELDS:
        if name == "type":
            slots.append(types[np.asarray(columns["type"], dtype=np.int64)])
        elif name == "ts":
            slots += [b',"ts":"', ts_chars(columns["ts"]).T, b'"']
        else:
            slots.append(_json_slot(name, columns[name], distinct=name == "event_id"))
    slots.append(b"}\n")
    slots[1] = slots[1][:, 1:]  # the first field has no comma
    return join_slots(n, slots)


def payloads_from_columns(columns: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The events as payload dicts (the wire format: ISO ``ts``, type names, null price).

    >>> cols = {"event_id": np.array(["e1"], object), "user_id": np.array(["u1"], object),
    ...         "type": np.array([0], np.int8), "ts": np.array([1_306_886_400_000_000]),
    ...         "item_id": np.array(["i1"], object), "category": np.array(["toys"], object),
    ...         "session_id": np.array([None], object), "price": np.array([np.nan]),
    ...         "quantity": np.array([1])}
    >>> payloads_from_columns(cols)  # doctest: +NORMALIZE_WHITESPACE
    [{'event_id': 'e1', 'user_id': 'u1', 'type': 'view', 'ts': '2011-06-01T00:00:00+00:00',
      'item_id': 'i1', 'category': 'toys', 'session_id': None, 'price': None, 'quantity': 1}]
    """
    price = np.asarray(columns["price"], dtype=np.float64)
    prices = price.astype(object)
    prices[np.isnan(price)] = None
    rows = zip(
        columns["event_id"].tolist(),
        columns["user_id"].tolist(),
        np.array(TYPE_NAMES, dtype=object)[np.asarray(columns["type"], np.int64)].tolist(),
        format_ts(columns["ts"]).tolist(),
        columns["item_id"].tolist(),
        columns["category"].tolist(),
        columns["session_id"].tolist(),
        prices.tolist(),
        np.asarray(columns["quantity"], dtype=np.int64).tolist(),
        strict=True,
    )
    return [
        {"event_id": e, "user_id": u, "type": t, "ts": ts, "item_id": i, "category": c,
         "session_id": s, "price": p, "quantity": q}
        for e, u, t, ts, i, c, s, p, q in rows
    ]
