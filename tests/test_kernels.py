"""Kernels against the plain-Python reference on random event streams (late events, ties)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import naive
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from online import catalogue as cat
from online import kernels
from online.state import UserState

BASE = 1_300_000_000 * cat.SECOND_US
H, M, D = cat.HOUR_US, cat.MINUTE_US, cat.DAY_US
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

_step = st.one_of(  # time steps between consecutive log entries: ties, gaps, late events
    st.sampled_from([0, 0, 1, 30 * M, 30 * M, 30 * M + 1, 5 * M, H, D]),
    st.integers(-3 * H, 2 * H),
    st.integers(0, 40 * M),
    st.integers(0, 12 * D),
)
_event = st.fixed_dictionaries({
    "user_id": st.sampled_from(["ann", "ann", "ann", "bob", "cy"]),
    "step": _step,
    "type": st.integers(0, 4),
    "price": st.one_of(st.sampled_from([0.1, 19.99, 0.0, 3.0]), st.floats(0, 1e4)),
    "quantity": st.integers(1, 5),
    "item_id": st.one_of(st.none(), st.sampled_from([f"i{k}" for k in range(30)])),
    "category": st.one_of(st.none(), st.sampled_from([f"c{k}" for k in range(12)])),
})
streams = st.lists(_event, min_size=1, max_size=60)


def to_events(raw: list[dict]) -> list[dict]:
    """Random steps -> log-ordered events with absolute ts; price only where it is required."""
    t, out = BASE, []
    for r in raw:
        t += r["step"]
        priced = r["type"] in (naive.PURCHASE, naive.REFUND)
        out.append({**{k: v for k, v in r.items() if k != "step"}, "ts": t,
                    "price": r["price"] if priced else None})
    return out


def columns(events: list[dict]) -> dict[str, np.ndarray]:
    def obj(key):
        arr = np.empty(len(events), dtype=object)
        arr[:] = [e[key] for e in events]
        return arr

    return {
        "user_id": obj("user_id"), "item_id": obj("item_id"), "category": obj("category"),
        "ts": np.array([e["ts"] for e in events], dtype=np.int64),
        "type": np.array([e["type"] for e in events], dtype=np.int8),
        "price": np.array([np.nan if e["price"] is None else e["price"] for e in events]),
        "quantity": np.array([e["quantity"] for e in events], dtype=np.int64),
    }


def assert_same(got: dict, want: dict, where: str = "") -> None:
    wrong = naive.mismatches(got, want)
    assert not wrong, f"{where}{wrong}"


def row(values: dict[str, np.ndarray], j: int) -> dict:
    return {k: v[j] for k, v in values.items()}


@SETTINGS
@given(streams, st.lists(st.integers(0, 45 * D), min_size=1, max_size=3))
def test_served_values_equal_reference(raw, offsets):
    events = to_events(raw)
    state = UserState(capacity=1)
    eff = kernels.apply(state, columns(events))
    ref = naive.replay(events)
    assert eff.tolist() == [e["eff"] for e in _in_log_order(ref, events)]
    users = state.users.values
    newest = max(e["eff"] for evs in ref.values() for e in evs)
    for extra in offsets:
        for t in (newest, newest + extra, BASE):  # BASE: before last events, clamped
            got = kernels.evaluate(state, np.arange(len(users)), t)
            for j, user in enumerate(users):
                assert_same(row(got, j), naive.served(ref[user], t), f"{user}@{t}: ")


def _in_log_order(ref: dict[str, list[dict]], events: list[dict]) -> list[dict]:
    seen = {u: 0 for u in ref}
    out = []
    for e in events:
        out.append(ref[e["user_id"]][seen[e["user_id"]]])
        seen[e["user_id"]] += 1
    return out


@SETTINGS
@given(streams)
def test_event_rows_are_the_state_after_each_event(raw):
    events = to_events(raw)
    state = UserState(capacity=1)
    mask = np.array([k % 2 == 0 for k in range(len(events))])
    _, rows = kernels.apply(state, columns(events), event_rows=mask)
    picked = [k for k in range(len(events)) if mask[k]]
    for j, k in enumerate(picked):
        applied = naive.replay(events[: k + 1])[events[k]["user_id"]]
        assert_same(row(rows, j), naive.stored(applied), f"event {k}: ")


@SETTINGS
@given(streams, st.integers(0, 40 * D))
def test_windows_change_only_at_next_window_change(raw, after_offset):
    events = to_events(raw)
    state = UserState(capacity=1)
    kernels.apply(state, columns(events))
    ref = naive.replay(events)
    users = np.arange(len(state.users.values))
    after = max(e["eff"] for evs in ref.values() for e in evs) + after_offset
    nxt = kernels.next_window_change(state, users, after)
    windows = [f.name for f in cat.FEATURES if f.kind == "window"]
    for j, user in enumerate(state.users.values):
        now = naive.stored(ref[user], after)
        if nxt[j] == cat.NO_TS:
            assert all(now[w] == 0 for w in windows if w.startswith("events_"))
            continue
        assert nxt[j] > after
        before = naive.stored(ref[user], int(nxt[j]) - 1)
        at = naive.stored(ref[user], int(nxt[j]))
        assert all(before[w] == now[w] for w in windows)
        assert any(at[w] != now[w] for w in windows)


@SETTINGS
@given(streams)
def test_decayed_sums_match_the_closed_form(raw):
    events = to_events(raw)
    state = UserState(capacity=1)
    kernels.apply(state, columns(events))
    ref = naive.replay(events)
    t = max(e["eff"] for evs in ref.values() for e in evs) + 3 * H
    got = kernels.evaluate(state, np.arange(len(state.users.values)), t)
    for j, user in enumerate(state.users.values):
        for label, hl in cat.HALF_LIVES:
            want = sum(2.0 ** (-(t - e["eff"]) / hl) for e in ref[user])
            assert got[f"decayed_events_{label}"][j] == pytest.approx(want, rel=1e-9)


def test_late_event_takes_the_users_newest_time():
    events = to_events([
        {"user_id": "ann", "step": 0, "type": 0, "price": 0.0, "quantity": 1,
         "item_id": "a", "category": "x"},
        {"user_id": "ann", "step": 2 * H, "type": 0, "price": 0.0, "quantity": 1,
         "item_id": "b", "category": "x"},
        {"user_id": "ann", "step": -5 * H, "type": 3, "price": 10.0, "quantity": 2,
         "item_id": "c", "category": "y"},
    ])
    state = UserState()
    eff = kernels.apply(state, columns(events))
    assert eff.tolist() == [BASE, BASE + 2 * H, BASE + 2 * H]
    got = row(kernels.evaluate(state, [0], BASE + 2 * H), 0)
    assert got["last_purchase_ts"] == BASE + 2 * H
    assert got["spend_1h"] == 20.0 and got["events_1h"] == 2  # counted at its effective time
    assert got["recent_items"] == ["c", "b", "a"]


def _crafted(steps_types_cats) -> list[dict]:
    return to_events([
        {"user_id": "ann", "step": step, "type": typ, "price": 1.0, "quantity": 1,
         "item_id": None, "category": c}
        for step, typ, c in steps_types_cats
    ])


@pytest.mark.parametrize("events", [
    # a gap of exactly 30 min stays in the session; one more µs starts a new one
    _crafted([(0, 1, None), (30 * M, 3, None), (30 * M + 1, 1, None), (0, 0, None)]),
    # nine categories at one instant: the ninth replaces the lowest slot among equal weights
    _crafted([(0, 0, f"c{k}") for k in range(9)] + [(H, 1, "c3"), (0, 0, "c9")]),
    # replacement prefers the smallest weight, wherever it sits
    _crafted([(0, 3, f"c{k}") for k in range(8)] + [(0, 0, "c8"), (0, 0, "c5"), (0, 0, "c9")]),
])
def test_crafted_tie_cases_equal_reference(events):
    state = UserState()
    kernels.apply(state, columns(events))
    t = events[-1]["ts"] + D
    assert_same(row(kernels.evaluate(state, [0], t), 0),
                naive.served(naive.replay(events)["ann"], t))


def test_wrappers_reject_wrong_dtypes_and_shapes():
    state = UserState()
    state.index_users(np.array(["ann"], dtype=object))
    good = dict(user_idx=np.zeros(1, np.int64), ts=np.zeros(1, np.int64),
                type=np.zeros(1, np.int8), price=np.zeros(1), quantity=np.ones(1, np.int64),
                item_code=np.full(1, -1, np.int32), category_code=np.full(1, -1, np.int32))
    with pytest.raises(ValueError, match="ts: expected dtype int64, got float64"):
        kernels.apply_encoded(state, **{**good, "ts": np.zeros(1)})
    with pytest.raises(ValueError, match=r"price: expected shape \(1,\), got \(2,\)"):
        kernels.apply_encoded(state, **{**good, "price": np.zeros(2)})
    with pytest.raises(ValueError, match=r"user_idx: expected values in \[0, 1\)"):
        kernels.apply_encoded(state, **{**good, "user_idx": np.ones(1, np.int64)})
    with pytest.raises(ValueError, match=r"item_code: expected codes in \[-1, 0\)"):
        kernels.apply_encoded(state, **{**good, "item_code": np.zeros(1, np.int32)})
    with pytest.raises(ValueError, match="t_us: expected int64"):
        kernels.evaluate(state, [0], 1.5)


def test_inputs_are_not_mutated_and_empty_batches_are_fine():
    events = to_events([{"user_id": "ann", "step": 0, "type": 3, "price": 2.5, "quantity": 2,
                         "item_id": "i", "category": "c"}])
    cols = columns(events)
    copies = {k: v.copy() for k, v in cols.items()}
    state = UserState()
    kernels.apply(state, cols)
    for k, v in cols.items():
        assert np.array_equal(v, copies[k]), k
    empty = {k: v[:0] for k, v in cols.items()}
    assert len(kernels.apply(state, empty)) == 0
    assert kernels.stored_values(state, [0])["spend_total"][0] == 5.0


def test_evaluate_can_serve_a_subset():
    events = to_events([{"user_id": "ann", "step": 0, "type": 3, "price": 2.5, "quantity": 2,
                         "item_id": "i", "category": "c"}])
    state = UserState()
    kernels.apply(state, columns(events))
    t = events[0]["ts"] + H
    full = kernels.evaluate(state, [0], t)
    names = ["seconds_since_last_purchase", "decayed_spend_1d", "events_1h", "interest_top1"]
    part = kernels.evaluate(state, [0], t, names=names)
    assert list(part) == [n for n in cat.served_names() if n in names]
    assert all(part[n][0] == full[n][0] for n in names)
    with pytest.raises(ValueError, match="unknown"):
        kernels.evaluate(state, [0], t, names=["nope"])


def test_stored_names_cover_the_catalogue():
    assert set(kernels.OUT_INT) | set(kernels.OUT_FLOAT) | {
        "interest_top1", "interest_top2", "interest_top3", "recent_items"
    } == set(cat.stored_names())
    assert set(cat.FIXED_NAMES) <= set(cat.served_names())


@SETTINGS
@given(st.integers(0, 400 * 24 * H))
def test_decay_factors_match_their_definition(dt):
    got = kernels.decay_factors(dt)
    for (label, hl), g in zip(cat.HALF_LIVES, got, strict=True):
        want = 2.0 ** (-dt / hl)
        assert math.isclose(g, want, rel_tol=1e-9, abs_tol=1e-300), f"{label}: {g} != {want}"


def test_a_cold_compile_is_said_by_whatever_loads_the_kernels_first(tmp_path):
    """A bare replay (no projector in the process) with an empty numba cache says what it
    compiles: the announcement comes with the kernels package, not with the projector."""
    import os
    import subprocess
    import sys

    script = (
        "import sys, numpy as np\n"
        "import offline.backfill.replay\n"
        "assert 'online.projector' not in sys.modules\n"
        "from online.kernels.survival import km_pass\n"
        "km_pass(np.array([3], np.int64), np.array([5], np.int64), 10)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_DISABLE_JIT"}
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "numba")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "compiling kernel km_pass (numba, once per install; cached on disk)" in done.stderr
    assert "compiled in" in done.stderr
