"""Feature snapshot rows: what the offline store holds for point-in-time joins.

A snapshot row says "from ``event_timestamp`` on (until the user's next row) the user's stored
values are these".  Rows are produced while events are applied, by the feature engine's own
kernels (``online.kernels``: ``_apply``, ``_stored_row``, ``_next_window_change``) called from
one numba loop, so the snapshot can never disagree with the projector:

- an event row per (user, effective event time), after the user's last event at that time
  (events at equal effective times collapse into one row); it is written when the user's
  next event with a later time is applied, so batch and chunk boundaries never split it;
- an expiry row at each time a window value changes between two events of a user (a
  non-empty bucket leaves a sliding window), holding the state after the earlier event;
- tail rows: each user's current state (the newest event row) and the expiry rows after it
  (the windows emptying out).  They are provisional, a later event of the user replaces
  them, so ``offline.replay`` rewrites the tail whenever the replayed end moves.

Columns: ``user_id``, ``event_timestamp`` (µs UTC), ``created`` (the row's ``offset`` read as
µs since the epoch: deterministic, and orders rows of equal ``event_timestamp`` by log
position), ``offset`` (one past the log offset of the user's newest event the row reflects,
the projector's convention: the row reflects the user's events below it) and the catalogue's
stored columns.  Timestamps are ``timestamp[us, UTC]`` (null when ``NO_TS``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from numba import njit

from online import catalogue as cat
from online import kernels as kn
from online import state as st
from online.state import UserState

KEY_COLUMNS = ("user_id", "event_timestamp", "created", "offset")
# At most one expiry row per ring slot between two events, plus the event's own row.
MAX_ROWS_PER_EVENT = st.WIN_SLOTS + 1
_NO_TS = cat.NO_TS
_I_EVENT_COUNT, _I_LAST_TS = st.I_EVENT_COUNT, st.I_LAST_TS
_TOP, _RECENT = cat.INTEREST_TOP, cat.RECENT_ITEMS

# Cached, but numba's cache does not notice changes in the kernels these loops call (they live
# in other modules, and their code is linked into ours): `_guard_cache` below drops our cache
# whenever those modules' sources change, so a stale copy can never run.
_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


@njit(**_JIT)
def _emit(u, t, off, ints, floats, win_count, win_spend, win_head, cat_code, cat_weight, hll,
          recent, row_user, row_ts, row_off, out_i, out_f, out_top, out_recent, j):
    kn._stored_row(u, t, ints, floats, win_count, win_spend, win_head, cat_code, cat_weight,
                   hll, recent, out_i, out_f, out_top, out_recent, j)
    row_user[j] = u
    row_ts[j] = t
    row_off[j] = off


@njit(**_JIT)
def _expiries(u, after, until, one_user, one_after, one_out, ints, floats, win_count,
              win_spend, win_head, cat_code, cat_weight, hll, recent, last_off, row_user,
              row_ts, row_off, out_i, out_f, out_top, out_recent, j):
    """Rows at each window change of user u in (after, until); until=NO_TS: no bound."""
    one_user[0] = u
    while True:
        one_after[0] = after
        kn._next_window_change(one_user, one_after, ints, win_count, win_head, one_out)
        e = one_out[0]
        if e == _NO_TS or (until != _NO_TS and e >= until):
            return j
        _emit(u, e, last_off[u], ints, floats, win_count, win_spend, win_head, cat_code,
              cat_weight, hll, recent, row_user, row_ts, row_off, out_i, out_f, out_top,
              out_recent, j)
        j += 1
        after = e


@njit(**_JIT)
def _event_rows(i0, uidx, ts, typ, price, qty, item, catg, off, item_hash, ints, floats,
                win_count, win_spend, win_head, cat_code, cat_weight, hll, recent, last_off, eff,
                row_user, row_ts, row_off, out_i, out_f, out_top, out_recent):
    """Apply events i0.. in order, writing rows; stop when a further event might not fit.

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
    j = np.int64(0)
    i = i0
    n = uidx.shape[0]
    while i < n and cap - j >= MAX_ROWS_PER_EVENT:
        u = uidx[i]
        if ints[u, _I_EVENT_COUNT] > 0:
            last = ints[u, _I_LAST_TS]
            if ts[i] > last:  # the state at `last` is final: its row, then window changes
                _emit(u, last, last_off[u], ints, floats, win_count, win_spend, win_head,
                      cat_code, cat_weight, hll, recent, row_user, row_ts, row_off, out_i,
                      out_f, out_top, out_recent, j)
                j = _expiries(u, last, ts[i], one_user, one_after, one_out, ints, floats,
                              win_count, win_spend, win_head, cat_code, cat_weight, hll,
                              recent, last_off, row_user, row_ts, row_off, out_i, out_f,
                              out_top, out_recent, j + 1)
        kn._apply(uidx[i:i + 1], ts[i:i + 1], typ[i:i + 1], price[i:i + 1], qty[i:i + 1],
                  item[i:i + 1], catg[i:i + 1], item_hash, ints, floats, win_count, win_spend,
                  win_head, cat_code, cat_weight, hll, recent, eff[i:i + 1], no_emit,
                  none_i, none_f, out_top[:0], out_recent[:0])
        last_off[u] = off[i] + 1
        i += 1
    return i, j


@njit(**_JIT)
def _tail_rows(u0, n_users, ints, floats, win_count, win_spend, win_head, cat_code, cat_weight,
               hll, recent, last_off, row_user, row_ts, row_off, out_i, out_f, out_top,
               out_recent):
    """Per user: the current state's row, then every window change after it."""
    cap = row_user.shape[0]
    one_user = np.empty(1, np.int64)
    one_after = np.empty(1, np.int64)
    one_out = np.empty(1, np.int64)
    j = np.int64(0)
    u = u0
    while u < n_users and cap - j >= MAX_ROWS_PER_EVENT:
        if ints[u, _I_EVENT_COUNT] > 0:
            last = ints[u, _I_LAST_TS]
            _emit(u, last, last_off[u], ints, floats, win_count, win_spend, win_head, cat_code,
                  cat_weight, hll, recent, row_user, row_ts, row_off, out_i, out_f, out_top,
                  out_recent, j)
            j = _expiries(u, last, _NO_TS, one_user, one_after, one_out, ints, floats,
                          win_count, win_spend, win_head, cat_code, cat_weight, hll, recent,
                          last_off, row_user, row_ts, row_off, out_i, out_f, out_top,
                          out_recent, j + 1)
        u += 1
    return u, j


def _guard_cache(dispatchers) -> None:
    sources = b"".join(Path(m.__file__).read_bytes() for m in (kn, st, cat))
    digest = hashlib.sha256(sources).hexdigest()
    stamp = Path(dispatchers[0]._cache.cache_path) / "offline-snapshot.depends"
    try:
        if stamp.read_text() == digest:
            return
    except OSError:
        pass
    for d in dispatchers:
        d._cache.flush()
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(digest)
    except OSError:  # a read-only install: numba then caches elsewhere or not at all
        pass


_guard_cache([_emit, _expiries, _event_rows, _tail_rows])


@dataclass
class RowBlock:
    """Snapshot rows as the kernels wrote them: user rows and codes, not yet strings."""

    user: np.ndarray
    ts: np.ndarray
    offset: np.ndarray
    ints: np.ndarray  # [len(OUT_INT), n]: one contiguous row per column
    floats: np.ndarray  # [len(OUT_FLOAT), n]
    top: np.ndarray  # [n, INTEREST_TOP] category codes
    recent: np.ndarray  # [n, RECENT_ITEMS] item codes, newest first, -1 padded

    def __len__(self) -> int:
        return len(self.user)

    def take(self, idx) -> RowBlock:
        return RowBlock(self.user[idx], self.ts[idx], self.offset[idx],
                        self.ints[:, idx], self.floats[:, idx],
                        self.top[idx], self.recent[idx])

    def by_day(self) -> list[tuple[str, RowBlock]]:
        """The rows split by the UTC date of their ``event_timestamp`` (``YYYY-MM-DD``)."""
        days = self.ts // cat.DAY_US
        if days.min() == days.max():
            return [(str(np.datetime64(int(days[0]), "D")), self)]
        order = np.argsort(days, kind="stable")
        days = days[order]
        cuts = [0, *(np.flatnonzero(np.diff(days)) + 1), len(days)]
        return [(str(np.datetime64(int(days[a]), "D")), self.take(order[a:b]))
                for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


class _Buffers:
    def __init__(self, capacity: int) -> None:
        self.user = np.empty(capacity, np.int64)
        self.ts = np.empty(capacity, np.int64)
        self.off = np.empty(capacity, np.int64)
        self.out_i = np.empty((capacity, len(kn.OUT_INT)), np.int64, order="F")
        self.out_f = np.empty((capacity, len(kn.OUT_FLOAT)), np.float64, order="F")
        self.out_top = np.empty((capacity, _TOP), np.int32)
        self.out_recent = np.empty((capacity, _RECENT), np.int32)

    def outputs(self) -> tuple:
        return (self.user, self.ts, self.off, self.out_i, self.out_f, self.out_top,
                self.out_recent)

    def block(self, n: int) -> RowBlock:
        return RowBlock(self.user[:n].copy(), self.ts[:n].copy(), self.off[:n].copy(),
                        np.ascontiguousarray(self.out_i[:n].T),
                        np.ascontiguousarray(self.out_f[:n].T),
                        self.out_top[:n].copy(), self.out_recent[:n].copy())


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


def event_rows(state: UserState, batch, last_offset: np.ndarray, *, block_rows: int = 65_536,
               ) -> tuple[list[RowBlock], np.ndarray]:
    """Apply ``batch`` (an ``EventBatch``, log order) to ``state``; return its snapshot rows.

    ``last_offset`` is updated in place and returned (grown when new users appear): per
    user, one past the offset of the newest event applied (the rows' ``offset``).  The
    state changes exactly as under ``kernels.apply(state, batch)``.
    """
    n = len(batch.offset)
    if n == 0:
        return [], last_offset
    uidx = state.index_users(batch.user_id)
    item = state.encode_items(batch.item_id)
    catg = state.encode_categories(batch.category)
    last_offset = grow_offsets(last_offset, state.n_users)
    cols = {name: kn._checked(name, arr, dtype, n) for (name, dtype), arr in zip(
        kn._EVENT_COLUMNS.items(),
        (uidx, batch.ts, batch.type, batch.price, batch.quantity, item, catg), strict=True)}
    off = kn._checked("offset", batch.offset, np.int64, n)
    eff = np.empty(n, np.int64)
    buf = _Buffers(max(min(block_rows, 2 * n + MAX_ROWS_PER_EVENT), MAX_ROWS_PER_EVENT))
    blocks, i = [], 0
    while i < n:
        i, j = _event_rows(i, *cols.values(), off, state.item_hash,
                           *_state_arrays(state), last_offset, eff, *buf.outputs())
        if j:
            blocks.append(buf.block(j))
    return blocks, last_offset


def tail_rows(state: UserState, last_offset: np.ndarray, *, block_rows: int = 65_536,
              ) -> list[RowBlock]:
    """Expiry rows after every user's newest event (their windows emptying out)."""
    buf = _Buffers(max(block_rows, MAX_ROWS_PER_EVENT))
    blocks, u = [], 0
    while u < state.n_users:
        u, j = _tail_rows(u, state.n_users, *_state_arrays(state), last_offset, *buf.outputs())
        if j:
            blocks.append(buf.block(j))
    return blocks


def schema() -> pa.Schema:
    """The parquet schema of snapshot rows: key columns, then the catalogue's stored ones."""
    keys = [pa.field("user_id", pa.string()),
            pa.field("event_timestamp", pa.timestamp("us", tz="UTC")),
            pa.field("created", pa.timestamp("us", tz="UTC")),
            pa.field("offset", pa.int64())]
    return pa.schema(keys + list(cat.arrow_schema()))


class Dictionaries:
    """Arrow arrays of the state's user/item/category strings, extended as codes are added."""

    def __init__(self) -> None:
        self._arrays: dict[str, pa.Array] = {}

    def get(self, name: str, values: list[str]) -> pa.Array:
        have = self._arrays.get(name)
        if have is None or len(have) != len(values):
            start = 0 if have is None else len(have)
            added = pa.array(values[start:], type=pa.string())
            have = added if have is None else pa.concat_arrays([have, added])
            self._arrays[name] = have
        return have


def _dictionary(codes: np.ndarray, values: pa.Array) -> pa.DictionaryArray:
    """Codes (-1: null) over ``values``, with the dictionary cut to the codes used."""
    if not len(values):
        return pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(len(codes), np.int32), mask=np.ones(len(codes), bool)), values)
    used = np.zeros(len(values) + 1, dtype=bool)
    used[codes] = True  # -1 marks the last slot, which is cut off below
    used = used[:-1]
    remap = np.cumsum(used, dtype=np.int32) - 1
    valid = codes >= 0
    idx = np.where(valid, remap[np.where(valid, codes, 0)], 0).astype(np.int32)
    mask = None if valid.all() else ~valid
    picked = values.filter(pa.array(used)) if not used.all() else values
    return pa.DictionaryArray.from_arrays(pa.array(idx, mask=mask), picked)


def _timestamps(us: np.ndarray) -> pa.Array:
    null = us == _NO_TS
    return pa.array(us, type=pa.timestamp("us", tz="UTC"), mask=null if null.any() else None)


def to_table(block: RowBlock, state: UserState, dicts: Dictionaries) -> pa.Table:
    """The block as an arrow table of ``schema()`` (strings dictionary-encoded)."""
    users = dicts.get("users", state.users.values)
    items = dicts.get("items", state.items.values)
    categories = dicts.get("categories", state.categories.values)
    cols: dict[str, pa.Array] = {
        "user_id": _dictionary(block.user, users),
        "event_timestamp": _timestamps(block.ts),
        "created": pa.array(block.offset, type=pa.timestamp("us", tz="UTC")),
        "offset": pa.array(block.offset),
    }
    for k, name in enumerate(kn.OUT_INT):
        if cat.feature(name).dtype == "timestamp":
            cols[name] = _timestamps(block.ints[k])
        else:
            cols[name] = pa.array(block.ints[k])
    for k, name in enumerate(kn.OUT_FLOAT):
        cols[name] = pa.array(block.floats[k])
    for k in range(_TOP):
        cols[f"interest_top{k + 1}"] = _dictionary(block.top[:, k], categories)
    valid = block.recent >= 0
    offsets = np.zeros(len(block) + 1, np.int32)
    np.cumsum(valid.sum(axis=1), out=offsets[1:])
    cols["recent_items"] = pa.ListArray.from_arrays(
        pa.array(offsets), _dictionary(block.recent[valid], items))
    names = schema().names
    return pa.table([cols[name] for name in names], names=names)
