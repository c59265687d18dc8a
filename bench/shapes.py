"""The data shapes `bench/quality.py` judges the online models on, as event payload lists.

Each shape is a shop log of its own kind, built from the real Online Retail file or from the
seeded synthetic shop (`offline.datasets.shop`), with the horizon it is judged at:

- ``retail``: Online Retail as it is (purchase and refund lines, minute timestamps).
- ``retail_daily``: Online Retail reduced to one purchase per customer and day at 12:00 UTC
  (the day's spend, quantity 1): purchases only, daily timestamps, long gaps. The shape of the
  shop log on which the online model once scored chance (AUC 0.53).
- ``funnel_strong`` / ``funnel_weak``: the synthetic clickstream (views, carts, purchases)
  with a wide or a narrow spread of the users' latent propensity to buy.
- ``funnel_weak_rare`` / ``funnel_weak_common``: weak signal again (other seeds), with buyers
  who check out far less (a base rate of a few percent at 1 day) or far more readily (about
  half the users buy within 7 days).
- ``funnel_drift``: two synthetic shops one after the other (the second one re-draws every
  user's activity and propensity and buys twice as readily): a drift in the middle.
- ``purchases_strong`` / ``purchases_drift``: the synthetic shop with only its purchases.

Users are subsampled with a stable hash (``fraction``) so that a quick run stays quick; a
subsample keeps whole users, so every per-user history is intact.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import numpy as np

from offline.datasets import Shop, find_online_retail, generate, iter_online_retail

__all__ = ["SHAPES", "DataShape", "build"]

DAY_US = 86_400_000_000


@dataclass(frozen=True)
class DataShape:
    """A named log builder and the horizon the models are judged at on it."""

    name: str
    horizon: str
    build: Callable[[float, int], list[dict]]  # (user fraction, scale) -> payloads
    description: str


def _kept(user_id: str, fraction: float) -> bool:
    if fraction >= 1.0:
        return True
    h = int.from_bytes(hashlib.blake2b(user_id.encode(), digest_size=8).digest(), "big")
    return h / 2**64 < fraction


def _retail_payloads(fraction: float) -> list[dict]:
    path = find_online_retail()
    if path is None:
        raise FileNotFoundError("Online Retail not found (set PORTRAIT_ONLINE_RETAIL)")
    return [r.payload for r in iter_online_retail(path)
            if r.payload is not None and _kept(r.payload["user_id"], fraction)]


def retail(fraction: float, scale: int) -> list[dict]:
    """Online Retail as it is (a user subsample)."""
    return _retail_payloads(fraction)


def retail_daily(fraction: float, scale: int) -> list[dict]:
    """One purchase per customer-day at noon UTC, the day's spend as its price."""
    days: dict[tuple[str, str], float] = {}
    for p in _retail_payloads(fraction):
        if p["type"] != "purchase":
            continue
        key = (p["user_id"], p["ts"][:10])
        days[key] = days.get(key, 0.0) + p["price"] * p["quantity"]
    out = [{"event_id": f"rd-{u}-{d}", "user_id": u, "type": "purchase",
            "ts": f"{d}T12:00:00+00:00", "price": round(spend, 2), "quantity": 1}
           for (u, d), spend in days.items()]
    # A groupby export lists each customer's days together: the log is in customer order,
    # not in time order (every customer's history spans the whole range).
    out.sort(key=lambda p: (p["user_id"], p["ts"]))
    return out


def _synthetic(users: int, events: int, seed: int, shop: Shop, start: str,
               fraction: float) -> list[dict]:
    return [p for chunk in generate(users, events, seed, start=start, shop=shop)
            for p in chunk if _kept(p["user_id"], fraction)]


def _two_periods(users: int, events: int, seed: int, first: Shop, second: Shop,
                 fraction: float) -> list[dict]:
    """The first shop's log, then the second's from where the first one ends (drift)."""
    a = _synthetic(users, events // 2, seed, first, "2024-01-01T00:00:00+00:00", fraction)
    end = max(datetime.fromisoformat(p["ts"]) for p in a) + timedelta(hours=1)
    b = _synthetic(users, events - events // 2, seed + 1, second,
                   end.astimezone(UTC).isoformat(), fraction)
    return a + b


_STRONG = Shop(days=60.0, buyer_sigma=1.1)
_WEAK = Shop(days=60.0, buyer_sigma=0.25)
_DRIFTED = replace(_STRONG, purchase_rate=0.6, add_rate=0.04)


def funnel_strong(fraction: float, scale: int) -> list[dict]:
    return _synthetic(3_000 * scale, 150_000 * scale, 11, _STRONG,
                      "2024-01-01T00:00:00+00:00", fraction)


def funnel_weak(fraction: float, scale: int) -> list[dict]:
    return _synthetic(3_000 * scale, 150_000 * scale, 12, _WEAK,
                      "2024-01-01T00:00:00+00:00", fraction)


def funnel_weak_rare(fraction: float, scale: int) -> list[dict]:
    return _synthetic(3_000 * scale, 150_000 * scale, 21, replace(_WEAK, purchase_rate=0.06),
                      "2024-01-01T00:00:00+00:00", fraction)


def funnel_weak_common(fraction: float, scale: int) -> list[dict]:
    return _synthetic(3_000 * scale, 150_000 * scale, 22,
                      replace(_WEAK, add_rate=0.06, purchase_rate=0.9),
                      "2024-01-01T00:00:00+00:00", fraction)


def funnel_drift(fraction: float, scale: int) -> list[dict]:
    return _two_periods(3_000 * scale, 150_000 * scale, 13, _STRONG, _DRIFTED, fraction)


def _purchases(payloads: list[dict]) -> list[dict]:
    return [p for p in payloads if p["type"] in ("purchase", "refund")]


# Shops whose visitors buy more readily, so that their purchases alone make a usable log.
_BUYING = replace(_STRONG, add_rate=0.08, purchase_rate=0.6)


def purchases_strong(fraction: float, scale: int) -> list[dict]:
    shop = replace(_BUYING, days=180.0)
    return _purchases(_synthetic(4_000 * scale, 400_000 * scale, 14, shop,
                                 "2024-01-01T00:00:00+00:00", fraction))


def purchases_drift(fraction: float, scale: int) -> list[dict]:
    first = replace(_BUYING, days=90.0)
    second = replace(_BUYING, days=90.0, add_rate=0.04, purchase_rate=0.9)
    return _purchases(_two_periods(4_000 * scale, 400_000 * scale, 15, first, second,
                                   fraction))


SHAPES: dict[str, DataShape] = {s.name: s for s in (
    DataShape("retail", "7d", retail, "Online Retail as is"),
    DataShape("retail_daily", "30d", retail_daily,
              "Online Retail, one purchase per customer-day at noon"),
    DataShape("funnel_strong", "1d", funnel_strong, "synthetic funnel, strong signal"),
    DataShape("funnel_weak", "7d", funnel_weak, "synthetic funnel, weak signal"),
    DataShape("funnel_weak_rare", "1d", funnel_weak_rare,
              "synthetic funnel, weak signal, rare purchases"),
    DataShape("funnel_weak_common", "7d", funnel_weak_common,
              "synthetic funnel, weak signal, common purchases"),
    DataShape("funnel_drift", "7d", funnel_drift, "synthetic funnel, drift in the middle"),
    DataShape("purchases_strong", "30d", purchases_strong,
              "synthetic purchases only, strong signal"),
    DataShape("purchases_drift", "7d", purchases_drift,
              "synthetic purchases only, drift in the middle"),
)}


def build(name: str, fraction: float = 1.0, scale: int = 1) -> list[dict]:
    """The payloads of shape ``name`` in log order."""
    payloads = SHAPES[name].build(fraction, scale)
    if not payloads:
        raise ValueError(f"shape {name!r} gave no events at fraction {fraction}")
    return payloads


def span_days(payloads: list[dict]) -> float:
    ts = np.array([datetime.fromisoformat(p["ts"]).timestamp() for p in payloads])
    return float((ts.max() - ts.min()) / 86_400)
