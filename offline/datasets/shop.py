"""The synthetic shop's behaviour: sessions of views, carts, purchases and refunds, seeded.

Users have heavy-tailed activity (lognormal session rates) and a latent propensity to cart
and buy; sessions start with a daily and weekly rhythm, browse Zipf-popular items mostly
within one category, sometimes add to the cart (and remove again) and a few percent check
out; a few percent of purchase lines are refunded days later. About 1% of the events arrive
late: after later events of the same user (a phone that was offline), with their original
time. Events come out in arrival order, which is the order a log would append them.

The stream depends only on (n_users, n_events, seed, start, shop), not on the chunk size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from online.events import EventType

__all__ = ["CATEGORIES", "Catalogue", "RawColumns", "Shop", "delivered_events"]

CATEGORIES = (
    "home", "kitchen", "fashion", "beauty", "electronics", "toys", "books", "garden", "sports",
    "shoes", "stationery", "health", "pets", "baby", "outdoor", "music", "games", "jewellery",
    "crafts", "grocery",
)  # fmt: skip

# relative session starts per hour of the day (UTC) and per weekday (Monday first)
_HOURLY = (
    0.25, 0.15, 0.10, 0.08, 0.08, 0.12, 0.30, 0.55, 0.80, 0.95, 1.05, 1.10,
    1.20, 1.15, 1.05, 1.00, 1.05, 1.15, 1.35, 1.60, 1.70, 1.55, 1.10, 0.55,
)  # fmt: skip
_WEEKDAY = (0.95, 0.93, 0.93, 0.95, 1.00, 1.10, 1.20)

VIEW, ADD_TO_CART, REMOVE_FROM_CART, PURCHASE, REFUND = (int(t) for t in sorted(EventType))
_MS_PER_HOUR = 3_600_000
_BLOCK_SESSIONS = 16_384


@dataclass(frozen=True)
class Shop:
    """How the synthetic shop behaves; the defaults give realistic traffic."""

    days: float = 90.0  # span of the session starts (the stream's time range, about)
    n_items: int = 5_000
    item_zipf: float = 1.1  # item popularity ~ 1 / rank**item_zipf
    price_median: float = 15.0
    activity_sigma: float = 1.5  # lognormal spread of users' session rates (heavy tail)
    buyer_sigma: float = 0.6  # lognormal spread of users' propensity to cart and buy
    mean_views: float = 5.5  # views per session (geometric, capped at max_views)
    max_views: int = 60
    view_gap_s: float = 25.0  # median time between views
    favourite_share: float = 0.6  # sessions in the user's favourite category
    in_category_share: float = 0.8  # views within the session's category
    add_rate: float = 0.025  # add_to_cart per view, times the user's propensity
    remove_rate: float = 0.15  # carted items removed again
    purchase_rate: float = 0.3  # sessions with a cart that check out, times the propensity
    refund_rate: float = 0.03  # purchase lines refunded
    refund_days: float = 6.0  # median refund delay
    late_share: float = 0.01  # events delivered after later events of their user
    late_delay_s: float = 120.0  # median delivery delay of a late event

    def events_per_session(self) -> float:
        """Expected events per session (sets the session rate for a requested event count)."""
        views = self.mean_views
        adds = views * self.add_rate
        purchases = adds * (1 - self.remove_rate) * self.purchase_rate
        return views + adds * (1 + self.remove_rate) + purchases * (1 + self.refund_rate)


class Catalogue:
    """The shop's fixed tables: items, their categories and prices, users' activity, propensity
    and favourite category, drawn once from the seed."""

    def __init__(self, n_users: int, shop: Shop, rng: np.random.Generator) -> None:
        n_cat, n_items = len(CATEGORIES), max(shop.n_items, len(CATEGORIES))
        cat_weight = 1.0 / np.arange(1, n_cat + 1) ** 0.7
        # every category gets one item, the rest follow the categories' popularity
        self.item_category = np.concatenate(
            [np.arange(n_cat), _sample(np.cumsum(cat_weight), rng.random(n_items - n_cat))]
        ).astype(np.int64)
        rank = rng.permutation(n_items) + 1
        item_weight = 1.0 / rank**shop.item_zipf
        self.item_cum = np.cumsum(item_weight)
        category_median = shop.price_median * rng.lognormal(0.0, 0.6, n_cat)
        price = category_median[self.item_category] * rng.lognormal(0.0, 0.5, n_items)
        self.item_price = np.maximum(np.round(price, 2), 0.5)
        # items ordered by category; keys c + (cumulative share within c) sample inside c
        order = np.argsort(self.item_category, kind="stable")
        cat_of_sorted = self.item_category[order]
        weight_sorted = item_weight[order]
        within = np.cumsum(weight_sorted)
        cat_start = np.searchsorted(cat_of_sorted, np.arange(n_cat))
        cat_total = np.add.reduceat(weight_sorted, cat_start)
        before = np.concatenate([[0.0], np.cumsum(cat_total)[:-1]])
        keys = cat_of_sorted + (within - before[cat_of_sorted]) / cat_total[cat_of_sorted]
        last = np.concatenate([cat_start[1:] - 1, [n_items - 1]])
        keys[last] = np.arange(n_cat) + 1.0  # exact upper edges: rounding never spills over
        self.cat_keys, self.cat_order = keys, order
        self.cat_cum = np.cumsum(cat_weight)

        self.user_cum = np.cumsum(rng.lognormal(0.0, shop.activity_sigma, n_users))
        buyer = rng.lognormal(0.0, shop.buyer_sigma, n_users)
        self.user_buyer = buyer / buyer.mean()
        self.user_favourite = _sample(self.cat_cum, rng.random(n_users))

    def items_in(self, category: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Zipf-popular items within each given category."""
        index = np.searchsorted(self.cat_keys, category + u, side="right")
        return self.cat_order[np.minimum(index, len(self.cat_order) - 1)]


def _sample(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Indices drawn with weights given as their cumulative sum ``cum``."""
    return np.minimum(np.searchsorted(cum, u * cum[-1], side="right"), len(cum) - 1)


class _Clock:
    """Maps operational time (hours of mean session intensity) to clock time (ms since start).

    Session starts are a Poisson process in operational time, so the clock-time process has
    the weekly x daily rhythm as its intensity (time rescaling).
    """

    def __init__(self, start: datetime) -> None:
        hour_of_week = start.weekday() * 24 + start.hour
        week = np.array([_WEEKDAY[h // 24] * _HOURLY[h % 24] for h in range(168)])
        week = np.roll(week, -hour_of_week)
        self._cum = np.concatenate([[0.0], np.cumsum(week / week.mean())])
        self._hours = np.arange(169, dtype=np.float64)

    def to_ms(self, operational_hours: np.ndarray) -> np.ndarray:
        weeks, rest = np.divmod(operational_hours, 168.0)
        hours = weeks * 168.0 + np.interp(rest, self._cum, self._hours)
        return np.round(hours * _MS_PER_HOUR).astype(np.int64)


def _lognormal_ms(rng: np.random.Generator, median_s: float, sigma: float, n: int) -> np.ndarray:
    """Positive delays in whole milliseconds (at least 1 ms, so order is strict)."""
    return np.maximum(np.round(rng.lognormal(math.log(median_s * 1000), sigma, n)), 1).astype(
        np.int64
    )


RawColumns = dict[str, np.ndarray]
"""Generated events by index: ``ts_ms``, ``type``, ``user``, ``item``, ``session`` (-1: none),
``quantity``, plus ``arrival_ms`` while in flight."""


def _block(rng: np.random.Generator, cat: Catalogue, shop: Shop, clock: _Clock,
           sessions: np.ndarray, op_start: float, rate: float) -> tuple[RawColumns, float]:
    """One block of sessions with all their events (unordered); returns the next start."""
    n_s = len(sessions)
    gaps = rng.exponential(1.0 / rate, n_s)
    op = op_start + np.concatenate([[0.0], np.cumsum(gaps[:-1])])
    start = clock.to_ms(op)
    user = _sample(cat.user_cum, rng.random(n_s))
    n_views = np.minimum(rng.geometric(1.0 / shop.mean_views, n_s), shop.max_views)
    favourite = rng.random(n_s) < shop.favourite_share
    s_cat = np.where(favourite, cat.user_favourite[user], _sample(cat.cat_cum, rng.random(n_s)))

    # views: cumulative gaps within each session
    v_s = np.repeat(np.arange(n_s), n_views)
    first = np.cumsum(n_views) - n_views
    gap = _lognormal_ms(rng, shop.view_gap_s, 1.0, len(v_s))
    gap[first] = 0
    elapsed = np.cumsum(gap)
    v_ts = start[v_s] + elapsed - elapsed[first][v_s]
    in_cat = rng.random(len(v_s)) < shop.in_category_share
    v_item = np.empty(len(v_s), dtype=np.int64)
    v_item[in_cat] = cat.items_in(s_cat[v_s[in_cat]], rng.random(int(in_cat.sum())))
    v_item[~in_cat] = _sample(cat.item_cum, rng.random(len(v_s) - int(in_cat.sum())))
    end = v_ts[first + n_views - 1].copy()

    # carts: a viewed item is added with the user's propensity; some are removed again
    buyer = cat.user_buyer[user]
    p_add = np.minimum(shop.add_rate * buyer[v_s], 0.5)
    added = np.flatnonzero(rng.random(len(v_s)) < p_add)
    a_s, a_item = v_s[added], v_item[added]
    a_ts = v_ts[added] + _lognormal_ms(rng, 10.0, 0.8, len(added))
    a_qty = rng.geometric(0.75, len(added)).astype(np.int64)
    removed = rng.random(len(added)) < shop.remove_rate
    r_ts = a_ts[removed] + _lognormal_ms(rng, 90.0, 1.0, int(removed.sum()))
    np.maximum.at(end, a_s, a_ts)
    np.maximum.at(end, a_s[removed], r_ts)

    # checkout: one purchase line per item still in the cart, all at one time
    kept = ~removed
    in_cart = np.bincount(a_s[kept], minlength=n_s)
    p_buy = np.minimum(shop.purchase_rate * buyer, 0.95)
    buys = (in_cart > 0) & (rng.random(n_s) < p_buy)
    checkout = end + _lognormal_ms(rng, 90.0, 0.8, n_s)
    bought = kept & buys[a_s]
    p_s, p_item, p_qty = a_s[bought], a_item[bought], a_qty[bought]
    p_ts = checkout[p_s]

    refunded = rng.random(len(p_s)) < shop.refund_rate
    delay = _lognormal_ms(rng, shop.refund_days * 86_400, 0.8, int(refunded.sum()))
    f_ts = p_ts[refunded] + np.clip(delay, 3_600_000, 60 * 86_400_000)

    ts = np.concatenate([v_ts, a_ts, r_ts, p_ts, f_ts])
    session = np.concatenate([v_s, a_s, a_s[removed], p_s, p_s[refunded]])
    kind = np.repeat(np.array([VIEW, ADD_TO_CART, REMOVE_FROM_CART, PURCHASE, REFUND], np.int8),
                     [len(v_ts), len(a_ts), len(r_ts), len(p_ts), len(f_ts)])
    # late delivery: only events older than their session's end, so a later event of the
    # same user is always delivered before them
    eligible = (kind <= REMOVE_FROM_CART) & (ts < end[session])
    share = min(1.0, shop.late_share * len(ts) / max(int(eligible.sum()), 1))
    late = eligible & (rng.random(len(ts)) < share)
    arrival = ts.copy()
    arrival[late] = end[session[late]] + _lognormal_ms(rng, shop.late_delay_s, 1.0,
                                                       int(late.sum()))
    raw = {
        "arrival_ms": arrival,
        "ts_ms": ts,
        "type": kind,
        "user": user[session],
        "item": np.concatenate([v_item, a_item, a_item[removed], p_item, p_item[refunded]]),
        "session": np.where(kind == REFUND, -1, sessions[session]),
        "quantity": np.concatenate([np.ones(len(v_ts), np.int64), a_qty, a_qty[removed],
                                    p_qty, p_qty[refunded]]),
    }
    return raw, op[-1] + gaps[-1]


def delivered_events(
    n_users: int, n_events: int, seed: int, *, start: str, shop: Shop
) -> tuple[Catalogue, Iterator[RawColumns]]:
    """The catalogue and the stream of delivered events in arrival order, as index columns.

    Blocks of sessions are generated ahead; an event is delivered once no later session can
    produce an earlier arrival (every later session starts after the next block's start).
    Pending events (refunds, late deliveries, session tails) wait in a small pool.
    """
    if n_users < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    if n_events < 0:
        raise ValueError(f"n_events must be >= 0, got {n_events}")
    start_dt = datetime.fromisoformat(start)
    if start_dt.tzinfo is None:
        raise ValueError(f"start must carry a zone, got {start!r}")
    rng = np.random.default_rng(seed)
    catalogue = Catalogue(n_users, shop, rng)
    clock = _Clock(start_dt.astimezone(UTC))
    start_ms = (start_dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    n_sessions = n_events / shop.events_per_session()
    rate = max(n_sessions, 1.0) / (shop.days * 24.0)  # sessions per operational hour
    block = int(min(_BLOCK_SESSIONS, max(64, n_sessions / 4)))

    def stream() -> Iterator[RawColumns]:
        pool: RawColumns | None = None
        op, next_session, delivered = 0.0, 0, 0
        while delivered < n_events:
            sessions = np.arange(next_session, next_session + block, dtype=np.int64)
            raw, op = _block(rng, catalogue, shop, clock, sessions, op, rate)
            next_session += block
            if pool is not None:
                raw = {k: np.concatenate([pool[k], raw[k]]) for k in raw}
            order = np.argsort(raw["arrival_ms"], kind="stable")
            raw = {k: v[order] for k, v in raw.items()}
            ready = int(np.searchsorted(raw["arrival_ms"], clock.to_ms(np.array([op]))[0]))
            ready = min(ready, n_events - delivered)
            pool = {k: v[ready:] for k, v in raw.items()}
            out = {k: v[:ready] for k, v in raw.items() if k != "arrival_ms"}
            out["ts_ms"] = out["ts_ms"] + start_ms
            delivered += ready
            yield out

    return catalogue, stream()
