"""Online rows for Feast built straight from the projector's columns, for the store's own write.

``FeatureStore.push`` of a frame converts it per feature view through pandas, arrow and
Feast's generic per-value type mapping, then hands the rows to the online store's
``online_write_batch``, which for Feast's sqlite store runs one ``INSERT ... ON CONFLICT`` per
feature value and commits once per view (``offline.feast_sqlite``, the store we run, batches
that write). For the projector's flushes (thousands of users, ~60
features each) the conversions before that write took about half of a flush. Here:

- `view_rows` builds each view's ``online_write_batch`` rows from the columns directly, as
  an `EncodedRows`: per feature the serialized ``ValueProto`` of each user's value (the
  bytes of the protos Feast's type mapping makes for our dtypes: a null is an empty
  ``Value``; timestamps are whole seconds; a test holds the stored rows equal to
  ``store.push``'s) and its ``value_text``. Any store iterates it as Feast's row tuples
  (protos parsed from those bytes); the sqlite store we run binds the bytes as they are, so
  a flush builds no proto at all (1,290 users of 49 values: 0.50 -> 0.19 s of CPU);
- `write_rows` hands them to the online store's own ``online_write_batch`` (Feast's API,
  whatever the store: sqlite, Redis), one call per view: what ``store.push`` ends in, minus
  the frame conversions before it.

``get_online_features`` reads the rows back as it reads Feast's own (tests/test_feast.py).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np

from online import catalogue as cat

__all__ = ["EncodedRows", "no_gc_pauses", "push_views", "take", "view_rows", "write_rows"]

_NO_TS = cat.NO_TS
_SECOND = 1_000_000
_DOUBLE_TAG = 0x29  # Value.double_val: field 5, wire type 1 (fixed64)
_NULL = bytearray()  # an empty Value (a null), serialized


def _naive(us: int) -> datetime:
    return datetime.fromtimestamp(us // _SECOND, UTC).replace(
        tzinfo=None, microsecond=us % _SECOND)


def _encoded(dtype: str, column) -> tuple[list, list]:
    """Each value of a stored column (catalogue dtype) as Feast's sqlite store binds it: the
    ``ValueProto``'s serialized bytes (as ``bytearray``, see `offline.feast_sqlite`) and its
    ``value_text`` (``extract_text_and_num``: the string, ``str`` of a number, else None).

    The bytes are those of Feast's type mapping of the value, ``SerializeToString``ed: a null
    is an empty ``Value``; timestamps are whole seconds, NaT the int64 minimum (read back as
    null); a double is its tag and 8 little-endian bytes (protobuf's fixed64 encoding, set in
    a oneof so -0.0 is kept). Repeated values share one object (made once per flush).
    """
    from feast.protos.feast.types.Value_pb2 import StringList, Value

    n = len(column)
    if dtype == "float64":
        values = np.asarray(column, np.float64)
        encoded = np.empty((n, 9), np.uint8)
        encoded[:, 0] = _DOUBLE_TAG
        encoded[:, 1:] = values.astype("<f8").view(np.uint8).reshape(n, 8)
        flat = bytearray(encoded.tobytes())
        floats = values.tolist()
        out = [flat[i:i + 9] for i in range(0, 9 * n, 9)]
        texts: list = list(map(str, floats))
        for i in np.flatnonzero(np.isnan(values)).tolist():
            out[i], texts[i] = _NULL, None
        return out, texts
    memo: dict[Any, bytearray] = {}
    if dtype == "int64":  # few distinct values (counts): each serialized once
        ints = np.asarray(column, np.int64).tolist()
        return ([memo.get(v) or memo.setdefault(
                    v, bytearray(Value(int64_val=v).SerializeToString())) for v in ints],
                list(map(str, ints)))
    if dtype == "timestamp":
        ints = np.asarray(column, np.int64).tolist()
        return ([memo.get(v) or memo.setdefault(v, bytearray(Value(
                    unix_timestamp_val=v if v == _NO_TS else v // _SECOND).SerializeToString()))
                 for v in ints], [None] * n)
    if dtype == "str":
        return ([_NULL if v is None else memo.get(v) or memo.setdefault(
                    v, bytearray(Value(string_val=v).SerializeToString())) for v in column],
                list(column))
    if dtype == "str_list":
        out = []
        for v in column:
            if v is None:
                out.append(_NULL)
                continue
            key = tuple(v)
            value = memo.get(key)
            if value is None:
                value = memo[key] = bytearray(
                    Value(string_list_val=StringList(val=key)).SerializeToString())
            out.append(value)
        return out, [None] * n
    raise ValueError(f"no Feast value mapping for dtype {dtype!r}")


class EncodedRows(Sequence):
    """One feature view's ``online_write_batch`` rows, held by column as they are stored.

    A sequence of Feast's row tuples (entity key proto, ``{feature: ValueProto}``, event time,
    created time): any online store's write (Redis's, Feast's sqlite) iterates it as the list
    it stands for, the protos parsed from the bytes on first use (a proto parsed from its
    canonical bytes equals the one they were serialized from). `offline.feast_sqlite` reads
    the columns instead (`values`: serialized bytes per feature, `texts`: ``value_text`` per
    feature, both one entry per user) and never builds a proto.
    """

    join_key = "user_id"

    def __init__(self, user_ids: Sequence[str], names: Sequence[str], values: list[list],
                 texts: list[list], event_ts: list[datetime], created: list[datetime]) -> None:
        self.user_ids = list(user_ids)
        self.names = tuple(names)
        self.values, self.texts = values, texts
        self.event_ts, self.created = event_ts, created
        self._rows: list[tuple] | None = None

    def entity_key(self, i: int):
        """The entity key proto of row ``i`` (Feast's key of the user's id)."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        return EntityKey(join_keys=[self.join_key],
                         entity_values=[Value(string_val=self.user_ids[i])])

    def rows(self) -> list[tuple]:
        """The rows as Feast's tuples (parsed once, then kept)."""
        if self._rows is None:
            from feast.protos.feast.types.Value_pb2 import Value

            parse, names = Value.FromString, self.names
            per_user = (zip(*self.values, strict=True) if names
                        else [()] * len(self.user_ids))
            self._rows = [
                (self.entity_key(i),
                 {n: parse(v) for n, v in zip(names, vals, strict=True)},
                 self.event_ts[i], self.created[i])
                for i, vals in enumerate(per_user)]
        return self._rows

    def __len__(self) -> int:
        return len(self.user_ids)

    def __getitem__(self, i):  # type: ignore[override]
        return self.rows()[i]

    def __iter__(self) -> Iterator[tuple]:
        return iter(self.rows())


def push_views(store, push_source: str) -> list:
    """The online feature views fed by ``push_source`` (as ``store.push`` finds them)."""
    return [v for v in store.list_feature_views()
            if v.online and v.stream_source is not None and v.stream_source.name == push_source]


def take(values, index: np.ndarray):
    """``values[index]`` for an array or a list."""
    if isinstance(values, np.ndarray):
        return values[index]
    return [values[i] for i in index.tolist()]


def view_rows(views: Sequence[Any], user_ids: Sequence[str],
              stored: Mapping[str, Any], offsets: np.ndarray, event_ts_us: np.ndarray,
              ) -> list[tuple[Any, EncodedRows]]:
    """``(view, rows)`` for each Feast feature view: ``online_write_batch`` rows of every user.

    ``stored`` holds every view's feature columns (``offset`` included for the version view),
    one value per user; ``event_ts_us`` is each row's event time (µs), ``offsets`` its
    created time (the log offset, in µs since the epoch, as `stored_frame` writes it).
    """
    event_ts = [_naive(t) for t in np.asarray(event_ts_us, np.int64).tolist()]
    created = [_naive(o) for o in np.asarray(offsets, np.int64).tolist()]
    columns = {**stored, "offset": np.asarray(offsets, np.int64)}
    encoded: dict[str, tuple[list, list]] = {}  # a feature in several views: encoded once
    out = []
    for view in views:
        names = [f.name for f in view.features]
        for n in names:
            if n not in encoded:
                encoded[n] = _encoded("int64" if n == "offset" else cat.feature(n).dtype,
                                      columns[n])
        out.append((view, EncodedRows(user_ids, names, [encoded[n][0] for n in names],
                                      [encoded[n][1] for n in names], event_ts, created)))
    return out


@contextmanager
def no_gc_pauses() -> Iterator[None]:
    """The cyclic collector held off while a flush allocates its ~100 objects per row (they
    hold no cycles): otherwise it scans the whole heap, models included, every few thousand
    allocations."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def write_rows(store, batches: list[tuple[Any, list[tuple]]]) -> int:
    """Write `view_rows` output through the online store's own ``online_write_batch``, one
    call per view (the provider's, as ``store.push`` ends in); rows written per view."""
    provider = store.provider
    for view, rows in batches:
        if rows:
            provider.online_write_batch(store.config, view, rows, progress=None)
    return max((len(rows) for _, rows in batches), default=0)
