"""Benchmark of the feature kernels against pandas groupby and River's per-event Agg.

All three compute features over the same synthetic stream (``offline.datasets``):
- ours: ``kernels.apply_encoded`` (the full catalogue) batch by batch, then ``evaluate`` of
  every user at the end; string-id encoding is timed apart;
- pandas: a fair batch implementation of a subset (per-type counts, spend, last event and
  purchase times, the four sliding windows with the same bucket rule, the eight decayed sums)
  with the same effective-time rule;
- the same two when features must stay fresh after every batch (the online need): pandas
  recomputes over the history so far, ours applies the batch and evaluates its users;
- River: ``feature_extraction.Agg`` (+ ``utils.TimeRolling`` for windows, naive datetimes)
  fed one event at a time, the obvious online way, on a subsample; the per-event cost is
  extrapolated.  River has no time-decayed sum, so its subset has no decays.
Times are CPU seconds of this process (the machine is shared; wall times are printed too),
medians of repeats.  Also: cold start of a first batch in a fresh process with an empty numba
cache vs a warm one, and state bytes per user.  The last line is one JSON object.

    .venv/bin/python bench/kernels.py            # 10 million events
    .venv/bin/python bench/kernels.py --quick    # 1 million events, fewer repeats
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from offline.datasets import generate_columns  # noqa: E402
from online import catalogue as cat  # noqa: E402
from online import kernels  # noqa: E402
from online.state import UserState  # noqa: E402

PURCHASE = 3


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """Median CPU and wall seconds of ``fn()`` over repeats, and its last result."""
    cpu, wall, out = [], [], None
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        out = fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return statistics.median(cpu), statistics.median(wall), out


def load_stream(users: int, events: int, seed: int):
    chunks = list(generate_columns(users, events, seed))
    state = UserState()
    c, w = time.process_time(), time.perf_counter()
    encoded = [
        (state.index_users(ch["user_id"]), ch["ts"], ch["type"], ch["price"], ch["quantity"],
         state.encode_items(ch["item_id"]), state.encode_categories(ch["category"]))
        for ch in chunks
    ]
    encode = (time.process_time() - c, time.perf_counter() - w)
    return chunks, state, encoded, encode


def fresh_like(template: UserState) -> UserState:
    s = UserState(capacity=template.n_users)
    s.users, s.items, s.categories = template.users, template.items, template.categories
    s.n_users, s.item_hash = template.n_users, template.item_hash
    return s


def ours(states: list[UserState], encoded) -> UserState:
    state = states.pop()  # allocated outside the timing, as in a running projector
    for cols in encoded:
        kernels.apply_encoded(state, *cols)
    return state


def pandas_features(encoded, t_end: int) -> pd.DataFrame:
    """The subset with pandas: one groupby pass per feature family, effective ts included."""
    df = pd.DataFrame({
        "user": np.concatenate([e[0] for e in encoded]),
        "ts": np.concatenate([e[1] for e in encoded]),
        "type": np.concatenate([e[2] for e in encoded]),
        "amount": np.concatenate([e[3] * e[4] for e in encoded]),
    })
    df["eff"] = df.groupby("user", sort=False)["ts"].cummax()
    purchase = df["type"] == PURCHASE
    df["spend"] = np.where(purchase, df["amount"], 0.0)
    g = df.groupby("user")
    out = df.groupby(["user", "type"]).size().unstack(fill_value=0)
    out["event_count"] = g.size()
    out["spend_total"] = g["spend"].sum()
    out["last_event_ts"] = g["eff"].max()
    out["last_purchase_ts"] = df[purchase].groupby("user")["eff"].max()
    for label, width, n in cat.WINDOWS:
        inside = df[(df["eff"] // width) > (t_end // width) - n].groupby("user")
        out[f"events_{label}"] = inside.size()
        out[f"spend_{label}"] = inside["spend"].sum()
    age = (t_end - df["eff"]).to_numpy(dtype=np.float64)
    for label, hl in cat.HALF_LIVES:
        w = np.exp(-age * (math.log(2.0) / hl))
        out[f"decayed_events_{label}"] = pd.Series(w).groupby(df["user"]).sum()
        out[f"decayed_spend_{label}"] = pd.Series(w * df["spend"]).groupby(df["user"]).sum()
    return out.fillna(0)


def refreshed_every_batch(template: UserState, encoded, batches: int) -> dict:
    """Features kept fresh after every batch (the online need), over the first batches.

    pandas recomputes the subset over the history so far after each batch (it has no state
    to update); ours applies the batch and evaluates the users it touched.  CPU seconds.
    """
    numeric = [f.name for f in cat.FEATURES if f.dtype not in ("str", "str_list")]
    part = encoded[:batches]
    state = fresh_like(template)
    c = time.process_time()
    for cols in part:
        kernels.apply_encoded(state, *cols)
        kernels.evaluate(state, np.unique(cols[0]), int(cols[1].max()), names=numeric)
    ours_s = time.process_time() - c
    c = time.process_time()
    for k in range(1, len(part) + 1):
        pandas_features(part[:k], int(max(e[1].max() for e in part[:k])))
    pandas_s = time.process_time() - c
    n = sum(len(e[0]) for e in part)
    return {"events": n, "batches": len(part), "ours_events_per_s": n / ours_s,
            "pandas_events_per_s": n / pandas_s, "ratio": pandas_s / ours_s}


def river_per_event(chunks, n: int) -> float:
    """CPU seconds per event of River Agg/TimeRolling learn_one over the first n events."""
    from river import feature_extraction as fx
    from river import stats, utils

    aggs = [fx.Agg(on=f"is_{t}", by="user", how=stats.Sum()) for t in range(5)]
    aggs += [fx.Agg(on="one", by="user", how=stats.Count()),
             fx.Agg(on="spend", by="user", how=stats.Sum()),
             fx.Agg(on="ts", by="user", how=stats.Max()),
             fx.Agg(on="purchase_ts", by="user", how=stats.Max())]
    rolling = []  # TimeRolling needs the event time (naive datetimes), plain stats refuse it
    for _, width, size in cat.WINDOWS:
        period = timedelta(microseconds=width * size)
        rolling += [fx.Agg(on="one", by="user", how=utils.TimeRolling(stats.Sum, period=period)),
                 fx.Agg(on="spend", by="user", how=utils.TimeRolling(stats.Sum, period=period))]
    ch = {k: np.concatenate([c[k][:n] for c in chunks])[:n] for k in
          ("user_id", "ts", "type", "price", "quantity")}
    newest: dict[str, int] = {}
    xs = []
    for i in range(n):  # effective ts and naive datetimes prepared outside the timing
        user, typ = ch["user_id"][i], int(ch["type"][i])
        eff = newest[user] = max(int(ch["ts"][i]), newest.get(user, -(2**62)))
        spend = float(ch["price"][i] * ch["quantity"][i]) if typ == PURCHASE else 0.0
        x = {"user": user, "one": 1.0, "spend": spend, "ts": float(eff),
             "purchase_ts": float(eff) if typ == PURCHASE else 0.0}
        x.update({f"is_{t}": float(t == typ) for t in range(5)})
        xs.append((x, datetime(1970, 1, 1) + timedelta(microseconds=eff)))
    c = time.process_time()
    for x, t in xs:
        for agg in aggs:
            agg.learn_one(x)
        for agg in rolling:
            agg.learn_one(x, t=t)
    return (time.process_time() - c) / n


_COLD = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from online import kernels
from online.state import UserState
t1 = time.perf_counter()
z = np.load(sys.argv[1], allow_pickle=True)
batch = {k: z[k] for k in ("user_id", "ts", "type", "price", "quantity", "item_id", "category")}
t2 = time.perf_counter()
state = UserState()
kernels.apply(state, batch)
t3 = time.perf_counter()
kernels.evaluate(state, np.arange(state.n_users), int(batch["ts"].max()))
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_batch_s": t3 - t2, "first_evaluate_s": t4 - t3}))
"""


def cold_start(chunk: dict) -> dict:
    """First batch in fresh processes: empty numba cache (compiles) vs the warm cache."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "batch.npz"
        np.savez(path, **{k: chunk[k] for k in ("user_id", "ts", "type", "price", "quantity",
                                                 "item_id", "category")})
        env = {**os.environ, "NUMBA_CACHE_DIR": str(Path(tmp) / "numba-cache")}
        runs = []
        for _ in range(2):
            out = subprocess.run([sys.executable, "-c", _COLD, str(path)], env=env, cwd=ROOT,
                                 capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"cold": runs[0], "warm": runs[1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--river-events", type=int, default=20_000)
    ap.add_argument("--refresh-batches", type=int, default=10,
                    help="batches (of 100k events) for the refreshed-every-batch comparison")
    ap.add_argument("--quick", action="store_true", help="1M events, 1 repeat, 5k for River")
    a = ap.parse_args()
    if a.quick:
        a.events, a.repeats, a.river_events = min(a.events, 1_000_000), 1, 5_000
        a.refresh_batches = min(a.refresh_batches, 5)
    say = lambda *m: print(*m, file=sys.stderr, flush=True)  # noqa: E731
    say(f"generating {a.events:,} events for {a.users:,} users ...")
    chunks, template, encoded, (enc_cpu, enc_wall) = load_stream(a.users, a.events, a.seed)
    n = sum(len(e[0]) for e in encoded)
    t_end = int(max(e[1].max() for e in encoded))
    kernels.apply_encoded(fresh_like(template), *(c[:100] for c in encoded[0]))  # compile
    states = [fresh_like(template) for _ in range(a.repeats)]
    cpu, wall, state = timed(lambda: ours(states, encoded), a.repeats)
    everyone = np.arange(state.n_users)
    numeric = [f.name for f in cat.FEATURES if f.dtype not in ("str", "str_list")]
    ev_cpu, ev_wall, _ = timed(lambda: kernels.evaluate(state, everyone, t_end, names=numeric),
                               a.repeats)
    full_cpu, _, _ = timed(lambda: kernels.evaluate(state, everyone, t_end), 1)
    say("pandas ...")
    pd_cpu, pd_wall, _ = timed(lambda: pandas_features(encoded, t_end), a.repeats)
    say("refreshed every batch ...")
    fresh = refreshed_every_batch(template, encoded, a.refresh_batches)
    say(f"River on {a.river_events:,} events ...")
    river_s = river_per_event(chunks, min(a.river_events, n))
    say("cold start ...")
    cold = cold_start(chunks[0])
    res = {
        "events": n, "users": state.n_users,
        "ours_events_per_s": n / cpu, "ours_wall_events_per_s": n / wall,
        "evaluate_all_users_s": ev_cpu, "evaluate_ns_per_user": 1e9 * ev_cpu / state.n_users,
        "evaluate_with_strings_ns_per_user": 1e9 * full_cpu / state.n_users,
        "ours_with_evaluate_events_per_s": n / (cpu + ev_cpu),
        "encode_ns_per_event": 1e9 * enc_cpu / n,
        "ours_with_encode_events_per_s": n / (cpu + enc_cpu),
        "pandas_events_per_s": n / pd_cpu, "pandas_wall_events_per_s": n / pd_wall,
        "river_events_per_s": 1.0 / river_s, "river_sample_events": min(a.river_events, n),
        "bytes_per_user": state.bytes_per_user(),
        "refreshed_every_batch": fresh,
        "cold_start": cold,
    }
    res["ratio_vs_pandas"] = res["ours_with_evaluate_events_per_s"] / res["pandas_events_per_s"]
    res["ratio_vs_river"] = res["ours_events_per_s"] / res["river_events_per_s"]
    print(f"events {n:,}  users {state.n_users:,}  (CPU-time rates, medians of {a.repeats})")
    print(f"ours (full catalogue, encoded ids)  {res['ours_events_per_s'] / 1e6:8.2f} M ev/s"
          f"   wall {res['ours_wall_events_per_s'] / 1e6:.2f} M ev/s   goal >= 5")
    print(f"  + string-id encoding              {res['ours_with_encode_events_per_s'] / 1e6:8.2f}"
          f" M ev/s   ({res['encode_ns_per_event']:.0f} ns/event to encode)")
    print(f"  evaluate every user at the end    {res['evaluate_all_users_s']:8.3f} s"
          f"   ({res['evaluate_ns_per_user']:.0f} ns/user numeric features, "
          f"{res['evaluate_with_strings_ns_per_user']:.0f} with categories and item lists)")
    print(f"  apply + evaluate                  {res['ours_with_evaluate_events_per_s'] / 1e6:8.2f}"
          " M ev/s")
    print(f"pandas groupby (subset)             {res['pandas_events_per_s'] / 1e6:8.2f} M ev/s"
          f"   ratio (apply + evaluate) {res['ratio_vs_pandas']:.1f}x   goal >= 10x")
    print(f"fresh after every batch ({fresh['batches']} x 100k events): ours "
          f"{fresh['ours_events_per_s'] / 1e6:.2f} M ev/s, pandas recomputing "
          f"{fresh['pandas_events_per_s'] / 1e6:.3f} M ev/s, ratio {fresh['ratio']:.0f}x")
    print(f"River Agg per event (subset, {res['river_sample_events']:,} events, extrapolated)"
          f" {res['river_events_per_s'] / 1e3:8.1f} k ev/s"
          f"   ratio {res['ratio_vs_river']:.0f}x   goal >= 100x")
    for k in ("cold", "warm"):
        c = cold[k]
        print(f"first batch, {k} numba cache: import {c['import_s']:.2f} s, first batch "
              f"{c['first_batch_s']:.2f} s, first evaluate {c['first_evaluate_s']:.2f} s")
    print(f"state bytes per user {res['bytes_per_user']}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
