"""Feature kernels: apply events to a UserState, read stored values, serve values at time T.

The ``_underscored`` functions are numba kernels over contiguous typed arrays; the public
wrappers check dtypes and shapes.  ``evaluate_stored`` is the one function that turns stored
values into served values at T; the projector, the as-of path, replay and the API all go
through it, so every path agrees bit for bit.  Kernel flags live in ``_JIT`` only.

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

import math
from collections.abc import Mapping

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from online import catalogue as cat
from online import state as st
from online.events import MAX_LINE_AMOUNT
from online.state import UserState

# No fastmath: served values must equal the Python reference (tests/naive.py) bit for bit.
_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}

VIEW, ADD_TO_CART, REMOVE_FROM_CART, PURCHASE, REFUND = range(5)
_N_TYPES = 5
_BASE_RATE = math.log(2.0) / cat.DECAY_BASE_US
_N_HL = len(cat.HALF_LIVES)
_HL_INTEREST = [hl for _, hl in cat.HALF_LIVES].index(cat.INTEREST_HALF_LIFE_US)
_INTEREST_W = np.array(cat.INTEREST_WEIGHTS, dtype=np.float64)
_SLOTS = cat.INTEREST_SLOTS
_TOP = cat.INTEREST_TOP
_RECENT = cat.RECENT_ITEMS
_GAP = cat.SESSION_GAP_US
_NWIN = len(cat.WINDOWS)
_WIDTHS, _SIZES, _OFFSETS = st.WIN_WIDTHS, st.WIN_SIZES, st.WIN_OFFSETS
_HLL_P = cat.HLL_P
_HLL_M = st.HLL_M
_HLL_ALPHA = 0.7213 / (1.0 + 1.079 / _HLL_M)
_POW2_NEG = np.array([2.0**-r for r in range(66 - _HLL_P)])  # 2**-rank, exact
_NO_TS = cat.NO_TS
# Validation rejects a larger line amount; the kernel saturates too (an Event built without
# validation), so every money sum stays finite: n events add at most n x 1e12.
_MAX_AMOUNT = float(MAX_LINE_AMOUNT)
N_INT = st.N_INT
(I_EVENT_COUNT, I_TYPE0, I_ITEMS_PURCHASED, I_FIRST_TS, I_LAST_TS, I_LAST_PURCHASE_TS,
 I_FIRST_ORDER_TS, I_ORDER_COUNT, I_SESSION_COUNT, I_SESSION_EVENTS, I_SESSION_FLAGS,
 I_CART_SESSIONS, I_CONVERTED, I_RECENT_COUNT) = (
    st.I_EVENT_COUNT, st.I_TYPE0, st.I_ITEMS_PURCHASED, st.I_FIRST_TS, st.I_LAST_TS,
    st.I_LAST_PURCHASE_TS, st.I_FIRST_ORDER_TS, st.I_ORDER_COUNT, st.I_SESSION_COUNT,
    st.I_SESSION_EVENTS, st.I_SESSION_FLAGS, st.I_CART_SESSIONS, st.I_CONVERTED_CART_SESSIONS,
    st.I_RECENT_COUNT)
_HAS_CART, _HAS_PURCHASE = st.SESSION_HAS_CART, st.SESSION_HAS_PURCHASE
F_SPEND, F_REFUND, F_DEC_EV, F_DEC_SP = st.F_SPEND, st.F_REFUND, st.F_DECAYED_EVENTS, \
    st.F_DECAYED_SPEND

# Column order of the numeric stored rows written by _stored_row.
OUT_INT = (
    "event_count", "view_count", "add_to_cart_count", "remove_from_cart_count",
    "purchase_count", "refund_count", "order_count", "items_purchased", "rfm_frequency",
    "first_event_ts", "last_event_ts", "last_purchase_ts", "session_count",
    "last_session_events", "distinct_items_viewed",
    *(f"events_{label}" for label, _, _ in cat.WINDOWS),
)
OUT_FLOAT = (
    "spend_total", "refund_total", "refund_rate", "avg_order_value", "rfm_monetary",
    "purchase_interarrival_mean_s", "session_events_mean", "view_to_cart_rate",
    "cart_to_purchase_rate", "cart_abandonment_rate",
    *(f"decayed_events_{label}" for label, _ in cat.HALF_LIVES),
    *(f"decayed_spend_{label}" for label, _ in cat.HALF_LIVES),
    *(f"spend_{label}" for label, _, _ in cat.WINDOWS),
    *(f"interest_top{k}_weight" for k in range(1, _TOP + 1)),
)
_O_WIN_I = OUT_INT.index(f"events_{cat.WINDOWS[0][0]}")
_O_DEC_F = OUT_FLOAT.index(f"decayed_events_{cat.HALF_LIVES[0][0]}")
_O_WIN_F = OUT_FLOAT.index(f"spend_{cat.WINDOWS[0][0]}")
_O_TOP_F = OUT_FLOAT.index("interest_top1_weight")


@intrinsic
def _prefetch(typingctx, arr, i, j):
    """Hint the CPU to fetch arr[i, j]'s cache line: per-user rows are random accesses."""
    sig = types.void(arr, i, j)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1], args[2]],
                                       wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 1), ir.Constant(i32, 3),
                          ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


_PF = 6  # prefetch distance in events (rows for i + 2 * _PF, ring slots for i + _PF)


@njit(**_JIT)
def _apply(uidx, ts, typ, price, qty, item, catg, item_hash, ints, floats, win_count,
           win_spend, win_head, cat_code, cat_weight, hll, recent, eff, emit, out_i, out_f,
           out_top, out_recent):
    rows = 0
    n = uidx.shape[0]
    for i in range(n):
        if i + 2 * _PF < n:  # rows of a later event: the state is larger than the caches
            v = uidx[i + 2 * _PF]
            _prefetch(ints, v, 0)
            _prefetch(ints, v, N_INT // 2)
            _prefetch(ints, v, N_INT - 1)
            _prefetch(floats, v, 0)
            _prefetch(floats, v, st.N_FLOAT - 1)
            _prefetch(win_head, v, 0)
            _prefetch(win_head, v, 2 * _NWIN - 1)
            _prefetch(cat_code, v, 0)
            _prefetch(cat_weight, v, 0)
            _prefetch(cat_weight, v, _SLOTS - 1)
        if i + _PF < n:  # the ring slots and registers it will touch (its heads are cached)
            v = uidx[i + _PF]
            for r in range(_NWIN):  # a slot's count, bucket and spend share 16 bytes
                _prefetch(win_spend, v, _OFFSETS[r] + win_head[v, _NWIN + r])
            _prefetch(recent, v, ints[v, I_RECENT_COUNT] % _RECENT)
            if item[i + _PF] >= 0:
                _prefetch(hll, v, (item_hash[item[i + _PF]] >> (64 - _HLL_P)) & (_HLL_M - 1))
        u = uidx[i]
        t = ts[i]
        e = typ[i]
        amount = 0.0
        if e == PURCHASE or e == REFUND:
            p = price[i]
            if p == p:  # NaN price counts as 0 (validation forbids it anyway)
                amount = min(p * qty[i], _MAX_AMOUNT)
        if ints[u, I_EVENT_COUNT] == 0:
            ints[u, I_FIRST_TS] = t
            ints[u, I_LAST_TS] = t
            ints[u, I_SESSION_COUNT] = 1
            for r in range(_NWIN):
                _enter_bucket(win_count, win_spend, win_head, u, r, t // _WIDTHS[r])
        else:
            last = ints[u, I_LAST_TS]
            if t < last:  # late event: effective time is the user's newest
                t = last
            dt = t - last
            if dt > 0:
                ints[u, I_LAST_TS] = t
                fs = decay_factors(dt)
                for h in range(_N_HL):
                    floats[u, F_DEC_EV + h] *= fs[h]
                    floats[u, F_DEC_SP + h] *= fs[h]
                for s in range(_SLOTS):
                    cat_weight[u, s] *= fs[_HL_INTEREST]
                if dt > _GAP:
                    ints[u, I_SESSION_COUNT] += 1
                    ints[u, I_SESSION_EVENTS] = 0
                    ints[u, I_SESSION_FLAGS] = 0
                for r in range(_NWIN):
                    head = win_head[u, r]
                    if t >= (head + 1) * _WIDTHS[r]:  # a new bucket
                        _enter_bucket(win_count, win_spend, win_head, u, r, t // _WIDTHS[r])
        eff[i] = t
        ints[u, I_EVENT_COUNT] += 1
        ints[u, I_TYPE0 + e] += 1
        ints[u, I_SESSION_EVENTS] += 1
        for h in range(_N_HL):
            floats[u, F_DEC_EV + h] += 1.0
        flags = ints[u, I_SESSION_FLAGS]
        if e == PURCHASE:
            ints[u, I_ITEMS_PURCHASED] += qty[i]
            floats[u, F_SPEND] += amount
            for h in range(_N_HL):
                floats[u, F_DEC_SP + h] += amount
            if ints[u, I_LAST_PURCHASE_TS] != t:  # a new order
                ints[u, I_ORDER_COUNT] += 1
                if ints[u, I_ORDER_COUNT] == 1:
                    ints[u, I_FIRST_ORDER_TS] = t
                ints[u, I_LAST_PURCHASE_TS] = t
            if not flags & _HAS_PURCHASE:
                ints[u, I_SESSION_FLAGS] = flags | _HAS_PURCHASE
                if flags & _HAS_CART:
                    ints[u, I_CONVERTED] += 1
        elif e == REFUND:
            floats[u, F_REFUND] += amount
        elif e == ADD_TO_CART and not flags & _HAS_CART:
            ints[u, I_SESSION_FLAGS] = flags | _HAS_CART
            ints[u, I_CART_SESSIONS] += 1
            if flags & _HAS_PURCHASE:
                ints[u, I_CONVERTED] += 1
        for r in range(_NWIN):
            s = _OFFSETS[r] + win_head[u, _NWIN + r]
            win_count[u, s, 0] += 1
            if e == PURCHASE:
                win_spend[u, s] += amount
        c = catg[i]
        if c >= 0 and _INTEREST_W[e] > 0.0:
            _add_interest(cat_code, cat_weight, u, c, _INTEREST_W[e])
        it = item[i]
        if it >= 0:
            if e == VIEW:
                _hll_add(hll, u, item_hash[it])
            recent[u, ints[u, I_RECENT_COUNT] % _RECENT] = it
            ints[u, I_RECENT_COUNT] += 1
        if emit.shape[0] > 0 and emit[i]:  # a stored row as of this event (replay, models)
            _stored_row(u, t, ints, floats, win_count, win_spend, win_head, cat_code,
                        cat_weight, hll, recent, out_i, out_f, out_top, out_recent, rows)
            rows += 1
    return rows


@njit(**_JIT)
def _enter_bucket(win_count, win_spend, win_head, u, r, b):
    """Make bucket b ring r's newest; its slot restarts unless it already holds bucket b."""
    slot = b % _SIZES[r]
    win_head[u, r] = b
    win_head[u, _NWIN + r] = slot
    s = _OFFSETS[r] + slot
    if win_count[u, s, 1] != b:
        win_count[u, s, 0] = 0
        win_count[u, s, 1] = b
        win_spend[u, s] = 0.0


@njit(**_JIT)
def _add_interest(cat_code, cat_weight, u, c, w):
    empty = -1
    for s in range(_SLOTS):
        cc = cat_code[u, s]
        if cc == c:
            cat_weight[u, s] += w
            return
        if cc < 0 and empty < 0:
            empty = s
    if empty < 0:  # all slots taken: replace the smallest weight (lowest slot on ties)
        empty = 0
        for s in range(1, _SLOTS):
            if cat_weight[u, s] < cat_weight[u, empty]:
                empty = s
    cat_code[u, empty] = c
    cat_weight[u, empty] = w


@njit(**_JIT)
def _hll_add(hll, u, h):
    reg = (h >> (64 - _HLL_P)) & (_HLL_M - 1)
    rank = 1
    b = 63 - _HLL_P
    while b >= 0 and ((h >> b) & 1) == 0:
        rank += 1
        b -= 1
    if rank > hll[u, reg]:
        hll[u, reg] = rank


@njit(**_JIT)
def _stored_row(u, tw, ints, floats, win_count, win_spend, win_head, cat_code, cat_weight,
                hll, recent, out_i, out_f, out_top, out_recent, j):
    """Write user u's numeric stored values (windows at time tw) into row j of the outputs."""
    n_ev = ints[u, I_EVENT_COUNT]
    for k in range(_N_TYPES):
        out_i[j, 1 + k] = ints[u, I_TYPE0 + k]
    orders = ints[u, I_ORDER_COUNT]
    out_i[j, 0] = n_ev
    out_i[j, 6] = orders
    out_i[j, 7] = ints[u, I_ITEMS_PURCHASED]
    out_i[j, 8] = orders
    out_i[j, 9] = ints[u, I_FIRST_TS]
    out_i[j, 10] = ints[u, I_LAST_TS]
    out_i[j, 11] = ints[u, I_LAST_PURCHASE_TS]
    out_i[j, 12] = ints[u, I_SESSION_COUNT]
    out_i[j, 13] = ints[u, I_SESSION_EVENTS]
    out_i[j, 14] = _hll_estimate(hll, u)
    spend = floats[u, F_SPEND]
    out_f[j, 0] = spend
    out_f[j, 1] = floats[u, F_REFUND]
    out_f[j, 2] = floats[u, F_REFUND] / spend if spend > 0.0 else 0.0
    out_f[j, 3] = spend / orders if orders > 0 else 0.0
    out_f[j, 4] = spend
    gap = ints[u, I_LAST_PURCHASE_TS] - ints[u, I_FIRST_ORDER_TS]
    out_f[j, 5] = gap / 1e6 / (orders - 1) if orders > 1 else 0.0
    sessions = ints[u, I_SESSION_COUNT]
    out_f[j, 6] = n_ev / sessions if sessions > 0 else 0.0
    views, carts = ints[u, I_TYPE0 + VIEW], ints[u, I_TYPE0 + ADD_TO_CART]
    out_f[j, 7] = carts / views if views > 0 else 0.0
    out_f[j, 8] = ints[u, I_TYPE0 + PURCHASE] / carts if carts > 0 else 0.0
    cs = ints[u, I_CART_SESSIONS]
    out_f[j, 9] = (cs - ints[u, I_CONVERTED]) / cs if cs > 0 else 0.0
    for h in range(2 * _N_HL):
        out_f[j, _O_DEC_F + h] = floats[u, F_DEC_EV + h]
    for r in range(_NWIN):
        size = _SIZES[r]
        head = win_head[u, r]
        count = 0
        spend_w = 0.0
        if n_ev > 0:
            for k in range(max(head, tw // _WIDTHS[r]) - size + 1, head + 1):
                s = _OFFSETS[r] + k % size
                if win_count[u, s, 1] == k:  # the slot holds bucket k (not an older one)
                    count += win_count[u, s, 0]
                    spend_w += win_spend[u, s]
        out_i[j, _O_WIN_I + r] = count
        out_f[j, _O_WIN_F + r] = spend_w
    taken = 0  # bit s: slot s already ranked
    for k in range(_TOP):
        best = -1
        for s in range(_SLOTS):
            if cat_code[u, s] >= 0 and not (taken >> s) & 1:
                if best < 0 or cat_weight[u, s] > cat_weight[u, best]:
                    best = s
        if best >= 0:
            taken |= 1 << best
            out_top[j, k] = cat_code[u, best]
            out_f[j, _O_TOP_F + k] = cat_weight[u, best]
        else:
            out_top[j, k] = -1
            out_f[j, _O_TOP_F + k] = 0.0
    n_recent = min(ints[u, I_RECENT_COUNT], _RECENT)
    for k in range(_RECENT):
        out_recent[j, k] = -1
        if k < n_recent:
            out_recent[j, k] = recent[u, (ints[u, I_RECENT_COUNT] - 1 - k) % _RECENT]


@njit(**_JIT)
def _hll_estimate(hll, u):
    s = 0.0
    zeros = 0
    for j in range(_HLL_M):
        r = hll[u, j]
        s += _POW2_NEG[r]
        if r == 0:
            zeros += 1
    if zeros == _HLL_M:
        return 0
    e = _HLL_ALPHA * _HLL_M * _HLL_M / s
    if e <= 2.5 * _HLL_M and zeros > 0:
        e = _HLL_M * math.log(_HLL_M / zeros)
    return np.int64(math.floor(e + 0.5))


@njit(**_JIT)
def _stored_rows(users, tw, ints, floats, win_count, win_spend, win_head, cat_code, cat_weight,
                 hll, recent, out_i, out_f, out_top, out_recent):
    for j in range(users.shape[0]):
        _stored_row(users[j], tw[j], ints, floats, win_count, win_spend, win_head, cat_code,
                    cat_weight, hll, recent, out_i, out_f, out_top, out_recent, j)


@njit(**_JIT)
def decay_factors(dt):
    """2 ** (-dt / half-life) for the four half-lives (1h, 1d, 7d, 30d) from one exp.

    ``g = 2 ** (-dt / 5040 h)`` and the factors are ``g ** 5040, g ** 210, g ** 30, g ** 7``
    by this fixed chain of products (the Python reference repeats it step for step).
    """
    g = math.exp(-(float(dt) * _BASE_RATE))
    g2 = g * g
    g7 = g2 * g2 * g2 * g
    g30 = g7 * g7 * g7 * g7 * g2
    g210 = g30 * g30 * g30 * g30 * g30 * g30 * g30
    g840 = (g210 * g210) * (g210 * g210)
    g5040 = (g840 * g840) * (g840 * g840) * (g840 * g840)
    return (g5040, g210, g30, g7)


@njit(**_JIT)
def _decay(values, last_ts, t, h, out):
    for i in range(values.shape[0]):
        dt = t[i] - last_ts[i]
        out[i] = values[i] * decay_factors(dt)[h] if dt > 0 else values[i]


@njit(**_JIT)
def _since(src, last_ts, t, scale, out):
    for i in range(src.shape[0]):
        tt = max(t[i], last_ts[i])
        out[i] = -1.0 if src[i] == _NO_TS else (tt - src[i]) / scale


@njit(**_JIT)
def _next_window_change(users, after, ints, win_count, win_head, out):
    for j in range(users.shape[0]):
        u = users[j]
        best = _NO_TS
        if ints[u, I_EVENT_COUNT] > 0:
            for r in range(_NWIN):
                size, width, head = _SIZES[r], _WIDTHS[r], win_head[u, r]
                b = max(head, after[j] // width)
                for k in range(b - size + 1, head + 1):  # oldest non-empty bucket expires first
                    s = _OFFSETS[r] + k % size
                    if win_count[u, s, 1] == k and win_count[u, s, 0] > 0:
                        at = (k + size) * width
                        if best == _NO_TS or at < best:
                            best = at
                        break
        out[j] = best


# ---------------------------------------------------------------------------------------------
# Public wrappers: check dtypes and shapes, then call the kernels.

_EVENT_COLUMNS = {  # name: dtype the kernel expects
    "user_idx": np.int64, "ts": np.int64, "type": np.int8, "price": np.float64,
    "quantity": np.int64, "item_code": np.int32, "category_code": np.int32,
}


def _checked(name: str, arr, dtype, n: int | None = None) -> np.ndarray:
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
    """Apply events given as typed columns with codes from ``state`` (see ``_EVENT_COLUMNS``)."""
    n = len(user_idx)
    cols = {
        name: _checked(name, arr, dtype, n)
        for (name, dtype), arr in zip(
            _EVENT_COLUMNS.items(),
            (user_idx, ts, type, price, quantity, item_code, category_code), strict=True,
        )
    }
    emit = np.zeros(0, dtype=np.uint8)
    if event_rows is not None and event_rows is not False:
        emit = np.ones(n, dtype=np.uint8) if event_rows is True else np.ascontiguousarray(
            _checked("event_rows", event_rows, np.bool_, n), dtype=np.uint8)
    outs = _out_arrays(int(emit.sum()))
    if n == 0:
        eff = np.zeros(0, dtype=np.int64)
        return eff if event_rows is None else (eff, _named(state, *outs, names=row_names))
    if cols["user_idx"].min() < 0 or cols["user_idx"].max() >= state.n_users:
        raise ValueError(f"user_idx: expected values in [0, {state.n_users}), got "
                         f"[{cols['user_idx'].min()}, {cols['user_idx'].max()}]")
    if cols["type"].min() < 0 or cols["type"].max() >= _N_TYPES:
        raise ValueError(f"type: expected codes in [0, {_N_TYPES}), got "
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
            np.empty((n, _TOP), dtype=np.int32), np.empty((n, _RECENT), dtype=np.int32))


def _named(state: UserState, out_i, out_f, out_top, out_recent,
           names=None) -> dict[str, np.ndarray]:
    wanted = cat.stored_names() if names is None else [n for n in cat.stored_names()
                                                       if n in names]
    cols: dict[str, np.ndarray] = {}
    cols.update({name: out_i[:, k] for k, name in enumerate(OUT_INT)})
    cols.update({name: out_f[:, k] for k, name in enumerate(OUT_FLOAT)})
    for k in range(_TOP):
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
    last = _checked("last_event_ts", stored["last_event_ts"], np.int64)
    n = len(last)
    t = _times(t_us, n)
    served: dict[str, np.ndarray] = {}
    for f in cat.FEATURES:
        if names is not None and f.name not in names:
            continue
        if f.kind == "decay":
            out = np.empty(n, dtype=np.float64)
            _decay(_checked(f.name, stored[f.name], np.float64, n), last, t, f.half_life_index,
                   out)
        elif f.kind == "since":
            out = np.empty(n, dtype=np.float64)
            _since(_checked(f.source, stored[f.source], np.int64, n), last, t,
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
