"""Kernels that write snapshot rows while they apply events (the offline store's rows).

One numba loop applies events with the feature kernels themselves (``_apply``,
``_stored_row``, ``_next_window_change``), so a snapshot can never disagree with the
projector.  ``event_rows`` and ``tail_rows`` are the checked entry points; what the rows mean
is documented in ``offline.backfill.rows``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numba import njit

from online import state as st
from online.kernels.events import _apply, _prefetch
from online.kernels.features import EVENT_COLUMNS, checked
from online.kernels.jit import JIT
from online.kernels.layout import I_EVENT_COUNT, I_LAST_TS, NO_TS, OUT_FLOAT, OUT_INT, RECENT, TOP
from online.kernels.stored import _next_window_change, _stored_row, _window_row
from online.state import UserState

# At most one expiry row per ring slot between two events, plus the event's own row.
MAX_ROWS_PER_EVENT = st.WIN_SLOTS + 1
_PF_ROWS = 2  # events ahead whose user's state is fetched into the cache
_WIN_SLOTS, _N_INT, _N_FLOAT, _HLL_M = st.WIN_SLOTS, st.N_INT, st.N_FLOAT, st.HLL_M


@njit(**JIT)
def _fetch_user(v, ints, floats, win_spend, win_head, cat_code, cat_weight, hll, recent):
    """Hint the CPU to fetch user v's whole state: its rows read all of it (~2 KB, at a
    random place when the state is larger than the caches)."""
    _prefetch(ints, v, 0)
    _prefetch(ints, v, _N_INT - 1)
    _prefetch(floats, v, 0)
    _prefetch(floats, v, _N_FLOAT - 1)
    _prefetch(win_head, v, 0)
    for s in range(0, _WIN_SLOTS, 4):  # 16 bytes per ring slot (count, bucket, spend)
        _prefetch(win_spend, v, s)
    _prefetch(win_spend, v, _WIN_SLOTS - 1)
    _prefetch(cat_code, v, 0)
    _prefetch(cat_weight, v, 0)
    for k in range(0, _HLL_M, 64):
        _prefetch(hll, v, k)
    _prefetch(recent, v, 0)
    _prefetch(recent, v, RECENT - 1)


@njit(**JIT)
def _emit(u, t, off, ints, floats, win_count, win_spend, win_head, cat_code, cat_weight, hll,
          recent, row_user, row_ts, row_off, out_i, out_f, out_top, out_recent, j):
    _stored_row(u, t, ints, floats, win_count, win_spend, win_head, cat_code, cat_weight,
                   hll, recent, out_i, out_f, out_top, out_recent, j)
    row_user[j] = u
    row_ts[j] = t
    row_off[j] = off


@njit(**JIT)
def _expiries(u, after, until, one_user, one_after, one_out, ints, floats, win_count,
              win_spend, win_head, cat_code, cat_weight, hll, recent, last_off, row_user,
              row_ts, row_off, out_i, out_f, out_top, out_recent, j):
    """Rows at each window change of user u in (after, until); until=NO_TS: no bound.

    Row j - 1 is the user's row at ``after``: the state is the same, so an expiry row is
    that row with its window values read at the new time (``_stored_row`` would recompute
    every value, the HyperLogLog estimate and the top categories among them)."""
    one_user[0] = u
    src = j - 1
    while True:
        one_after[0] = after
        _next_window_change(one_user, one_after, ints, win_count, win_head, one_out)
        e = one_out[0]
        if e == NO_TS or (until != NO_TS and e >= until):
            return j
        for k in range(out_i.shape[1]):
            out_i[j, k] = out_i[src, k]
        for k in range(out_f.shape[1]):
            out_f[j, k] = out_f[src, k]
        for k in range(out_top.shape[1]):
            out_top[j, k] = out_top[src, k]
        for k in range(out_recent.shape[1]):
            out_recent[j, k] = out_recent[src, k]
        _window_row(u, e, ints[u, I_EVENT_COUNT], win_count, win_spend, win_head, out_i,
                    out_f, j)
        row_user[j] = u
        row_ts[j] = e
        row_off[j] = last_off[u]
        j += 1
        after = e


@njit(**JIT)
def _event_rows(i0, j0, uidx, ts, typ, price, qty, item, catg, off, item_hash, ints, floats,
                win_count, win_spend, win_head, cat_code, cat_weight, hll, recent, last_off, eff,
                row_user, row_ts, row_off, out_i, out_f, out_top, out_recent):
    """Apply events i0.. in order, writing rows from row j0 on; stop when a further event
    might not fit.

    A user's current state is written out (with the window changes after it) only when an
    event with a later time arrives: until then more events may share its time.
    """
    cap = row_user.shape[0]
    one_user = np.empty(1, np.int64)
    one_after = np.empty(1, np.int64)
    one_out = np.empty(1, np.int64)
    no_emit = np.zeros(0, np.uint8)
    none_i = np.empty((0, out_i.shape[1]), np.int64)  # C layout: the projector's signature
    none_f = np.empty((0, out_f.shape[1]), np.float64)
    none_top = np.empty((0, out_top.shape[1]), np.int32)
    none_recent = np.empty((0, out_recent.shape[1]), np.int32)
    j = np.int64(j0)
    i = i0
    n = uidx.shape[0]
    while i < n and cap - j >= MAX_ROWS_PER_EVENT:
        if i + _PF_ROWS < n:
            _fetch_user(uidx[i + _PF_ROWS], ints, floats, win_spend, win_head, cat_code,
                        cat_weight, hll, recent)
        u = uidx[i]
        if ints[u, I_EVENT_COUNT] > 0:
            last = ints[u, I_LAST_TS]
            if ts[i] > last:  # the state at `last` is final: its row, then window changes
                _emit(u, last, last_off[u], ints, floats, win_count, win_spend, win_head,
                      cat_code, cat_weight, hll, recent, row_user, row_ts, row_off, out_i,
                      out_f, out_top, out_recent, j)
                j = _expiries(u, last, ts[i], one_user, one_after, one_out, ints, floats,
                              win_count, win_spend, win_head, cat_code, cat_weight, hll,
                              recent, last_off, row_user, row_ts, row_off, out_i, out_f,
                              out_top, out_recent, j + 1)
        _apply(uidx[i:i + 1], ts[i:i + 1], typ[i:i + 1], price[i:i + 1], qty[i:i + 1],
                  item[i:i + 1], catg[i:i + 1], item_hash, ints, floats, win_count, win_spend,
                  win_head, cat_code, cat_weight, hll, recent, eff[i:i + 1], no_emit,
                  none_i, none_f, none_top, none_recent)
        last_off[u] = off[i] + 1
        i += 1
    return i, j


@njit(**JIT)
def _tail_rows(u0, j0, n_users, ints, floats, win_count, win_spend, win_head, cat_code, cat_weight,
               hll, recent, last_off, row_user, row_ts, row_off, out_i, out_f, out_top,
               out_recent):
    """Per user: the current state's row, then every window change after it."""
    cap = row_user.shape[0]
    one_user = np.empty(1, np.int64)
    one_after = np.empty(1, np.int64)
    one_out = np.empty(1, np.int64)
    j = np.int64(j0)
    u = u0
    while u < n_users and cap - j >= MAX_ROWS_PER_EVENT:
        if ints[u, I_EVENT_COUNT] > 0:
            last = ints[u, I_LAST_TS]
            _emit(u, last, last_off[u], ints, floats, win_count, win_spend, win_head, cat_code,
                  cat_weight, hll, recent, row_user, row_ts, row_off, out_i, out_f, out_top,
                  out_recent, j)
            j = _expiries(u, last, NO_TS, one_user, one_after, one_out, ints, floats,
                          win_count, win_spend, win_head, cat_code, cat_weight, hll, recent,
                          last_off, row_user, row_ts, row_off, out_i, out_f, out_top,
                          out_recent, j + 1)
        u += 1
    return u, j


@dataclass
class RowBlock:
    """Snapshot rows as columns of kernel values: user rows and codes, not yet strings.

    Every column is contiguous (one numpy row per output column), so each becomes an Arrow
    array without a copy.
    """

    user: np.ndarray
    ts: np.ndarray
    offset: np.ndarray
    ints: np.ndarray  # [len(OUT_INT), n]
    floats: np.ndarray  # [len(OUT_FLOAT), n]
    top: np.ndarray  # [INTEREST_TOP, n] category codes
    recent: np.ndarray  # [n, RECENT_ITEMS] item codes, newest first, -1 padded

    def __len__(self) -> int:
        return len(self.user)


class RowBuffer:
    """The rows the kernels write, in place: ``n`` rows filled of ``capacity``.

    Columns are laid out as the Arrow arrays want them (each output column contiguous); the
    kernels write row after row, and ``block`` hands rows out as one ``RowBlock``, gathered
    in a given order or, for all rows in kernel order, as views without a copy.
    """

    def __init__(self, capacity: int) -> None:
        capacity = max(int(capacity), 2 * MAX_ROWS_PER_EVENT)
        self.user = np.empty(capacity, np.int64)
        self.ts = np.empty(capacity, np.int64)
        self.off = np.empty(capacity, np.int64)
        self.out_i = np.empty((capacity, len(OUT_INT)), np.int64, order="F")
        self.out_f = np.empty((capacity, len(OUT_FLOAT)), np.float64, order="F")
        self.out_top = np.empty((capacity, TOP), np.int32, order="F")
        self.out_recent = np.empty((capacity, RECENT), np.int32)
        self.n = 0

    @property
    def capacity(self) -> int:
        return len(self.user)

    def outputs(self) -> tuple:
        return (self.user, self.ts, self.off, self.out_i, self.out_f, self.out_top,
                self.out_recent)

    def block(self, idx: np.ndarray | None = None) -> RowBlock:
        """Rows ``idx`` (positions below ``n``, copied), or all ``n`` rows (views)."""
        if idx is None:
            n = self.n
            return RowBlock(self.user[:n], self.ts[:n], self.off[:n], self.out_i[:n].T,
                            self.out_f[:n].T, self.out_top[:n].T, self.out_recent[:n])
        return RowBlock(self.user[idx], self.ts[idx], self.off[idx],
                        np.take(self.out_i.T, idx, axis=1), np.take(self.out_f.T, idx, axis=1),
                        np.take(self.out_top.T, idx, axis=1), self.out_recent[idx])

    def keep(self, idx: np.ndarray) -> None:
        """Keep only rows ``idx``, in that order, at the front."""
        block = self.block(idx)
        k = len(idx)
        self.user[:k], self.ts[:k], self.off[:k] = block.user, block.ts, block.offset
        self.out_i[:k] = block.ints.T
        self.out_f[:k] = block.floats.T
        self.out_top[:k] = block.top.T
        self.out_recent[:k] = block.recent
        self.n = k


def _state_arrays(state: UserState) -> tuple:
    return (state.ints, state.floats, state.win_count, state.win_spend, state.win_head,
            state.cat_code, state.cat_weight, state.hll, state.recent)


def grow_offsets(last_offset: np.ndarray, n_users: int) -> np.ndarray:
    """``last_offset`` (per user row: one past its newest applied offset) sized to n_users."""
    if len(last_offset) >= n_users:
        return last_offset
    out = np.full(max(n_users, 2 * len(last_offset)), -1, np.int64)
    out[: len(last_offset)] = last_offset
    return out


def event_rows(state: UserState, batch, last_offset: np.ndarray, rows: RowBuffer,
               drain: Callable[[], None]) -> np.ndarray:
    """Apply ``batch`` (an ``EventBatch``, log order) to ``state``, writing its snapshot rows
    into ``rows``; ``drain()`` is called whenever ``rows`` is too full for another event and
    must leave room for at least one (``rows.n`` at most half the capacity).

    ``last_offset`` is updated in place and returned (grown when new users appear): per
    user, one past the offset of the newest event applied (the rows' ``offset``).  The
    state changes exactly as under ``kernels.apply(state, batch)``.
    """
    n = len(batch.offset)
    if n == 0:
        return last_offset
    uidx = state.index_users(batch.user_id)
    item = state.encode_items(batch.item_id)
    catg = state.encode_categories(batch.category)
    last_offset = grow_offsets(last_offset, state.n_users)
    cols = {name: checked(name, arr, dtype, n) for (name, dtype), arr in zip(
        EVENT_COLUMNS.items(),
        (uidx, batch.ts, batch.type, batch.price, batch.quantity, item, catg), strict=True)}
    off = checked("offset", batch.offset, np.int64, n)
    eff = np.empty(n, np.int64)
    i = 0
    while i < n:
        i, rows.n = _event_rows(i, rows.n, *cols.values(), off, state.item_hash,
                                *_state_arrays(state), last_offset, eff, *rows.outputs())
        if i < n:
            _drained(rows, drain)
    return last_offset


def tail_rows(state: UserState, last_offset: np.ndarray, rows: RowBuffer,
              drain: Callable[[], None]) -> None:
    """Expiry rows after every user's newest event (their windows emptying out), written
    into ``rows`` as ``event_rows`` does."""
    u = 0
    while u < state.n_users:
        u, rows.n = _tail_rows(u, rows.n, state.n_users, *_state_arrays(state), last_offset,
                               *rows.outputs())
        if u < state.n_users:
            _drained(rows, drain)


def _drained(rows: RowBuffer, drain: Callable[[], None]) -> None:
    drain()
    if rows.n > rows.capacity // 2:
        raise RuntimeError(f"a drain left {rows.n} of {rows.capacity} rows in the buffer: "
                           "at most half may stay")
