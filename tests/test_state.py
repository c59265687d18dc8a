"""UserState: id maps, growth, save/load round trip, erasure."""

from __future__ import annotations

import numpy as np
import pytest

from online import catalogue as cat
from online import kernels
from online.state import I_LAST_TS, ROW_BYTES, CodeMap, UserState, stable_hash


def _objects(values) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


def _batch(users, items=None, cats=None, t0=1_300_000_000_000_000):
    n = len(users)
    return {
        "user_id": _objects(users),
        "ts": t0 + np.arange(n, dtype=np.int64) * 60_000_000,
        "type": np.array([k % 5 for k in range(n)], dtype=np.int8),
        "price": np.array([1.5 + k for k in range(n)]),
        "quantity": np.ones(n, dtype=np.int64),
        "item_id": _objects(items or [None] * n),
        "category": _objects(cats or [None] * n),
    }


@pytest.fixture()
def state() -> UserState:
    s = UserState(capacity=2)
    users = [f"u{k % 7}" for k in range(40)]
    kernels.apply(s, _batch(users, [f"i{k % 9}" for k in range(40)],
                            [None if k % 3 else f"c{k % 4}" for k in range(40)]))
    return s


def test_codes_are_dense_in_first_appearance_order():
    m = CodeMap()
    codes, added = m.encode(_objects(["b", None, "a", "b"]))
    assert codes.tolist() == [0, -1, 1, 0] and added == ["b", "a"]
    assert m.encode(_objects(["a", "c"]))[0].tolist() == [1, 2]


def test_growth_keeps_rows(state):
    assert state.n_users == 7 and state.capacity >= 7
    assert state.users.values == [f"u{k}" for k in range(7)]
    assert int(state.ints[: state.n_users, 0].sum()) == 40  # event counts
    assert len(state.item_hash) == len(state.items) == 9
    assert state.item_hash[0] == stable_hash("i0")


def test_save_load_round_trip_is_exact(state, tmp_path):
    state.save(tmp_path / "s")
    loaded = UserState.load(tmp_path / "s")
    assert loaded.equals(state)
    # loaded states keep working and stay equal under the same further events
    more = _batch(["u1", "new"], ["i1", "i99"], ["c1", "c9"], t0=1_400_000_000_000_000)
    kernels.apply(state, more)
    kernels.apply(loaded, more)
    assert loaded.equals(state)


def test_save_replaces_atomically_and_leaves_no_temporaries(state, tmp_path):
    target = tmp_path / "s"
    state.save(target)
    kernels.apply(state, _batch(["u1"], t0=1_400_000_000_000_000))
    state.save(target)
    assert UserState.load(target).equals(state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_bytes_per_user_counts_every_array(state):
    per_user = sum(a.nbytes for a in state.arrays().values()) // state.n_users
    assert per_user <= state.bytes_per_user() == ROW_BYTES < per_user + 64  # line padding
    assert ROW_BYTES % 64 == 0 and ROW_BYTES <= 2112


def test_arrays_are_views_of_one_row_per_user(state):
    arrays = state.arrays()
    assert all(np.shares_memory(a, state._buf) for a in arrays.values())


    def addr(a, idx):
        return a.ctypes.data + sum(i * s for i, s in zip(idx, a.strides, strict=True))

    # a slot's spend sits right after its count and bucket number; a user is one row
    assert addr(state.win_spend, (1, 5)) - addr(state.win_count, (1, 5, 0)) == 8
    assert addr(state.ints, (2, 0)) - addr(state.ints, (1, 0)) == ROW_BYTES
    assert addr(state.hll, (1, 0)) - addr(state.ints, (1, 0)) < ROW_BYTES


def test_erase_forgets_the_user(state, tmp_path):
    row = state.user_index("u3")
    assert state.erase("u3") == 1 and state.erase("u3") == 0
    assert state.user_index("u3") is None and state.ints[row, 0] == 0
    assert state.ints[row, I_LAST_TS] == cat.NO_TS  # last_event_ts back to null
    state.save(tmp_path / "s")
    loaded = UserState.load(tmp_path / "s")
    assert loaded.equals(state) and loaded.user_index("u3") is None
    kernels.apply(loaded, _batch(["u3"]))
    assert loaded.user_index("u3") == state.n_users  # a new row, the old one is never reused


def test_newest_event_skips_erased_users(state):
    t0, minute = 1_300_000_000_000_000, 60_000_000
    assert state.newest_event_us() == t0 + 39 * minute  # event 39 is u4's
    state.erase("u4")
    assert state.newest_event_us() == t0 + 38 * minute  # then u3's event 38
    for k in range(7):
        state.erase(f"u{k}")
    assert state.newest_event_us() == cat.NO_TS


def test_missing_user_id_is_rejected():
    with pytest.raises(ValueError, match="user_id"):
        UserState().index_users(_objects(["a", None]))
