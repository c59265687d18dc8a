"""Plain-Python reference of every catalogue feature: a dict per user and straightforward loops.

It keeps each user's applied events and recomputes features from that list, so it shares no
state layout with the kernels.  Sums are added in event order (the order the catalogue
documents), so they compare exactly; decay factors come from their definition, not from the
kernels' chain of powers, so decayed values compare to a relative ``DECAY_REL_TOL``.
"""

from __future__ import annotations

import math

from online import catalogue as cat
from online.events import MAX_LINE_AMOUNT
from online.state import HLL_M, stable_hash

VIEW, ADD_TO_CART, REMOVE_FROM_CART, PURCHASE, REFUND = range(5)
TYPE_NAMES = ("view", "add_to_cart", "remove_from_cart", "purchase", "refund")


def amount_of(e: dict) -> float:
    """price x quantity of a purchase or refund (0.0 for others or a missing price), at most
    ``MAX_LINE_AMOUNT``."""
    if e["type"] in (PURCHASE, REFUND) and e["price"] is not None and e["price"] == e["price"]:
        return min(e["price"] * e["quantity"], MAX_LINE_AMOUNT)
    return 0.0


def replay(events: list[dict]) -> dict[str, list[dict]]:
    """Apply events in log order: per user the list of events with their effective ts."""
    users: dict[str, list[dict]] = {}
    for e in events:
        mine = users.setdefault(e["user_id"], [])
        eff = e["ts"] if not mine else max(e["ts"], mine[-1]["eff"])
        mine.append({**e, "eff": eff})
    return users


def decay_factor(dt: int, half_life_us: int) -> float:
    """2 ** (-dt / half-life), straight from the definition.

    The kernels compute it differently (one exponential, then a chain of integer powers), so
    decayed values agree to a relative 1e-9, not bit for bit; ``DECAYED`` names those values.
    """
    return 2.0 ** (-float(dt) / float(half_life_us))


# Names whose values pass through a decay factor: compared with a relative tolerance.
DECAYED = frozenset(f.name for f in cat.FEATURES if f.kind == "decay")
DECAY_REL_TOL = 1e-9


def _decayed(applied: list[dict], half_life_us: int, value_of) -> float:
    # incremental form: decay to each new effective time, then add
    v, last = 0.0, None
    for e in applied:
        if last is not None and e["eff"] > last:
            v = v * decay_factor(e["eff"] - last, half_life_us)
        v = v + value_of(e)
        last = e["eff"]
    return v


def _interest_slots(applied: list[dict]) -> list[list]:
    slots: list[list] = []  # [category, weight] in slot order
    last = None
    for e in applied:
        if last is not None and e["eff"] > last:
            f = decay_factor(e["eff"] - last, cat.INTEREST_HALF_LIFE_US)
            for s in slots:
                s[1] = s[1] * f
        last = e["eff"]
        w = cat.INTEREST_WEIGHTS[e["type"]]
        if e["category"] is None or w <= 0.0:
            continue
        for s in slots:
            if s[0] == e["category"]:
                s[1] = s[1] + w
                break
        else:
            if len(slots) < cat.INTEREST_SLOTS:
                slots.append([e["category"], w])
            else:  # replace the smallest weight, the lowest slot on ties
                m = min(range(len(slots)), key=lambda k: (slots[k][1], k))
                slots[m] = [e["category"], w]
    return slots


def _hll(applied: list[dict]) -> int:
    regs = [0] * HLL_M
    for e in applied:
        if e["type"] != VIEW or e["item_id"] is None:
            continue
        h = stable_hash(e["item_id"])
        reg = (h >> (64 - cat.HLL_P)) & (HLL_M - 1)
        bits = format(h & ((1 << (64 - cat.HLL_P)) - 1), f"0{64 - cat.HLL_P}b")
        rank = len(bits) - len(bits.lstrip("0")) + 1
        regs[reg] = max(regs[reg], rank)
    if all(r == 0 for r in regs):
        return 0
    s = 0.0
    for r in regs:
        s += 2.0 ** -r
    zeros = regs.count(0)
    alpha = 0.7213 / (1.0 + 1.079 / HLL_M)
    est = alpha * HLL_M * HLL_M / s
    if est <= 2.5 * HLL_M and zeros > 0:
        est = HLL_M * math.log(HLL_M / zeros)
    return math.floor(est + 0.5)


def _sessions(applied: list[dict]) -> list[list[dict]]:
    sessions: list[list[dict]] = []
    for e in applied:
        if not sessions or e["eff"] - sessions[-1][-1]["eff"] > cat.SESSION_GAP_US:
            sessions.append([])
        sessions[-1].append(e)
    return sessions


def _ratio(num, den) -> float:
    return num / den if den > 0 else 0.0


def stored(applied: list[dict], at_us: int | None = None) -> dict:
    """Stored values of one user (windows at ``max(at_us, last_event_ts)``)."""
    last = applied[-1]["eff"]
    tw = last if at_us is None else max(at_us, last)
    out: dict = {"event_count": len(applied)}
    for code, name in enumerate(TYPE_NAMES):
        out[f"{name}_count"] = sum(1 for e in applied if e["type"] == code)
    purchases = [e for e in applied if e["type"] == PURCHASE]
    order_times = sorted({e["eff"] for e in purchases})
    out["order_count"] = out["rfm_frequency"] = len(order_times)
    out["items_purchased"] = sum(e["quantity"] for e in purchases)
    spend = 0.0
    for e in purchases:
        spend = spend + amount_of(e)
    refund = 0.0
    for e in applied:
        if e["type"] == REFUND:
            refund = refund + amount_of(e)
    out["spend_total"] = out["rfm_monetary"] = spend
    out["refund_total"] = refund
    out["refund_rate"] = _ratio(refund, spend)
    out["avg_order_value"] = _ratio(spend, len(order_times))
    out["first_event_ts"] = applied[0]["eff"]
    out["last_event_ts"] = last
    out["last_purchase_ts"] = order_times[-1] if order_times else cat.NO_TS
    n_orders = len(order_times)
    out["purchase_interarrival_mean_s"] = (
        (order_times[-1] - order_times[0]) / 1e6 / (n_orders - 1) if n_orders > 1 else 0.0
    )
    for label, hl in cat.HALF_LIVES:
        out[f"decayed_events_{label}"] = _decayed(applied, hl, lambda e: 1.0)
        out[f"decayed_spend_{label}"] = _decayed(
            applied, hl, lambda e: amount_of(e) if e["type"] == PURCHASE else 0.0)
    for label, width, n in cat.WINDOWS:
        bt = tw // width
        count, total = 0, 0.0
        for k in range(bt - n + 1, bt + 1):  # whole buckets (b(T) - n, b(T)], oldest first
            in_bucket = [e for e in applied if e["eff"] // width == k]
            bucket_spend = 0.0
            for e in in_bucket:
                if e["type"] == PURCHASE:
                    bucket_spend = bucket_spend + amount_of(e)
            count += len(in_bucket)
            total = total + bucket_spend
        out[f"events_{label}"] = count
        out[f"spend_{label}"] = total
    sessions = _sessions(applied)
    out["session_count"] = len(sessions)
    out["session_events_mean"] = _ratio(len(applied), len(sessions))
    out["last_session_events"] = len(sessions[-1])
    out["view_to_cart_rate"] = _ratio(out["add_to_cart_count"], out["view_count"])
    out["cart_to_purchase_rate"] = _ratio(out["purchase_count"], out["add_to_cart_count"])
    types = [{e["type"] for e in s} for s in sessions]
    with_cart = [t for t in types if ADD_TO_CART in t]
    abandoned = [t for t in with_cart if PURCHASE not in t]
    out["cart_abandonment_rate"] = _ratio(len(abandoned), len(with_cart))
    slots = _interest_slots(applied)
    ranked = sorted(range(len(slots)), key=lambda k: (-slots[k][1], k))
    for k in range(cat.INTEREST_TOP):
        top = slots[ranked[k]] if k < len(ranked) else [None, 0.0]
        out[f"interest_top{k + 1}"] = top[0]
        out[f"interest_top{k + 1}_weight"] = top[1]
    out["distinct_items_viewed"] = _hll(applied)
    items = [e["item_id"] for e in applied if e["item_id"] is not None]
    out["recent_items"] = items[::-1][: cat.RECENT_ITEMS]
    return {name: out[name] for name in cat.stored_names()}


def served(applied: list[dict], t_us: int) -> dict:
    """Served values of one user at ``t_us`` (taken as at least the user's last event)."""
    values = stored(applied, t_us)
    last = values["last_event_ts"]
    t = max(t_us, last)
    out = {}
    for f in cat.FEATURES:
        if f.kind == "decay":
            v = values[f.name]
            out[f.name] = v * decay_factor(t - last, f.half_life_us) if t > last else v
        elif f.kind == "since":
            src = values[f.source]
            out[f.name] = -1.0 if src == cat.NO_TS else (t - src) / f.scale_us
        else:
            out[f.name] = values[f.name]
    return out


def as_of(events: list[dict], user_id: str, t_us: int) -> dict | None:
    """Served values of ``user_id`` as of T by the prefix rule; None when unknown as of T."""
    applied = [e for e in replay(events).get(user_id, []) if e["eff"] <= t_us]
    return served(applied, t_us) if applied else None


def mismatches(got: dict, want: dict) -> list[str]:
    """Names whose values differ between kernels (``got``) and this reference (``want``).

    Exact equality (NaN equal to NaN), except decayed values: relative ``DECAY_REL_TOL``.
    """
    if list(got) != list(want):
        return [f"names {list(got)} != {list(want)}"]
    out = []
    for name, w in want.items():
        g = got[name]
        g = g.item() if hasattr(g, "item") and not isinstance(g, list | str) else g
        if isinstance(w, float) and isinstance(g, float):
            if name in DECAYED:
                ok = math.isclose(g, w, rel_tol=DECAY_REL_TOL, abs_tol=1e-300)
            else:
                ok = g == w or (math.isnan(g) and math.isnan(w))
        else:
            ok = (not isinstance(w, float)) and g == w
        if not ok:
            out.append(f"{name}: kernels {g!r} != reference {w!r}")
    return out
