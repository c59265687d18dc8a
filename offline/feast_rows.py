"""Online rows for Feast built straight from the projector's columns, for the store's own write.

``FeatureStore.push`` of a frame converts it per feature view through pandas, arrow and
Feast's generic per-value type mapping, then hands the rows to the online store's
``online_write_batch``, which for Feast's sqlite store runs one ``INSERT ... ON CONFLICT`` per
feature value and commits once per view (``offline.feast_sqlite``, the store we run, batches
that write). For the projector's flushes (thousands of users, ~60
features each) the conversions before that write took about half of a flush. Here:

- `view_rows` builds each view's ``online_write_batch`` rows (entity key, ``ValueProto`` per
  feature, event and created time) from the columns directly: the same protos Feast's type
  mapping makes for our dtypes (a null is an empty ``Value``; timestamps are whole seconds;
  a test holds the stored rows equal to ``store.push``'s);
- `write_rows` hands them to the online store's own ``online_write_batch`` (Feast's API,
  whatever the store: sqlite, Redis), one call per view: what ``store.push`` ends in, minus
  the frame conversions before it.

``get_online_features`` reads the rows back as it reads Feast's own (tests/test_feast.py).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np

from online import catalogue as cat

__all__ = ["no_gc_pauses", "push_views", "take", "view_rows", "write_rows"]

_NO_TS = cat.NO_TS
_SECOND = 1_000_000


def _naive(us: int) -> datetime:
    return datetime.fromtimestamp(us // _SECOND, UTC).replace(
        tzinfo=None, microsecond=us % _SECOND)


def _values(dtype: str, column) -> list:
    """Feast ``ValueProto`` of each value of a stored column (catalogue dtype)."""
    from feast.protos.feast.types.Value_pb2 import StringList, Value

    if dtype == "int64":  # a repeated value shares its proto (serialized once per flush)
        memo: dict[int, Any] = {}
        return [memo.get(v) or memo.setdefault(v, Value(int64_val=v))
                for v in np.asarray(column, np.int64).tolist()]
    if dtype == "float64":
        return [Value() if math.isnan(v) else Value(double_val=v)
                for v in np.asarray(column, np.float64).tolist()]
    if dtype == "timestamp":  # whole seconds, as Feast's mapping of a datetime; NaT as
        # Feast maps it: the int64 minimum (which reads back as null)
        memo = {}
        return [memo.get(v) or memo.setdefault(
                    v, Value(unix_timestamp_val=v if v == _NO_TS else v // _SECOND))
                for v in np.asarray(column, np.int64).tolist()]
    if dtype == "str":
        return [Value() if v is None else Value(string_val=v) for v in column]
    if dtype == "str_list":
        lists: dict[tuple, Any] = {}
        out = []
        for v in column:
            if v is None:
                out.append(Value())
                continue
            key = tuple(v)
            value = lists.get(key)
            if value is None:
                value = lists[key] = Value(string_list_val=StringList(val=key))
            out.append(value)
        return out
    raise ValueError(f"no Feast value mapping for dtype {dtype!r}")


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
              ) -> list[tuple[Any, list[tuple]]]:
    """``(view, rows)`` for each Feast feature view: ``online_write_batch`` rows of every user.

    ``stored`` holds every view's feature columns (``offset`` included for the version view),
    one value per user; ``event_ts_us`` is each row's event time (µs), ``offsets`` its
    created time (the log offset, in µs since the epoch, as `stored_frame` writes it).
    """
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    keys = [EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=u)])
            for u in user_ids]
    event_ts = [_naive(t) for t in np.asarray(event_ts_us, np.int64).tolist()]
    created = [_naive(o) for o in np.asarray(offsets, np.int64).tolist()]
    columns = {**stored, "offset": np.asarray(offsets, np.int64)}
    out = []
    for view in views:
        names = [f.name for f in view.features]
        per_feature = [_values("int64" if n == "offset" else cat.feature(n).dtype, columns[n])
                       for n in names]
        rows = [(keys[i], dict(zip(names, vals, strict=True)), event_ts[i], created[i])
                for i, vals in enumerate(zip(*per_feature, strict=True))]
        out.append((view, rows))
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
