"""Per-user feature state: struct-of-arrays numpy storage, id maps, atomic save and load.

Each array below has one row per user (dense index assigned in first-appearance order) and a
fixed set of named columns; the kernels in ``online/kernels.py`` read and write them.

- ``ints`` int64 ``[n, N_INT]`` counters and timestamps (columns ``I_*``)
- ``floats`` float64 ``[n, N_FLOAT]`` totals and decayed sums at ``last_event_ts`` (``F_*``)
- ``win_head`` int64 ``[n, 2 * n_windows]`` per ring the newest bucket number written, then
  (columns ``n_windows + r``) its slot
- ``cat_weight`` float64 / ``cat_code`` int32 ``[n, INTEREST_SLOTS]`` category affinity slots
- ``recent`` int32 ``[n, RECENT_ITEMS]`` ring of the last item codes
- ``hll`` uint8 ``[n, 2**HLL_P]`` HyperLogLog registers of viewed items
- ``win_count`` int32 ``[n, WIN_SLOTS, 2]`` (event count, bucket number) and ``win_spend``
  float64 ``[n, WIN_SLOTS]``: the bucket rings of all windows side by side (ring ``r`` at
  ``WIN_OFFSETS[r]``).  A slot counts for bucket ``k`` only while its bucket number is ``k``,
  so skipped buckets never need clearing.

The arrays are views into ONE buffer with a row of ``ROW_BYTES`` per user (each slot's count,
bucket number and spend share 16 bytes): an event touches a few cache lines of one region of
memory instead of lines scattered over nine arrays, which is what makes random users fast.

Item and category strings are mapped to dense int codes (``-1`` = none); an item also keeps a
stable 64-bit hash (blake2b of its UTF-8 text) so HyperLogLog results do not depend on codes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from itertools import repeat
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from online import catalogue as cat
from online.durable import fsync_dir

# int64 columns
(
    I_EVENT_COUNT, I_VIEW, I_ADD_TO_CART, I_REMOVE_FROM_CART, I_PURCHASE, I_REFUND,
    I_ITEMS_PURCHASED, I_FIRST_TS, I_LAST_TS, I_LAST_PURCHASE_TS, I_FIRST_ORDER_TS,
    I_ORDER_COUNT, I_SESSION_COUNT, I_SESSION_EVENTS, I_SESSION_FLAGS, I_CART_SESSIONS,
    I_CONVERTED_CART_SESSIONS, I_RECENT_COUNT,
) = range(18)
N_INT = 18
I_TYPE0 = I_VIEW  # per-type counts are I_TYPE0 + type code
SESSION_HAS_CART, SESSION_HAS_PURCHASE = 1, 2  # bits of I_SESSION_FLAGS

# float64 columns
F_SPEND, F_REFUND = 0, 1
F_DECAYED_EVENTS = 2  # + half-life index
F_DECAYED_SPEND = F_DECAYED_EVENTS + len(cat.HALF_LIVES)
N_FLOAT = F_DECAYED_SPEND + len(cat.HALF_LIVES)

WIN_SIZES = np.array([n for _, _, n in cat.WINDOWS], dtype=np.int64)
WIN_WIDTHS = np.array([w for _, w, _ in cat.WINDOWS], dtype=np.int64)
WIN_OFFSETS = np.concatenate([[0], np.cumsum(WIN_SIZES)[:-1]]).astype(np.int64)
WIN_SLOTS = int(WIN_SIZES.sum())
HLL_M = 1 << cat.HLL_P

_NO_TS_COLS = (I_FIRST_TS, I_LAST_TS, I_LAST_PURCHASE_TS, I_FIRST_ORDER_TS)
_VIEWS = (  # name, dtype, columns, initial value: in row order, hot columns first
    ("ints", np.int64, N_INT, 0),
    ("floats", np.float64, N_FLOAT, 0.0),
    ("win_head", np.int64, 2 * len(cat.WINDOWS), 0),
    ("cat_weight", np.float64, cat.INTEREST_SLOTS, 0.0),
    ("cat_code", np.int32, cat.INTEREST_SLOTS, -1),
    ("recent", np.int32, cat.RECENT_ITEMS, -1),
    ("hll", np.uint8, HLL_M, 0),
)
ARRAY_NAMES = tuple(v[0] for v in _VIEWS) + ("win_count", "win_spend")


def _layout() -> tuple[dict[str, int], int, int]:
    offsets, at = {}, 0
    for name, dtype, cols, _ in _VIEWS:
        size = np.dtype(dtype).itemsize
        at = -(-at // size) * size
        offsets[name] = at
        at += size * cols
    cells = -(-at // 16) * 16
    row = -(-(cells + 16 * WIN_SLOTS) // 64) * 64  # whole cache lines per user
    return offsets, cells, row


_OFFSETS, _CELLS, ROW_BYTES = _layout()


def _views(buf: np.ndarray) -> dict[str, np.ndarray]:
    """Named typed views of a ``[capacity, ROW_BYTES]`` uint8 buffer (no copies)."""
    out = {}
    for name, dtype, cols, _ in _VIEWS:
        at = _OFFSETS[name]
        out[name] = buf[:, at: at + np.dtype(dtype).itemsize * cols].view(dtype)
    cells = buf[:, _CELLS: _CELLS + 16 * WIN_SLOTS]
    out["win_count"] = cells.view(np.int32).reshape(len(buf), WIN_SLOTS, 4)[:, :, :2]
    out["win_spend"] = cells.view(np.float64).reshape(len(buf), WIN_SLOTS, 2)[:, :, 1]
    return out


def _initial_row() -> np.ndarray:
    row = np.zeros((1, ROW_BYTES), dtype=np.uint8)
    views = _views(row)
    for name, _, _, init in _VIEWS:
        views[name][:] = init
    views["ints"][:, list(_NO_TS_COLS)] = cat.NO_TS
    views["win_count"][:, :, 1] = -1  # no bucket
    return row


_INITIAL_ROW = _initial_row()


def stable_hash(text: str) -> int:
    """A process-independent signed 64-bit hash of ``text`` (Python's hash() is salted)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


class CodeMap:
    """Dense int codes for strings, in first-appearance order, with the map back.

    >>> m = CodeMap()
    >>> codes, added = m.encode(np.array(["b", None, "a", "b"], dtype=object))
    >>> codes.tolist(), added, m.decode(codes).tolist()
    ([0, -1, 1, 0], ['b', 'a'], ['b', None, 'a', 'b'])
    """

    def __init__(self, values: list[str] | None = None) -> None:
        self.values: list[str | None] = list(values or [])  # None: an erased entry
        self.codes: dict[str, int] = {v: i for i, v in enumerate(self.values) if v is not None}

    def __len__(self) -> int:
        return len(self.values)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """The strings of ``codes`` (any shape) as an object array, None for -1."""
        codes = np.asarray(codes)
        if codes.size <= 64:  # a profile or two: no table needed
            out = np.empty(codes.shape, dtype=object)
            out.flat[:] = [self.values[c] if c >= 0 else None for c in codes.flat]
            return out
        if getattr(self, "_table_len", -1) != len(self.values):
            self._table = np.array([*self.values, None], dtype=object)
            self._table_len = len(self.values)
        return self._table[codes]

    def encode(self, column: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Codes (int64, -1 for None) of a column of str/None (numpy objects or an Arrow string
        array); also the strings newly added."""
        if isinstance(column, pa.Array | pa.ChunkedArray):  # strings in C, no object per row
            enc = pc.dictionary_encode(column)
            if isinstance(enc, pa.ChunkedArray):
                enc = enc.combine_chunks()
            # dictionary order is first appearance, as pandas.factorize's uniques
            local = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False)
            uniques = enc.dictionary.to_pylist()
        else:
            local, uniques = pd.factorize(np.asarray(column, dtype=object),
                                          use_na_sentinel=True)
        # dict lookups through map() run in C; only new strings take the Python loop
        mapped = np.fromiter(map(self.codes.get, uniques, repeat(-1)), dtype=np.int64,
                             count=len(uniques))
        added: list[str] = []
        for j in np.flatnonzero(mapped < 0).tolist():
            value = uniques[j]
            mapped[j] = self.codes[value] = len(self.values)
            self.values.append(value)
            added.append(value)
        return np.append(mapped, -1)[local], added  # local code -1 (None) -> the last entry


class UserState:
    """Feature state of all users: growable numpy arrays plus user/item/category code maps."""

    # views of one buffer, set by `_alloc` (names: ARRAY_NAMES; layout: the module docstring)
    ints: np.ndarray
    floats: np.ndarray
    win_head: np.ndarray
    cat_weight: np.ndarray
    cat_code: np.ndarray
    recent: np.ndarray
    hll: np.ndarray
    win_count: np.ndarray
    win_spend: np.ndarray
    _buf: np.ndarray  # the rows of every user, ROW_BYTES each

    def __init__(self, capacity: int = 1024) -> None:
        self.users = CodeMap()
        self.items = CodeMap()
        self.categories = CodeMap()
        self.item_hash = np.zeros(0, dtype=np.int64)
        self.n_users = 0
        self._alloc(max(int(capacity), 1))

    def _alloc(self, capacity: int) -> None:
        raw = np.empty(capacity * ROW_BYTES + 64, dtype=np.uint8)
        start = -raw.ctypes.data % 64  # rows start on cache lines
        buf = raw[start: start + capacity * ROW_BYTES].reshape(capacity, ROW_BYTES)
        old: np.ndarray | None = getattr(self, "_buf", None)  # None on the first allocation
        kept = 0 if old is None else len(old)
        if old is not None:
            buf[:kept] = old
        buf[kept:] = _INITIAL_ROW
        self._buf = buf
        for name, view in _views(buf).items():
            setattr(self, name, view)
        self.capacity = capacity

    def arrays(self) -> dict[str, np.ndarray]:
        """The state arrays cut to the known users (views, not copies)."""
        return {name: getattr(self, name)[: self.n_users] for name in ARRAY_NAMES}

    def index_users(self, user_ids: np.ndarray) -> np.ndarray:
        """Dense row index (int64) of each user id, adding unseen users (amortised doubling)."""
        idx, added = self.users.encode(user_ids)
        if (idx < 0).any():
            raise ValueError("user_id must be a non-empty string for every event, got None")
        self.n_users = len(self.users)
        if self.n_users > self.capacity:
            self._alloc(max(self.n_users, 2 * self.capacity))
        return idx

    def encode_items(self, item_ids: np.ndarray) -> np.ndarray:
        """Item codes (int32, -1 = none); new items get their stable hash recorded."""
        codes, added = self.items.encode(item_ids)
        if added:
            extra = np.array([stable_hash(v) for v in added], dtype=np.int64)
            self.item_hash = np.concatenate([self.item_hash, extra])
        return codes.astype(np.int32)

    def encode_categories(self, categories: np.ndarray) -> np.ndarray:
        """Category codes (int32, -1 = none)."""
        return self.categories.encode(categories)[0].astype(np.int32)

    def user_index(self, user_id: str) -> int | None:
        """Row of ``user_id``, None when the user has no events in this state."""
        return self.users.codes.get(user_id)

    def erase(self, user_id: str) -> int:
        """Forget a user (erasure): reset its row and drop its id; returns rows cleared (0/1).

        The row stays allocated (indices of other users do not move) and is never reused.
        """
        row = self.users.codes.pop(user_id, None)
        if row is None:
            return 0
        self.users.values[row] = None
        self._buf[row] = _INITIAL_ROW[0]
        return 1

    def newest_event_us(self) -> int:
        """Newest effective event time over the users still held (``NO_TS`` when none).

        What a replay of the remaining log gives as the watermark: after an erasure it is
        recomputed with this (the erased user's event may have been the newest).
        """
        live = np.array([i for i, u in enumerate(self.users.values) if u is not None], np.int64)
        return int(self.ints[live, I_LAST_TS].max()) if len(live) else int(cat.NO_TS)

    def bytes_per_user(self) -> int:
        """Bytes of numpy state per user (one buffer row; code maps not included)."""
        return ROW_BYTES

    def equals(self, other: UserState) -> bool:
        """Bit-for-bit equality of arrays and code maps (floats compared by their bits)."""
        if (self.users.values, self.items.values, self.categories.values) != (
            other.users.values, other.items.values, other.categories.values
        ):
            return False
        a, b = self.arrays(), other.arrays()
        return all(a[k].tobytes() == b[k].tobytes() for k in a)

    def save(self, directory: str | Path) -> None:
        """Write the state to ``directory`` atomically (tmp dir, fsync, rename over)."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
        try:
            self.write_into(tmp)
            fsync_dir(tmp)
            if directory.exists():
                old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
                os.replace(directory, old)
                os.replace(tmp, directory)
                shutil.rmtree(old)
            else:
                os.replace(tmp, directory)
            fsync_dir(directory.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def write_into(self, directory: Path) -> None:
        """Write arrays (.npy) and code maps (json) into an existing directory, fsynced."""
        for name, arr in self.arrays().items():
            _write(directory / f"{name}.npy", lambda f, a=arr: np.save(f, a))
        _write(directory / "item_hash.npy", lambda f: np.save(f, self.item_hash))
        maps = {
            "users": self.users.values,
            "items": self.items.values,
            "categories": self.categories.values,
        }
        _write(directory / "codes.json", lambda f: f.write(json.dumps(maps).encode("utf-8")))

    @classmethod
    def load(cls, directory: str | Path) -> UserState:
        """Read a state written by ``save`` / ``write_into``."""
        directory = Path(directory)
        maps = json.loads((directory / "codes.json").read_text("utf-8"))
        state = cls(capacity=max(len(maps["users"]), 1))
        state.users = CodeMap(maps["users"])
        state.items = CodeMap(maps["items"])
        state.categories = CodeMap(maps["categories"])
        state.n_users = len(state.users)
        state.item_hash = np.load(directory / "item_hash.npy")
        for name in ARRAY_NAMES:
            getattr(state, name)[: state.n_users] = np.load(directory / f"{name}.npy")
        return state


def _write(path: Path, writer) -> None:
    with open(path, "wb") as f:
        writer(f)
        f.flush()
        os.fsync(f.fileno())


def last_per_user(user_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct users of a batch (state rows, ascending) and the position of each one's last
    event in it: the one rule the online writes and the replay's offsets share.

    >>> last_per_user(np.array([3, 1, 3, 2, 1]))
    (array([1, 2, 3]), array([4, 3, 2]))
    """
    users, first_from_end = np.unique(user_idx[::-1], return_index=True)
    return users, len(user_idx) - 1 - first_from_end
