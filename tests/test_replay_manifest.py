"""The replay manifest's methods: each change is saved, files it drops are deleted."""

from __future__ import annotations

import os

import numpy as np
import pytest

from offline.backfill import files as store
from offline.backfill.checkpoints import merge_states
from online import catalogue as cat
from online.state import UserState


@pytest.fixture()
def man(tmp_path):
    return store.Manifest.load(tmp_path / "replay")


def _state(n: int) -> tuple[UserState, np.ndarray]:
    state = UserState()
    state.index_users(np.array([f"u{k}" for k in range(n)], dtype=object))
    return state, np.arange(n, dtype=np.int64)


def _written(directory, state: UserState, last: np.ndarray):
    directory.mkdir(parents=True)
    state.write_into(directory)
    np.save(directory / "last_offset.npy", last)
    return directory


def _touch(root, *names):
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")


def test_a_run_commits_chunk_by_chunk_and_finishes(man, tmp_path):
    man.begin_run({"request": [0, None], "start": 0, "stop": 20, "done": 0})
    assert store.Manifest.load(man.root).run["done"] == 0
    for lo in range(0, 20, 10):
        man.commit_chunk({"start": lo, "end": lo + 10, "files": [f"f{lo}"], "rows": 3,
                          "events": 10}, *_state(2))
        again = store.Manifest.load(man.root)
        assert (again.end, again.run["done"], again.checkpoints[-1]) == (lo + 10,) * 3
    # a re-run of the first chunk replaces it instead of adding one
    man.commit_chunk({"start": 0, "end": 10, "files": ["g0"], "rows": 4, "events": 10},
                     *_state(2))
    assert [c["files"] for c in man.chunks] == [["g0"], ["f10"]]
    man.finish()
    again = store.Manifest.load(man.root)
    assert again.run is None and again.checkpoints == [20]  # the end's checkpoint only
    state, last = store.load_checkpoint(again, 20)
    assert state.n_users == 2 and last.tolist() == [0, 1]


def test_the_tail_is_replaced_and_its_stale_files_deleted(man, tmp_path):
    root = tmp_path / "rows"
    man.commit_chunk({"start": 0, "end": 5, "files": [], "rows": 0, "events": 5}, *_state(1))
    _touch(root, "date=2011-01-01/tail-a.parquet", "date=2011-01-02/tail-a.parquet")
    man.replace_tail(root, ["date=2011-01-01/tail-a.parquet",
                            "date=2011-01-02/tail-a.parquet"], 7, 123)
    _touch(root, "date=2011-01-03/tail-b.parquet")
    man.replace_tail(root, ["date=2011-01-01/tail-a.parquet",
                            "date=2011-01-03/tail-b.parquet"], 8, 456)
    again = store.Manifest.load(man.root)
    assert again.tail == {"end": 5, "rows": 8, "files": ["date=2011-01-01/tail-a.parquet",
                                                         "date=2011-01-03/tail-b.parquet"]}
    assert again.watermark_us == 456
    assert not (root / "date=2011-01-02/tail-a.parquet").exists()
    man.drop_tail(root)
    assert store.Manifest.load(man.root).tail == {} and not list(root.rglob("*.parquet"))


def test_a_rebuild_replaces_every_chunk_and_deletes_the_files_it_does_not_name(man, tmp_path):
    root = tmp_path / "rows"
    _touch(root, "d/a", "d/b", "d/t", "d/new", "d/new-tail")
    for lo, name in ((0, "d/a"), (4, "d/b")):
        man.commit_chunk({"start": lo, "end": lo + 4, "files": [name], "rows": 1,
                          "events": 4}, *_state(1))
    man.replace_tail(root, ["d/t"], 1, 1)
    man.begin_run({"engine": "ray", "end": 9})
    man.replace_all(root, {"start": 0, "end": 9, "files": ["d/new"], "rows": 2, "events": 9},
                    {"end": 9, "files": ["d/new-tail"], "rows": 1}, 99,
                    [_written(tmp_path / "staged", *_state(3))])
    again = store.Manifest.load(man.root)
    assert [c["files"] for c in again.chunks] == [["d/new"]] and again.run is None
    assert again.tail["files"] == ["d/new-tail"] and again.watermark_us == 99
    assert sorted(p.name for p in (root / "d").iterdir()) == ["new", "new-tail"]
    assert again.checkpoints == [9]
    # an empty log: nothing committed, nothing checkpointed
    man.replace_all(root, None, {}, cat.NO_TS, [])
    again = store.Manifest.load(man.root)
    assert (again.chunks, again.tail, again.end) == ([], {}, 0)
    assert not list((root / "d").iterdir())


def _users(prefix: str, n: int, items: list[str]) -> tuple[UserState, np.ndarray]:
    state = UserState()
    state.index_users(np.array([f"{prefix}{k}" for k in range(n)], dtype=object))
    codes = state.encode_items(np.array(items, dtype=object))
    state.recent[:n, 0] = codes[np.arange(n) % len(codes)]
    state.ints[:n, 0] = np.arange(n) + (100 if prefix == "b" else 0)
    return state, np.arange(n, dtype=np.int64) + (1000 if prefix == "b" else 0)


def test_disjoint_states_adopted_as_parts_read_back_as_their_merge(man, tmp_path):
    a, b = _users("a", 3, ["i1", "i2"]), _users("b", 4, ["i2", "i3", "i4"])
    dirs = [_written(tmp_path / "g0", *a), _written(tmp_path / "g1", *b)]
    store.adopt_parts(man, 7, dirs)
    assert man.checkpoints == [7] and not any(d.exists() for d in dirs)  # renamed, not copied
    state, last = store.load_checkpoint(man, 7)
    want, want_last = merge_states([a, b])
    assert state.equals(want) and last.tolist() == want_last.tolist()
    assert state.users.values == ["a0", "a1", "a2", "b0", "b1", "b2", "b3"]
    # codes re-coded into the merged maps: b's users still point at b's items
    assert [state.items.values[c] for c in state.recent[3:7, 0]] == ["i2", "i3", "i4", "i2"]
    assert sorted(p.name for p in store.state_dirs(man.root)) == ["p0000", "p0001"]
    # one part is adopted as a whole checkpoint
    store.adopt_parts(man, 9, [_written(tmp_path / "g2", *a)])
    assert store.load_checkpoint(man, 9)[0].equals(a[0])
    assert not (man.checkpoint_dir(9) / "parts.json").exists()


def test_a_parts_commit_that_died_half_way_is_finished_by_repeating_it(man, tmp_path):
    a, b = _users("a", 3, ["i1"]), _users("b", 2, ["i2"])
    want = merge_states([a, b])[0]
    dirs = [_written(tmp_path / "g0", *a), _written(tmp_path / "g1", *b)]
    half = man.checkpoint_dir(5).with_name(f".{man.checkpoint_dir(5).name}.parts")
    half.mkdir(parents=True)
    os.replace(dirs[0], half / "p0000")  # the first part moved, then the driver died
    store.adopt_parts(man, 5, dirs)
    assert store.load_checkpoint(man, 5)[0].equals(want) and man.checkpoints == [5]
    # died after the rename, before the manifest was saved: the repeat only records it
    again = store.Manifest.load(man.root)
    store.adopt_parts(again, 5, dirs)
    assert again.checkpoints == [5] and store.load_checkpoint(again, 5)[0].equals(want)
    with pytest.raises(FileNotFoundError):
        store.adopt_parts(again, 6, [tmp_path / "gone0", tmp_path / "gone1"])
