"""The layout the kernels read and write: state indices, event types, output columns.

Every index here is derived from ``online.state`` and ``online.catalogue``; the kernels use
these names instead of literal positions, so a change of layout cannot silently shift a column.
"""

from __future__ import annotations

import math

import numpy as np

from online import catalogue as cat
from online import state as st
from online.events import MAX_LINE_AMOUNT

VIEW, ADD_TO_CART, REMOVE_FROM_CART, PURCHASE, REFUND = range(5)
N_TYPES = 5
BASE_RATE = math.log(2.0) / cat.DECAY_BASE_US
N_HL = len(cat.HALF_LIVES)
HL_INTEREST = [hl for _, hl in cat.HALF_LIVES].index(cat.INTEREST_HALF_LIFE_US)
INTEREST_W = np.array(cat.INTEREST_WEIGHTS, dtype=np.float64)
SLOTS = cat.INTEREST_SLOTS
TOP = cat.INTEREST_TOP
RECENT = cat.RECENT_ITEMS
GAP = cat.SESSION_GAP_US
NWIN = len(cat.WINDOWS)
WIDTHS, SIZES, OFFSETS = st.WIN_WIDTHS, st.WIN_SIZES, st.WIN_OFFSETS
HLL_P = cat.HLL_P
HLL_M = st.HLL_M
HLL_ALPHA = 0.7213 / (1.0 + 1.079 / HLL_M)
POW2_NEG = np.array([2.0**-r for r in range(66 - HLL_P)])  # 2**-rank, exact
NO_TS = cat.NO_TS
# Validation rejects a larger line amount; the kernel saturates too (an Event built without
# validation), so every money sum stays finite: n events add at most n x 1e12.
MAX_AMOUNT = float(MAX_LINE_AMOUNT)
N_INT = st.N_INT
(I_EVENT_COUNT, I_TYPE0, I_ITEMS_PURCHASED, I_FIRST_TS, I_LAST_TS, I_LAST_PURCHASE_TS,
 I_FIRST_ORDER_TS, I_ORDER_COUNT, I_SESSION_COUNT, I_SESSION_EVENTS, I_SESSION_FLAGS,
 I_CART_SESSIONS, I_CONVERTED, I_RECENT_COUNT) = (
    st.I_EVENT_COUNT, st.I_TYPE0, st.I_ITEMS_PURCHASED, st.I_FIRST_TS, st.I_LAST_TS,
    st.I_LAST_PURCHASE_TS, st.I_FIRST_ORDER_TS, st.I_ORDER_COUNT, st.I_SESSION_COUNT,
    st.I_SESSION_EVENTS, st.I_SESSION_FLAGS, st.I_CART_SESSIONS, st.I_CONVERTED_CART_SESSIONS,
    st.I_RECENT_COUNT)
HAS_CART, HAS_PURCHASE = st.SESSION_HAS_CART, st.SESSION_HAS_PURCHASE
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
    *(f"interest_top{k}_weight" for k in range(1, TOP + 1)),
)
_OI = {name: k for k, name in enumerate(OUT_INT)}
_OF = {name: k for k, name in enumerate(OUT_FLOAT)}
# type counts sit in type-code order from view_count on (the kernel fills them in a loop)
O_TYPE0 = _OI["view_count"]
assert [_OI[f"{t}_count"] - O_TYPE0 for t in
        ("view", "add_to_cart", "remove_from_cart", "purchase", "refund")] == list(range(5))
(O_EVENT_COUNT, O_ORDER_COUNT, O_ITEMS_PURCHASED, O_RFM_FREQUENCY, O_FIRST_EVENT_TS,
 O_LAST_EVENT_TS, O_LAST_PURCHASE_TS, O_SESSION_COUNT, O_LAST_SESSION_EVENTS,
 O_DISTINCT_ITEMS) = (_OI[n] for n in (
    "event_count", "order_count", "items_purchased", "rfm_frequency", "first_event_ts",
    "last_event_ts", "last_purchase_ts", "session_count", "last_session_events",
    "distinct_items_viewed"))
(O_SPEND, O_REFUND, O_REFUND_RATE, O_AOV, O_RFM_MONETARY, O_INTERARRIVAL, O_SESSION_MEAN,
 O_VIEW_TO_CART, O_CART_TO_PURCHASE, O_ABANDONMENT) = (_OF[n] for n in (
    "spend_total", "refund_total", "refund_rate", "avg_order_value", "rfm_monetary",
    "purchase_interarrival_mean_s", "session_events_mean", "view_to_cart_rate",
    "cart_to_purchase_rate", "cart_abandonment_rate"))
# decayed events then decayed spend, half-lives in order: one block the kernel copies
assert [_OF[f"decayed_{w}_{label}"] - _OF[f"decayed_events_{cat.HALF_LIVES[0][0]}"]
        for w in ("events", "spend") for label, _ in cat.HALF_LIVES] == list(
    range(2 * len(cat.HALF_LIVES)))
O_WIN_I = OUT_INT.index(f"events_{cat.WINDOWS[0][0]}")
O_DEC_F = OUT_FLOAT.index(f"decayed_events_{cat.HALF_LIVES[0][0]}")
O_WIN_F = OUT_FLOAT.index(f"spend_{cat.WINDOWS[0][0]}")
O_TOP_F = OUT_FLOAT.index("interest_top1_weight")
