"""Kernels that apply events to the per-user state arrays (one pass, in log order)."""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from online import state as st
from online.kernels.jit import JIT
from online.kernels.layout import (
    ADD_TO_CART,
    F_DEC_EV,
    F_DEC_SP,
    F_REFUND,
    F_SPEND,
    GAP,
    HAS_CART,
    HAS_PURCHASE,
    HL_INTEREST,
    HLL_M,
    HLL_P,
    I_CART_SESSIONS,
    I_CONVERTED,
    I_EVENT_COUNT,
    I_FIRST_ORDER_TS,
    I_FIRST_TS,
    I_ITEMS_PURCHASED,
    I_LAST_PURCHASE_TS,
    I_LAST_TS,
    I_ORDER_COUNT,
    I_RECENT_COUNT,
    I_SESSION_COUNT,
    I_SESSION_EVENTS,
    I_SESSION_FLAGS,
    I_TYPE0,
    INTEREST_W,
    MAX_AMOUNT,
    N_HL,
    N_INT,
    NWIN,
    OFFSETS,
    PURCHASE,
    RECENT,
    REFUND,
    SIZES,
    SLOTS,
    VIEW,
    WIDTHS,
)
from online.kernels.stored import _stored_row, decay_factors


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


@njit(**JIT)
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
            _prefetch(win_head, v, 2 * NWIN - 1)
            _prefetch(cat_code, v, 0)
            _prefetch(cat_weight, v, 0)
            _prefetch(cat_weight, v, SLOTS - 1)
        if i + _PF < n:  # the ring slots and registers it will touch (its heads are cached)
            v = uidx[i + _PF]
            for r in range(NWIN):  # a slot's count, bucket and spend share 16 bytes
                _prefetch(win_spend, v, OFFSETS[r] + win_head[v, NWIN + r])
            _prefetch(recent, v, ints[v, I_RECENT_COUNT] % RECENT)
            if item[i + _PF] >= 0:
                _prefetch(hll, v, (item_hash[item[i + _PF]] >> (64 - HLL_P)) & (HLL_M - 1))
        u = uidx[i]
        t = ts[i]
        e = typ[i]
        amount = 0.0
        if e == PURCHASE or e == REFUND:
            p = price[i]
            if p == p:  # NaN price counts as 0 (validation forbids it anyway)
                amount = min(p * qty[i], MAX_AMOUNT)
        if ints[u, I_EVENT_COUNT] == 0:
            ints[u, I_FIRST_TS] = t
            ints[u, I_LAST_TS] = t
            ints[u, I_SESSION_COUNT] = 1
            for r in range(NWIN):
                _enter_bucket(win_count, win_spend, win_head, u, r, t // WIDTHS[r])
        else:
            last = ints[u, I_LAST_TS]
            if t < last:  # late event: effective time is the user's newest
                t = last
            dt = t - last
            if dt > 0:
                ints[u, I_LAST_TS] = t
                fs = decay_factors(dt)
                for h in range(N_HL):
                    floats[u, F_DEC_EV + h] *= fs[h]
                    floats[u, F_DEC_SP + h] *= fs[h]
                for s in range(SLOTS):
                    cat_weight[u, s] *= fs[HL_INTEREST]
                if dt > GAP:
                    ints[u, I_SESSION_COUNT] += 1
                    ints[u, I_SESSION_EVENTS] = 0
                    ints[u, I_SESSION_FLAGS] = 0
                for r in range(NWIN):
                    head = win_head[u, r]
                    if t >= (head + 1) * WIDTHS[r]:  # a new bucket
                        _enter_bucket(win_count, win_spend, win_head, u, r, t // WIDTHS[r])
        eff[i] = t
        ints[u, I_EVENT_COUNT] += 1
        ints[u, I_TYPE0 + e] += 1
        ints[u, I_SESSION_EVENTS] += 1
        for h in range(N_HL):
            floats[u, F_DEC_EV + h] += 1.0
        flags = ints[u, I_SESSION_FLAGS]
        if e == PURCHASE:
            ints[u, I_ITEMS_PURCHASED] += qty[i]
            floats[u, F_SPEND] += amount
            for h in range(N_HL):
                floats[u, F_DEC_SP + h] += amount
            if ints[u, I_LAST_PURCHASE_TS] != t:  # a new order
                ints[u, I_ORDER_COUNT] += 1
                if ints[u, I_ORDER_COUNT] == 1:
                    ints[u, I_FIRST_ORDER_TS] = t
                ints[u, I_LAST_PURCHASE_TS] = t
            if not flags & HAS_PURCHASE:
                ints[u, I_SESSION_FLAGS] = flags | HAS_PURCHASE
                if flags & HAS_CART:
                    ints[u, I_CONVERTED] += 1
        elif e == REFUND:
            floats[u, F_REFUND] += amount
        elif e == ADD_TO_CART and not flags & HAS_CART:
            ints[u, I_SESSION_FLAGS] = flags | HAS_CART
            ints[u, I_CART_SESSIONS] += 1
            if flags & HAS_PURCHASE:
                ints[u, I_CONVERTED] += 1
        for r in range(NWIN):
            s = OFFSETS[r] + win_head[u, NWIN + r]
            win_count[u, s, 0] += 1
            if e == PURCHASE:
                win_spend[u, s] += amount
        c = catg[i]
        if c >= 0 and INTEREST_W[e] > 0.0:
            _add_interest(cat_code, cat_weight, u, c, INTEREST_W[e])
        it = item[i]
        if it >= 0:
            if e == VIEW:
                _hll_add(hll, u, item_hash[it])
            recent[u, ints[u, I_RECENT_COUNT] % RECENT] = it
            ints[u, I_RECENT_COUNT] += 1
        if emit.shape[0] > 0 and emit[i]:  # a stored row as of this event (replay, models)
            _stored_row(u, t, ints, floats, win_count, win_spend, win_head, cat_code,
                        cat_weight, hll, recent, out_i, out_f, out_top, out_recent, rows)
            rows += 1
    return rows


@njit(**JIT)
def _enter_bucket(win_count, win_spend, win_head, u, r, b):
    """Make bucket b ring r's newest; its slot restarts unless it already holds bucket b."""
    slot = b % SIZES[r]
    win_head[u, r] = b
    win_head[u, NWIN + r] = slot
    s = OFFSETS[r] + slot
    if win_count[u, s, 1] != b:
        win_count[u, s, 0] = 0
        win_count[u, s, 1] = b
        win_spend[u, s] = 0.0


@njit(**JIT)
def _add_interest(cat_code, cat_weight, u, c, w):
    empty = -1
    for s in range(SLOTS):
        cc = cat_code[u, s]
        if cc == c:
            cat_weight[u, s] += w
            return
        if cc < 0 and empty < 0:
            empty = s
    if empty < 0:  # all slots taken: replace the smallest weight (lowest slot on ties)
        empty = 0
        for s in range(1, SLOTS):
            if cat_weight[u, s] < cat_weight[u, empty]:
                empty = s
    cat_code[u, empty] = c
    cat_weight[u, empty] = w


@njit(**JIT)
def _hll_add(hll, u, h):
    reg = (h >> (64 - HLL_P)) & (HLL_M - 1)
    rank = 1
    b = 63 - HLL_P
    while b >= 0 and ((h >> b) & 1) == 0:
        rank += 1
        b -= 1
    if rank > hll[u, reg]:
        hll[u, reg] = rank
