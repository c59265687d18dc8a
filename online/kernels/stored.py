"""Kernels that read stored values out of the state and turn them into served values at T."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from online.kernels.jit import JIT
from online.kernels.layout import (
    ADD_TO_CART,
    BASE_RATE,
    F_DEC_EV,
    F_REFUND,
    F_SPEND,
    HLL_ALPHA,
    HLL_M,
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
    I_TYPE0,
    N_HL,
    N_TYPES,
    NO_TS,
    NWIN,
    O_ABANDONMENT,
    O_AOV,
    O_CART_TO_PURCHASE,
    O_DEC_F,
    O_DISTINCT_ITEMS,
    O_EVENT_COUNT,
    O_FIRST_EVENT_TS,
    O_INTERARRIVAL,
    O_ITEMS_PURCHASED,
    O_LAST_EVENT_TS,
    O_LAST_PURCHASE_TS,
    O_LAST_SESSION_EVENTS,
    O_ORDER_COUNT,
    O_REFUND,
    O_REFUND_RATE,
    O_RFM_FREQUENCY,
    O_RFM_MONETARY,
    O_SESSION_COUNT,
    O_SESSION_MEAN,
    O_SPEND,
    O_TOP_F,
    O_TYPE0,
    O_VIEW_TO_CART,
    O_WIN_F,
    O_WIN_I,
    OFFSETS,
    POW2_NEG,
    PURCHASE,
    RECENT,
    SIZES,
    SLOTS,
    TOP,
    VIEW,
    WIDTHS,
)


@njit(**JIT)
def _stored_row(u, tw, ints, floats, win_count, win_spend, win_head, cat_code, cat_weight,
                hll, recent, out_i, out_f, out_top, out_recent, j):
    """Write user u's numeric stored values (windows at time tw) into row j of the outputs."""
    n_ev = ints[u, I_EVENT_COUNT]
    for k in range(N_TYPES):
        out_i[j, O_TYPE0 + k] = ints[u, I_TYPE0 + k]
    orders = ints[u, I_ORDER_COUNT]
    out_i[j, O_EVENT_COUNT] = n_ev
    out_i[j, O_ORDER_COUNT] = orders
    out_i[j, O_ITEMS_PURCHASED] = ints[u, I_ITEMS_PURCHASED]
    out_i[j, O_RFM_FREQUENCY] = orders
    out_i[j, O_FIRST_EVENT_TS] = ints[u, I_FIRST_TS]
    out_i[j, O_LAST_EVENT_TS] = ints[u, I_LAST_TS]
    out_i[j, O_LAST_PURCHASE_TS] = ints[u, I_LAST_PURCHASE_TS]
    out_i[j, O_SESSION_COUNT] = ints[u, I_SESSION_COUNT]
    out_i[j, O_LAST_SESSION_EVENTS] = ints[u, I_SESSION_EVENTS]
    out_i[j, O_DISTINCT_ITEMS] = _hll_estimate(hll, u)
    spend = floats[u, F_SPEND]
    out_f[j, O_SPEND] = spend
    out_f[j, O_REFUND] = floats[u, F_REFUND]
    out_f[j, O_REFUND_RATE] = floats[u, F_REFUND] / spend if spend > 0.0 else 0.0
    out_f[j, O_AOV] = spend / orders if orders > 0 else 0.0
    out_f[j, O_RFM_MONETARY] = spend
    gap = ints[u, I_LAST_PURCHASE_TS] - ints[u, I_FIRST_ORDER_TS]
    out_f[j, O_INTERARRIVAL] = gap / 1e6 / (orders - 1) if orders > 1 else 0.0
    sessions = ints[u, I_SESSION_COUNT]
    out_f[j, O_SESSION_MEAN] = n_ev / sessions if sessions > 0 else 0.0
    views, carts = ints[u, I_TYPE0 + VIEW], ints[u, I_TYPE0 + ADD_TO_CART]
    out_f[j, O_VIEW_TO_CART] = carts / views if views > 0 else 0.0
    out_f[j, O_CART_TO_PURCHASE] = ints[u, I_TYPE0 + PURCHASE] / carts if carts > 0 else 0.0
    cs = ints[u, I_CART_SESSIONS]
    out_f[j, O_ABANDONMENT] = (cs - ints[u, I_CONVERTED]) / cs if cs > 0 else 0.0
    for h in range(2 * N_HL):
        out_f[j, O_DEC_F + h] = floats[u, F_DEC_EV + h]
    _window_row(u, tw, n_ev, win_count, win_spend, win_head, out_i, out_f, j)
    taken = 0  # bit s: slot s already ranked
    for k in range(TOP):
        best = -1
        for s in range(SLOTS):
            if cat_code[u, s] >= 0 and not (taken >> s) & 1:
                if best < 0 or cat_weight[u, s] > cat_weight[u, best]:
                    best = s
        if best >= 0:
            taken |= 1 << best
            out_top[j, k] = cat_code[u, best]
            out_f[j, O_TOP_F + k] = cat_weight[u, best]
        else:
            out_top[j, k] = -1
            out_f[j, O_TOP_F + k] = 0.0
    n_recent = min(ints[u, I_RECENT_COUNT], RECENT)
    for k in range(RECENT):
        out_recent[j, k] = -1
        if k < n_recent:
            out_recent[j, k] = recent[u, (ints[u, I_RECENT_COUNT] - 1 - k) % RECENT]


@njit(**JIT)
def _window_row(u, tw, n_ev, win_count, win_spend, win_head, out_i, out_f, j):
    """Write user u's window event counts and spend at time tw into row j (the only
    stored values that depend on the time they are read at)."""
    for r in range(NWIN):
        size = SIZES[r]
        head = win_head[u, r]
        count = 0
        spend_w = 0.0
        if n_ev > 0:
            k0 = max(head, tw // WIDTHS[r]) - size + 1
            slot = k0 % size  # then stepped: one division per window, not per bucket
            for k in range(k0, head + 1):
                s = OFFSETS[r] + slot
                if win_count[u, s, 1] == k:  # the slot holds bucket k (not an older one)
                    count += win_count[u, s, 0]
                    spend_w += win_spend[u, s]
                slot += 1
                if slot == size:
                    slot = 0
        out_i[j, O_WIN_I + r] = count
        out_f[j, O_WIN_F + r] = spend_w


@njit(**JIT)
def _hll_estimate(hll, u):
    s = 0.0
    zeros = 0
    for j in range(HLL_M):
        r = hll[u, j]
        s += POW2_NEG[r]
        if r == 0:
            zeros += 1
    if zeros == HLL_M:
        return 0
    e = HLL_ALPHA * HLL_M * HLL_M / s
    if e <= 2.5 * HLL_M and zeros > 0:
        e = HLL_M * math.log(HLL_M / zeros)
    return np.int64(math.floor(e + 0.5))


@njit(**JIT)
def _stored_rows(users, tw, ints, floats, win_count, win_spend, win_head, cat_code, cat_weight,
                 hll, recent, out_i, out_f, out_top, out_recent):
    for j in range(users.shape[0]):
        _stored_row(users[j], tw[j], ints, floats, win_count, win_spend, win_head, cat_code,
                    cat_weight, hll, recent, out_i, out_f, out_top, out_recent, j)


@njit(**JIT)
def decay_factors(dt):
    """2 ** (-dt / half-life) for the four half-lives (1h, 1d, 7d, 30d) from one exp.

    ``g = 2 ** (-dt / 5040 h)`` and the factors are ``g ** 5040, g ** 210, g ** 30, g ** 7``
    by this fixed chain of products (a relative error below 1e-12; tests compare it with the
    definition).
    """
    g = math.exp(-(float(dt) * BASE_RATE))
    g2 = g * g
    g7 = g2 * g2 * g2 * g
    g30 = g7 * g7 * g7 * g7 * g2
    g210 = g30 * g30 * g30 * g30 * g30 * g30 * g30
    g840 = (g210 * g210) * (g210 * g210)
    g5040 = (g840 * g840) * (g840 * g840) * (g840 * g840)
    return (g5040, g210, g30, g7)


@njit(**JIT)
def _decay(values, last_ts, t, h, out):
    for i in range(values.shape[0]):
        dt = t[i] - last_ts[i]
        out[i] = values[i] * decay_factors(dt)[h] if dt > 0 else values[i]


@njit(**JIT)
def _since(src, last_ts, t, scale, out):
    for i in range(src.shape[0]):
        tt = max(t[i], last_ts[i])
        out[i] = -1.0 if src[i] == NO_TS else (tt - src[i]) / scale


@njit(**JIT)
def _next_window_change(users, after, ints, win_count, win_head, out):
    for j in range(users.shape[0]):
        u = users[j]
        best = NO_TS
        if ints[u, I_EVENT_COUNT] > 0:
            for r in range(NWIN):
                size, width, head = SIZES[r], WIDTHS[r], win_head[u, r]
                b = max(head, after[j] // width)
                slot = (b - size + 1) % size
                for k in range(b - size + 1, head + 1):  # oldest non-empty bucket expires first
                    s = OFFSETS[r] + slot
                    if win_count[u, s, 1] == k and win_count[u, s, 0] > 0:
                        at = (k + size) * width
                        if best == NO_TS or at < best:
                            best = at
                        break
                    slot += 1
                    if slot == size:
                        slot = 0
        out[j] = best
