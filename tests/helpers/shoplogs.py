"""Random shop logs for the offline tests: ties, late events, every event type, few users.

Events are dicts in the form ``tests/naive.py`` takes (type as int code, ts in µs); ``write``
appends them to an event log through its validating ``append``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from helpers import naive
from online import catalogue as cat
from online.eventlog import EventLog

T0 = 1_300_000_000 * cat.SECOND_US  # 2011-03-13
TYPES = ("view", "add_to_cart", "remove_from_cart", "purchase", "refund")
NOW_US = T0 + 10_000 * cat.DAY_US  # pins the log's future-time rule


def make_events(n: int, seed: int, *, users: int = 6, t0: int = T0) -> list[dict]:
    """Log-ordered events: equal timestamps, gaps of minutes to days, ~15% late arrivals."""
    rng = np.random.default_rng(seed)
    steps = [0, 0, 1, 5 * cat.MINUTE_US, 40 * cat.MINUTE_US, 7 * cat.HOUR_US, 2 * cat.DAY_US]
    t, out = t0, []
    for k in range(n):
        t += int(rng.choice(steps)) if rng.random() < 0.6 else int(rng.integers(0, 3 * cat.HOUR_US))
        late = int(rng.integers(0, 9 * cat.HOUR_US)) if rng.random() < 0.15 else 0
        typ = int(rng.choice(5, p=[0.55, 0.2, 0.05, 0.15, 0.05]))
        out.append({
            "event_id": f"e{seed}-{k}", "user_id": f"u{int(rng.integers(users))}",
            "type": typ, "ts": t - late, "quantity": int(rng.integers(1, 4)),
            "price": round(float(rng.uniform(1, 200)), 2) if typ in (3, 4) else None,
            "item_id": None if rng.random() < 0.1 else f"i{int(rng.integers(40))}",
            "category": None if rng.random() < 0.2 else f"c{int(rng.integers(11))}",
            "session_id": None,
        })
    return out


def payload(e: dict) -> dict:
    """The wire form of an event dict."""
    p = {**e, "type": TYPES[e["type"]], "ts": cat.iso_utc(e["ts"])}
    return {k: v for k, v in p.items() if v is not None}


def write(path: Path, events: list[dict]) -> int:
    """Append events to the log at ``path`` (created when missing); returns its next offset."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with EventLog(path) as log:
        result = log.append([payload(e) for e in events], now_us=NOW_US)
        assert result.rejected == 0, [o for o in result.outcomes if o.status == "rejected"][:3]
        return log.next_offset


def effective(events: list[dict]) -> list[int]:
    """Each event's effective time (the late-event rule), in log order."""
    newest: dict[str, int] = {}
    out = []
    for e in events:
        t = max(e["ts"], newest.get(e["user_id"], e["ts"]))
        newest[e["user_id"]] = t
        out.append(t)
    return out


def same(got, want, reference_of: str | None = None) -> bool:
    """Equality of feature values: floats exactly (NaN == NaN), timestamps as µs.

    ``want`` from the reference (``tests/naive.py``) for feature ``reference_of``: decayed
    values (``naive.DECAYED``) agree to ``naive.DECAY_REL_TOL``, since the reference takes
    decay factors from their definition and the kernels from a chain of powers.
    """
    if isinstance(want, float) and isinstance(got, float):
        if reference_of in naive.DECAYED:
            return math.isclose(got, want, rel_tol=naive.DECAY_REL_TOL, abs_tol=1e-300)
        return got == want or (math.isnan(got) and math.isnan(want))
    return got == want
