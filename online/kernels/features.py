"""Feature kernels' public wrappers: apply events, read stored values, serve values at T.

The kernels themselves (``online.kernels.events``, ``online.kernels.stored``) take contiguous
typed arrays; these wrappers check dtypes and shapes.  ``evaluate_stored`` is the one function
that turns stored values into served values at T; the projector, the as-of path, replay and
the API all go through it, so every path agrees bit for bit.  Kernel flags live in
``online.kernels.jit`` only.

>>> from online.state import UserState
>>> state = UserState()
>>> batch = {"user_id": np.array(["ann", "ann"], dtype=object),
...          "ts": np.array([0, 60_000_000]), "type": np.array([0, 3], dtype=np.int8),
...          "price": np.array([np.nan, 9.5]), "quantity": np.array([1, 2]),
...          "item_id": np.array(["sku-1", "sku-2"], dtype=object),
...          "category": np.array(["shoes", "shoes"], dtype=object)}
>>> apply(state, batch).tolist()  # effective times
[0, 60000000]
>>> served = evaluate(state, [0], 30 * 60_000_000)  # at T = 30 min
>>> float(served["spend_total"][0]), int(served["events_1h"][0])
(19.0, 2)
>>> float(served["seconds_since_last_purchase"][0]), served["recent_items"][0]
(1740.0, ['sku-2', 'sku-1'])
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from online import catalogue as cat
from online.kernels.events import _apply
from online.kernels.layout import (
    I_LAST_TS,
    N_TYPES,
    OUT_FLOAT,
    OUT_INT,
    RECENT,
    TOP,
)
from online.kernels.stored import _decay, _next_window_change, _since, _stored_rows
from online.state import UserState

EVENT_COLUMNS = {  # name: dtype the kernel expects
    "user_idx": np.int64, "ts": np.int64, "type": np.int8, "price": np.float64,
    "quantity": np.int64, "item_code": np.int32, "category_code": np.int32,
}


def checked(name: str, arr, dtype, n: int | None = None) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype != np.dtype(dtype):
        raise ValueError(f"{name}: expected dtype {np.dtype(dtype)}, got {arr.dtype}")
    if arr.ndim != 1 or (n is not None and arr.shape[0] != n):
        want = f"({n},)" if n is not None else "1-D"
        raise ValueError(f"{name}: expected shape {want}, got {arr.shape}")
    return np.ascontiguousarray(arr)


def _column(batch, name: str):
    return batch[name] if isinstance(batch, Mapping) else getattr(batch, name)


def apply(state: UserState, batch, *, event_rows=None, row_names=None):
    """Apply a columnar batch in log order; returns each event's effective ts (int64).

    ``batch`` is an ``EventBatch`` or a mapping with the same columns (``user_id``, ``ts``,
    ``type``, ``price``, ``quantity``, ``item_id``, ``category``).  With ``event_rows`` (a
    bool mask, or True for all events) it returns ``(eff_ts, rows)``: ``rows`` holds the
    stored values of the event's user right after each selected event, windows at its
    effective ts (the snapshot rows of replay, the per-event features of online models);
    ``row_names`` limits the rows to those stored columns (strings cost most to build).
    """
    user_idx = state.index_users(_column(batch, "user_id"))
    return apply_encoded(
        state, user_idx, _column(batch, "ts"), _column(batch, "type"),
        _column(batch, "price"), _column(batch, "quantity"),
        state.encode_items(_column(batch, "item_id")),
        state.encode_categories(_column(batch, "category")), event_rows=event_rows,
        row_names=row_names,
    )


def apply_encoded(state: UserState, user_idx, ts, type, price, quantity, item_code,
                  category_code, *, event_rows=None, row_names=None):
    """Apply events given as typed columns with codes from ``state`` (see ``EVENT_COLUMNS``)."""
    n = len(user_idx)
    cols = {
        name: checked(name, arr, dtype, n)
        for (name, dtype), arr in zip(
            EVENT_COLUMNS.items(),
            (user_idx, ts, type, price, quantity, item_code, category_code), strict=True,
        )
    }
    emit = np.zeros(0, dtype=np.uint8)
    if event_rows is not None and event_rows is not False:
        emit = np.ones(n, dtype=np.uint8) if event_rows is True else np.ascontiguousarray(
            checked("event_rows", event_rows, np.bool_, n), dtype=np.uint8)
    outs = _out_arrays(int(emit.sum()))
    if n == 0:
        eff = np.zeros(0, dtype=np.int64)
        return eff if event_rows is None else (eff, _named(state, *outs, names=row_names))
    if cols["user_idx"].min() < 0 or cols["user_idx"].max() >= state.n_users:
        raise ValueError(f"user_idx: expected values in [0, {state.n_users}), got "
                         f"[{cols['user_idx'].min()}, {cols['user_idx'].max()}]")
    if cols["type"].min() < 0 or cols["type"].max() >= N_TYPES:
        raise ValueError(f"type: expected codes in [0, {N_TYPES}), got "
                         f"[{cols['type'].min()}, {cols['type'].max()}]")
    for name, size in (("item_code", len(state.items)), ("category_code", len(state.categories))):
        if cols[name].max() >= size or cols[name].min() < -1:
            raise ValueError(f"{name}: expected codes in [-1, {size}), got "
                             f"[{cols[name].min()}, {cols[name].max()}]")
    if len(state.item_hash) != len(state.items):
        raise ValueError(f"item_hash: expected {len(state.items)} entries, "
                         f"got {len(state.item_hash)}")
    eff = np.empty(n, dtype=np.int64)
    _apply(cols["user_idx"], cols["ts"], cols["type"], cols["price"], cols["quantity"],
           cols["item_code"], cols["category_code"], state.item_hash, state.ints, state.floats,
           state.win_count, state.win_spend, state.win_head, state.cat_code, state.cat_weight,
           state.hll, state.recent, eff, emit, *outs)
    return eff if event_rows is None else (eff, _named(state, *outs, names=row_names))


def _users(state: UserState, user_idx) -> np.ndarray:
    users = np.atleast_1d(np.asarray(user_idx))
    if users.dtype.kind not in "iu" or users.ndim != 1:
        raise ValueError(f"user_idx: expected a 1-D integer array, got {users.dtype} "
                         f"with shape {users.shape}")
    users = np.ascontiguousarray(users, dtype=np.int64)
    if len(users) and (users.min() < 0 or users.max() >= state.n_users):
        raise ValueError(f"user_idx: expected values in [0, {state.n_users}), got "
                         f"[{users.min()}, {users.max()}]")
    return users


def _times(t_us, n: int) -> np.ndarray:
    t = np.asarray(t_us)
    if t.dtype.kind not in "iu":
        raise ValueError(f"t_us: expected int64 µs, got dtype {t.dtype}")
    return np.ascontiguousarray(np.broadcast_to(t.astype(np.int64), (n,)))


def _out_arrays(n: int):
    return (np.empty((n, len(OUT_INT)), dtype=np.int64),
            np.empty((n, len(OUT_FLOAT)), dtype=np.float64),
            np.empty((n, TOP), dtype=np.int32), np.empty((n, RECENT), dtype=np.int32))


def _named(state: UserState, out_i, out_f, out_top, out_recent,
           names=None) -> dict[str, np.ndarray]:
    wanted = cat.stored_names() if names is None else [n for n in cat.stored_names()
                                                       if n in names]
    cols: dict[str, np.ndarray] = {}
    cols.update({name: out_i[:, k] for k, name in enumerate(OUT_INT)})
    cols.update({name: out_f[:, k] for k, name in enumerate(OUT_FLOAT)})
    for k in range(TOP):
        if f"interest_top{k + 1}" in wanted:
            cols[f"interest_top{k + 1}"] = state.categories.decode(out_top[:, k])
    if "recent_items" in wanted:  # Python lists: only built when asked for
        lengths = (out_recent >= 0).sum(axis=1).tolist()  # newest first, -1 padding at the end
        recent = np.empty(len(out_i), dtype=object)
        recent[:] = [r[:k] for r, k in zip(state.items.decode(out_recent).tolist(), lengths,
                                            strict=True)]
        cols["recent_items"] = recent
    return {name: cols[name] for name in wanted}


def _needed(names) -> set[str] | None:
    """Stored columns that the served ``names`` are computed from (None: all)."""
    if names is None:
        return None
    unknown = set(names) - set(cat.served_names())
    if unknown:
        raise ValueError(f"names: expected catalogue features, got unknown {sorted(unknown)}")
    need = {"last_event_ts"}
    for name in names:
        f = cat.feature(name)
        need.add(f.source if f.kind == "since" else name)
    return need


def stored_values(state: UserState, user_idx, at_us=None, *,
                  names=None) -> dict[str, np.ndarray]:
    """Stored values (a snapshot row per user) in catalogue order (only ``names`` if given).

    Window columns are evaluated at ``max(at_us, last_event_ts)`` (default: each user's
    ``last_event_ts``).  ``interest_top*`` are str/None (object arrays), ``recent_items`` an
    object array of lists of item ids, timestamps int64 µs (``NO_TS`` when null).
    """
    users = _users(state, user_idx)
    n = len(users)
    last = state.ints[users, I_LAST_TS]
    tw = last if at_us is None else np.maximum(_times(at_us, n), last)
    outs = _out_arrays(n)
    _stored_rows(users, np.ascontiguousarray(tw), state.ints, state.floats, state.win_count,
                 state.win_spend, state.win_head, state.cat_code, state.cat_weight, state.hll,
                 state.recent, *outs)
    return _named(state, *outs, names=names)


def evaluate_stored(stored: Mapping[str, np.ndarray], t_us, *,
                    names=None) -> dict[str, np.ndarray]:
    """Served values at T from stored rows: decay from ``last_event_ts``, since-features.

    ``t_us`` is a scalar or one time per row; a T before a row's ``last_event_ts`` is taken
    as ``last_event_ts`` (point-in-time queries go through the as-of path instead).  With
    ``names``, only those served features (``stored`` needs the columns they come from).
    """
    last = checked("last_event_ts", stored["last_event_ts"], np.int64)
    n = len(last)
    t = _times(t_us, n)
    served: dict[str, np.ndarray] = {}
    for f in cat.FEATURES:
        if names is not None and f.name not in names:
            continue
        if f.kind == "decay":
            out = np.empty(n, dtype=np.float64)
            _decay(checked(f.name, stored[f.name], np.float64, n), last, t, f.half_life_index,
                   out)
        elif f.kind == "since":
            out = np.empty(n, dtype=np.float64)
            _since(checked(f.source, stored[f.source], np.int64, n), last, t,
                   float(f.scale_us), out)
        else:
            out = stored[f.name]
        served[f.name] = out
    return served


def evaluate(state: UserState, user_idx, t_us, *, names=None) -> dict[str, np.ndarray]:
    """Served values of many users at T (scalar or per user): windows from the rings at T.

    ``names`` restricts the output to those features (and skips building unneeded strings).
    """
    users = _users(state, user_idx)
    t = np.maximum(_times(t_us, len(users)), state.ints[users, I_LAST_TS])
    stored = stored_values(state, users, at_us=t, names=_needed(names))
    return evaluate_stored(stored, t, names=names)


def next_window_change(state: UserState, user_idx, after_us) -> np.ndarray:
    """Per user, the first time > ``after_us`` at which a window value changes (NO_TS: never).

    Offline snapshots add a row at each such time so point-in-time joins stay exact.
    """
    users = _users(state, user_idx)
    out = np.empty(len(users), dtype=np.int64)
    _next_window_change(users, _times(after_us, len(users)), state.ints, state.win_count,
                        state.win_head, out)
    return out
