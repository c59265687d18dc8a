"""Per-event cost of the online models: our ModelSet as the projector calls it vs bare River.

Both sides run in the same process on the same synthetic events, alternating (the machine is
shared and noisy: a ratio per round, its median over rounds, is what counts).

- peer: the served propensity learner (`online.models.contributor.propensity_model()`, a
  River classifier) used the obvious way: `predict_proba_one(x)` then `learn_one(x, y)` on
  every event's feature dict (labels given up front: no delay machinery).
- ours, dicts, every event learnt (the same learner inside): `ModelSet.observe(user, t, x,
  is_purchase)` per event with every event held as a question (min spacing 0), `advance(batch
  watermark)` per batch and a final flush: each event predicted once and learnt once, as by
  the peer, plus segments and drift. Alternates with the peer event by event, each call timed.
- ours, columns, every event learnt: the same through `ModelSet.observe_many(users, ts, X,
  is_purchase, columns)` on 2-D float arrays, the form the projector's kernels produce (the
  arrays are built outside the timing, like the peer's dicts). Alternates per chunk.
- ours, columns, default spacing (one question per user per hour): what the projector runs.
- profile: `ModelSet.profile(x)` (segment, score, top-5 explanation) for each user touched by
  the last batch, per user; it replaces no peer call, so it is in no ratio.

The horizon defaults to 1 day so that most labels resolve inside the alternating loop rather
than in the final flush (a label costs the same whatever the horizon; try `--horizon-days 7`).

Run: `.venv/bin/python bench/models.py [--events N --users U --rounds R]`. The last line of
output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import numpy as np

from online.models import DAY_US, HOUR_US, ModelSet
from online.models.contributor import propensity_model

GOAL_RATIO = 1.25
RFM = ("rfm_recency_days", "rfm_frequency", "rfm_monetary", "avg_order_value")
OTHER = (
    "event_count",
    "view_count",
    "add_to_cart_count",
    "refund_total",
    "seconds_since_last_event",
    "decayed_events_1d",
    "decayed_spend_7d",
    "events_24h",
    "spend_30d",
    "session_count",
    "session_events_mean",
    "view_to_cart_rate",
    "cart_abandonment_rate",
    "interest_top1_weight",
    "distinct_items_viewed",
    "last_session_events",
)
FEATURES = RFM + OTHER  # 20 served catalogue names, all numeric
# What the projector hands over: every numeric served column, here the features plus two the
# models do not read (not in the peer's dicts), in an order of their own.
ALL_COLUMNS = ("event_count_unused", *reversed(FEATURES), "spend_unused")


def make_events(n: int, n_users: int, seed: int) -> list[tuple[str, int, dict, bool]]:
    """(user, t_us, x, is_purchase), time-ordered, in sessions like a shop's clickstream.

    Users are Zipf-active; a session is 1-30 events 10 s-2 min apart and ends in a purchase
    one time in eight; sessions start every 15 min on average and interleave. RFM features
    follow each user's purchases (so segments see real structure), the rest are heavy-tailed
    noise.
    """
    rng = random.Random(seed)
    weights = [1.0 / (i + 1) for i in range(n_users)]
    t = 1_300_000_000_000_000
    last_purchase: dict[str, int] = {}
    orders: dict[str, tuple[int, float]] = {}
    open_sessions: list[list] = []  # [user, next_t, events_left, buys]
    next_start = t
    out: list[tuple[str, int, dict, bool]] = []
    while len(out) < n:
        # Sessions start as a Poisson process, one per 15 min on average (Online Retail's
        # ~1,800 rows a day from ~4,400 customers is the same order of traffic).
        while not open_sessions or next_start <= min(s[1] for s in open_sessions):
            user = f"user{rng.choices(range(n_users), weights=weights)[0]}"
            open_sessions.append([user, next_start, rng.randrange(1, 31), rng.random() < 0.125])
            next_start += int(rng.expovariate(1.0) * 15 * 60e6) + 1
        s = min(open_sessions, key=lambda s: s[1])
        user, t = s[0], s[1]
        s[2] -= 1
        is_purchase = s[2] == 0 and s[3]
        if s[2] == 0:
            open_sessions.remove(s)
        else:
            s[1] = t + rng.randrange(10, 120) * 1_000_000
        count, spend = orders.get(user, (0, 0.0))
        if is_purchase:
            count, spend = count + 1, spend + rng.lognormvariate(3.5, 1.0)
            orders[user] = (count, spend)
            last_purchase[user] = t
        x = {f: rng.lognormvariate(0.0, 1.5) for f in OTHER}
        lp = last_purchase.get(user)
        x["rfm_recency_days"] = -1.0 if lp is None else (t - lp) / 86_400e6
        x["rfm_frequency"] = float(count)
        x["rfm_monetary"] = spend
        x["avg_order_value"] = spend / count if count else 0.0
        out.append((user, t, x, is_purchase))
    return out


def labels(events, horizon_us: int) -> list[bool]:
    """Whether each event's user purchases in (t, t + horizon]: the peer's labels."""
    out = [False] * len(events)
    next_purchase: dict[str, int] = {}
    for i in range(len(events) - 1, -1, -1):
        user, t, _, is_purchase = events[i]
        tp = next_purchase.get(user)
        out[i] = tp is not None and t < tp <= t + horizon_us
        if is_purchase:
            next_purchase[user] = t
    return out


def run_per_event(events, ys, batch: int, horizon_us: int) -> tuple[float, float]:
    """Peer and ours (dict per event, every event held) alternating event by event: µs/event."""
    peer = propensity_model()
    ours = ModelSet.for_features(FEATURES, horizon_us=horizon_us, min_spacing_us=0,
                                 model=propensity_model())
    peer_predict, peer_learn = peer.predict_proba_one, peer.learn_one
    observe, advance = ours.observe, ours.advance
    clock = time.perf_counter_ns
    peer_ns = ours_ns = 0
    for lo in range(0, len(events), batch):
        chunk = events[lo : lo + batch]
        for (user, t, x, is_purchase), y in zip(chunk, ys[lo : lo + batch], strict=True):
            t0 = clock()
            peer_predict(x)
            peer_learn(x, y)
            t1 = clock()
            observe(user, t, x, is_purchase)
            t2 = clock()
            peer_ns += t1 - t0
            ours_ns += t2 - t1
        t0 = clock()
        advance(chunk[-1][1])  # per batch, as the projector does
        ours_ns += clock() - t0
    t0 = clock()
    advance(events[-1][1] + horizon_us + 1)  # flush: every held question gets its label
    ours_ns += clock() - t0
    assert ours.propensity.stats()["n_learnt"] == len(events)
    return peer_ns / 1e3 / len(events), ours_ns / 1e3 / len(events)


def run_columns(events, ys, columns, batch: int, horizon_us: int, min_spacing_us: int):
    """Peer per event vs ours per batch of columns, alternating batch by batch: µs/event."""
    peer = propensity_model()
    ours = ModelSet.for_features(FEATURES, horizon_us=horizon_us, min_spacing_us=min_spacing_us,
                                 model=propensity_model())
    peer_predict, peer_learn = peer.predict_proba_one, peer.learn_one
    clock = time.perf_counter_ns
    peer_ns = ours_ns = 0
    for lo, (users, ts, X, flags) in zip(range(0, len(events), batch), columns, strict=True):
        t0 = clock()
        for (_, _, x, _), y in zip(events[lo : lo + batch], ys[lo : lo + batch], strict=True):
            peer_predict(x)
            peer_learn(x, y)
        t1 = clock()
        ours.observe_many(users, ts, X, flags, ALL_COLUMNS)
        ours.advance(int(ts[-1]))
        t2 = clock()
        peer_ns += t1 - t0
        ours_ns += t2 - t1
    t0 = clock()
    ours.advance(events[-1][1] + horizon_us + 1)
    ours_ns += clock() - t0
    n = len(events)
    return peer_ns / 1e3 / n, ours_ns / 1e3 / n, ours.propensity.stats()["n_learnt"] / n


def as_columns(events, batch: int) -> list[tuple]:
    """The events as the projector would hand them over: per batch, arrays in log order."""
    out = []
    for lo in range(0, len(events), batch):
        chunk = events[lo : lo + batch]
        out.append(
            (
                np.array([u for u, _, _, _ in chunk], dtype=object),
                np.array([t for _, t, _, _ in chunk], dtype=np.int64),
                np.array([[x.get(c, 1.0) for c in ALL_COLUMNS] for _, _, x, _ in chunk]),
                np.array([p for _, _, _, p in chunk], dtype=bool),
            )
        )
    return out


def run_profiles(events, batch: int, horizon_us: int) -> float:
    models = ModelSet.for_features(FEATURES, horizon_us=horizon_us, model=propensity_model())
    for user, t, x, is_purchase in events:
        models.observe(user, t, x, is_purchase)
    latest = {}
    for user, _, x, _ in events[-batch:]:
        latest[user] = x
    start = time.perf_counter_ns()
    for x in latest.values():
        models.profile(x)
    return (time.perf_counter_ns() - start) / 1e3 / len(latest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--horizon-days", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    horizon = int(args.horizon_days * DAY_US)
    events = make_events(args.events, args.users, args.seed)
    ys = labels(events, horizon)
    columns = as_columns(events, args.batch)
    runs: dict[str, list[tuple[float, float]]] = {"dicts": [], "columns": [], "default": []}
    profile, learnt_default = [], 0.0
    for r in range(args.rounds):
        runs["dicts"].append(run_per_event(events, ys, args.batch, horizon))
        runs["columns"].append(run_columns(events, ys, columns, args.batch, horizon, 0)[:2])
        *pair, learnt_default = run_columns(events, ys, columns, args.batch, horizon, HOUR_US)
        runs["default"].append(tuple(pair))
        profile.append(run_profiles(events, args.batch, horizon))
        print(
            f"round {r}: "
            + "; ".join(f"{k} peer {v[-1][0]:.1f} ours {v[-1][1]:.1f}" for k, v in runs.items())
            + f" us/event; profile {profile[-1]:.1f} us/user",
            flush=True,
        )

    med = statistics.median
    figures = {
        "bench": "models",
        "events": args.events,
        "users": args.users,
        "features": len(FEATURES),
        "horizon_days": args.horizon_days,
        "batch": args.batch,
        "rounds": args.rounds,
        "peer_river_us_per_event": round(med(p for v in runs.values() for p, _ in v), 2),
    }
    for name, pairs in runs.items():
        figures[f"ours_{name}_us_per_event"] = round(med(o for _, o in pairs), 2)
        figures[f"ratio_{name}"] = round(med(o / p for p, o in pairs), 3)
    figures["learnt_per_event_default"] = round(learnt_default, 3)
    figures["profile_us_per_user"] = round(med(profile), 2)
    figures["goal_ratio"] = GOAL_RATIO
    figures["goal_met_like_for_like"] = figures["ratio_columns"] < GOAL_RATIO
    figures["goal_met_as_projector_calls"] = figures["ratio_default"] < GOAL_RATIO
    print(
        f"peer River predict+learn {figures['peer_river_us_per_event']} us/event. Ours, every "
        f"event learnt: dicts x{figures['ratio_dicts']}, columns x{figures['ratio_columns']}; "
        f"default spacing (learns {figures['learnt_per_event_default']} per event) "
        f"x{figures['ratio_default']}; goal < x{GOAL_RATIO}. "
        f"Profile {figures['profile_us_per_user']} us/user."
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
