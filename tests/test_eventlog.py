"""Event log: offsets, idempotency, quarantine, reads, erasure, threads and crash safety."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from online.eventlog import EventLog
from online.events import validate_event

NOW_US = 1_306_886_400_000_000  # 2011-06-01T00:00:00Z
REPO = Path(__file__).resolve().parents[1]


def ev(event_id: str, user: str = "u1", minute: int = 0, **extra) -> dict:
    return {
        "event_id": event_id,
        "user_id": user,
        "type": "view",
        "ts": f"2011-05-31T10:{minute:02d}:00Z",
        **extra,
    }


@pytest.fixture
def log(tmp_path):
    with EventLog(tmp_path / "events.db") as opened:
        yield opened


def all_events(log: EventLog):
    batch, _ = log.read(0, limit=10**9)
    return batch


# -- appending -----------------------------------------------------------------------------


def test_append_assigns_consecutive_offsets_from_zero(log):
    r = log.append([ev("a"), ev("b"), ev("c")])
    assert [o.status for o in r.outcomes] == ["accepted"] * 3
    assert [o.offset for o in r.outcomes] == [0, 1, 2]
    assert (r.accepted, r.duplicates, r.rejected, r.last_offset, r.next_offset) == (3, 0, 0, 2, 3)
    r = log.append([ev("d")])
    assert (r.outcomes[0].offset, r.next_offset) == (3, 4)
    assert log.next_offset == 4 and log.count() == 4


def test_stored_columns(log):
    log.append([ev("a", "u7", 5, type="purchase", price=2.5, quantity=3, item_id="i1",
                   category="c", session_id="s")])  # fmt: skip
    b = all_events(log)
    assert b.event_id.tolist() == ["a"] and b.user_id.tolist() == ["u7"]
    assert b.type.tolist() == [3] and b.price.tolist() == [2.5] and b.quantity.tolist() == [3]
    assert b.ts.tolist() == [validate_event(ev("a", minute=5)).ts_us]
    assert (b.item_id[0], b.category[0], b.session_id[0]) == ("i1", "c", "s")


def test_same_batch_twice_is_all_duplicates(log):
    batch = [ev(f"e{i}", minute=i) for i in range(5)]
    first = log.append(batch)
    before = all_events(log)
    again = log.append(batch)
    assert again.accepted == 0 and again.duplicates == 5 and again.last_offset is None
    assert [o.offset for o in again.outcomes] == [o.offset for o in first.outcomes]
    assert all(o.reason == "event_id already in the log" for o in again.outcomes)
    after = all_events(log)
    assert after.event_id.tolist() == before.event_id.tolist()
    assert log.next_offset == 5 and again.next_offset == 5


def test_duplicates_within_a_batch(log):
    r = log.append([ev("a"), ev("b"), ev("a", minute=9), ev("b")])
    assert [o.status for o in r.outcomes] == ["accepted", "accepted", "duplicate", "duplicate"]
    assert [o.offset for o in r.outcomes] == [0, 1, 0, 1]
    assert "within the batch" in r.outcomes[2].reason
    assert all_events(log).ts.tolist() == [validate_event(ev("a")).ts_us] * 2  # first one wins


def test_problems_are_the_outcomes_not_accepted_in_payload_order(log):
    log.append([ev("x")])
    r = log.append([ev("a"), ev("x"), {"event_id": "bad"}, ev("b"), ev("a")])
    assert [o.status for o in r.problems] == ["duplicate", "rejected", "duplicate"]
    assert r.problems == [o for o in r.outcomes if o.status != "accepted"]
    accepted = [o for o in r.outcomes if o.status == "accepted"]
    assert [(o.index, o.offset, o.event_id) for o in accepted] == [(0, 1, "a"), (3, 2, "b")]
    assert [o.index for o in r.outcomes] == list(range(5))


def test_the_read_after_an_append_is_the_one_from_the_file(tmp_path):
    from online.privacy.pseudonym import Pseudonymizer

    def same_read(log, at, limit=100, to=None):
        assert log._recent is not None and log._recent[0] == at
        got, resume = log.read(at, limit, to_offset=to)  # the rows just appended
        assert log._recent is None  # taken
        want, want_resume = log.read(at, limit, to_offset=to)  # the file's
        assert resume == want_resume and len(got) == len(want) > 0
        for name, column in got.to_dict().items():
            expected = want.to_dict()[name]
            assert column.dtype == expected.dtype, name
            assert np.array_equal(column, expected, equal_nan=column.dtype.kind == "f"), name

    with EventLog(tmp_path / "p.db", pseudonymizer=Pseudonymizer(b"k" * 32)) as log:
        log.append([ev("a"), ev("b", user="u2")])
        at = log.next_offset
        log.append([ev("c", type="view"), ev("a"), {"event_id": "bad"},
                    ev("d", user="u2", type="purchase", price=3, quantity=2, item_id="sku"),
                    ev("e", user="u3", minute=5, category="shoes", session_id="s9")])
        same_read(log, at)
        for limit, to in ((2, None), (100, 2)):  # cut by the limit, by the end offset
            at = log.next_offset
            log.append([ev(f"x{limit}", minute=9), ev(f"y{limit}"), ev(f"z{limit}")])
            same_read(log, at, limit, None if to is None else at + to)
        # an erasure leaves nothing of the user to be served from memory
        log.append([ev("w", user="gone")])
        stored = log.stored_user_id("gone")
        log.erase_user(stored)
        assert stored not in log.read(log.next_offset - 1)[0].user_id.tolist()


def test_event_objects_are_taken_as_validated(log):
    e = validate_event(ev("a"))
    r = log.append([e, ev("b")])
    assert r.accepted == 2


def test_empty_batch(log):
    log.append([ev("a")])
    r = log.append([])
    assert (r.outcomes, r.accepted, r.last_offset, r.next_offset) == ([], 0, None, 1)


def test_rejected_events_quarantined_with_reason(log):
    r = log.append(
        [ev("a"), ev("b", type="purchase"), ev("c", price=math.nan), {"x": (1, 2)}, ev("d")],
        source="http",
    )
    assert [o.status for o in r.outcomes] == [
        "accepted", "rejected", "rejected", "rejected", "accepted",
    ]  # fmt: skip
    assert [o.offset for o in r.outcomes] == [0, None, None, None, 1]  # no offset burnt
    assert r.outcomes[1].field == "price" and "required_for_type" in r.outcomes[1].reason
    assert r.outcomes[1].event_id == "b" and r.outcomes[3].event_id is None
    rows = log.read_quarantine()
    assert [q["batch_index"] for q in rows] == [1, 2, 3]
    assert {q["source"] for q in rows} == {"http"}
    assert [q["field"] for q in rows] == ["price", "price", "event_id"]
    assert rows[0]["reason"] == r.outcomes[1].reason
    raw = [json.loads(q["raw"]) for q in rows]  # valid JSON even for NaN and tuples
    assert raw[0] == ev("b", type="purchase") and raw[1]["price"] == "nan"
    assert log.stats()["quarantined"] == 3


def test_non_mapping_payload_rejected(log):
    r = log.append([["not", "a", "dict"], ev("a")])  # type: ignore[list-item]
    assert [o.status for o in r.outcomes] == ["rejected", "accepted"]
    assert r.outcomes[0].field == "<event>"


def test_huge_payload_quarantined_truncated(log):
    r = log.append([ev("a", user="u" * 1_000_000)])
    assert r.rejected == 1
    (row,) = log.read_quarantine()
    assert len(row["raw"]) < 70_000 and json.loads(row["raw"])["truncated"] is True


def test_failed_batch_is_not_half_applied(tmp_path):
    def pseudo(user_id: str) -> str:
        if user_id == "boom":
            raise RuntimeError("key store down")
        return "p-" + user_id

    with EventLog(tmp_path / "e.db", pseudonymizer=pseudo) as log:
        log.append([ev("a")])
        with pytest.raises(RuntimeError):
            log.append([ev("b"), ev("c", user="boom"), ev("d", type="refund")])
        assert log.next_offset == 1 and log.count() == 1 and log.read_quarantine() == []
        assert log.append([ev("b")]).outcomes[0].offset == 1


def test_reopen_keeps_offsets_and_schema(tmp_path):
    path = tmp_path / "e.db"
    with EventLog(path) as log:
        log.append([ev("a"), ev("b")])
    with EventLog(path) as log:
        assert log.next_offset == 2
        assert log.append([ev("b"), ev("c")]).outcomes[1].offset == 2
        assert log._writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_two_instances_on_one_file_share_offsets(tmp_path):
    path = tmp_path / "e.db"
    with EventLog(path) as one, EventLog(path) as two:
        one.append([ev("a")])
        r = two.append([ev("a"), ev("b")])
        assert [o.status for o in r.outcomes] == ["duplicate", "accepted"]
        assert one.append([ev("c")]).outcomes[0].offset == 2


def test_in_memory_log():
    with EventLog(":memory:") as log:
        log.append([ev("a"), ev("b")])
        assert log.read(1)[0].event_id.tolist() == ["b"]


def test_closed_log_refuses(tmp_path):
    log = EventLog(tmp_path / "e.db")
    log.close()
    log.close()  # idempotent
    with pytest.raises(sqlite3.ProgrammingError):
        log.append([ev("a")])
    with pytest.raises(sqlite3.ProgrammingError):
        log.read()


# -- reading -------------------------------------------------------------------------------


def test_read_in_pages_resumes_after_last_offset(log):
    for k in range(4):
        log.append([ev(f"e{k}-{i}", minute=i) for i in range(5)])
    got, offset = [], 0
    while True:
        batch, resume = log.read(offset, limit=3)
        if len(batch) == 0:
            assert resume == offset
            break
        assert resume == batch.offset[-1] + 1
        got.extend(batch.offset.tolist())
        offset = resume
    assert got == list(range(20))


def test_read_limit_and_to_offset(log):
    log.append([ev(f"e{i}") for i in range(10)])
    batch, resume = log.read(2, limit=100, to_offset=5)
    assert batch.offset.tolist() == [2, 3, 4] and resume == 5
    batch, resume = log.read(2, limit=2, to_offset=5)
    assert batch.offset.tolist() == [2, 3] and resume == 4
    assert log.read(5, to_offset=5)[0].offset.tolist() == []
    assert log.read(0, limit=0)[1] == 0
    assert log.read(50)[1] == 50


def test_read_dtypes(log):
    log.append([ev("a"), ev("b", type="purchase", price=1.0)])
    b = all_events(log)
    assert (b.offset.dtype, b.ts.dtype, b.type.dtype) == (np.int64, np.int64, np.int8)
    assert b.price.dtype == np.float64 and math.isnan(b.price[0])
    assert b.user_id.dtype == object and b.quantity.dtype == np.int64


def test_read_user_filters(log):
    log.append([ev("a", "u1", 10), ev("b", "u2", 11), ev("c", "u1", 30), ev("d", "u1", 20)])
    ts = {k: validate_event(ev(k, minute=m)).ts_us for k, m in [("10", 10), ("20", 20), ("30", 30)]}
    assert log.read_user("u1").event_id.tolist() == ["a", "c", "d"]  # offset order
    assert log.read_user("u1", until_ts_us=ts["20"]).event_id.tolist() == ["a", "d"]
    assert log.read_user("u1", before_ts_us=ts["20"]).event_id.tolist() == ["a"]
    assert log.read_user("u1", limit=2).event_id.tolist() == ["c", "d"]  # newest two
    assert log.read_user("u1", until_ts_us=ts["30"], limit=1).event_id.tolist() == ["d"]
    assert len(log.read_user("nobody")) == 0


def test_stats(log):
    log.append([ev("a", "u1", 1), ev("b", "u2", 2), ev("bad", type="refund")])
    s = log.stats()
    assert (s["events"], s["users"], s["next_offset"], s["quarantined"]) == (2, 2, 2, 1)
    assert s["first_ts_us"] < s["last_ts_us"] and s["size_bytes"] > 0


# -- erasure and pseudonyms ----------------------------------------------------------------


def test_erase_user_keeps_offsets_unique(log):
    log.append([ev("a", "u1"), ev("b", "u2"), ev("c", "u1"), ev("q", "u1", type="refund")])
    log.append([{"event_id": "z", "user_id": "u1", "junk": 1}, ev("y", "u2", type="purchase")])
    out = log.erase_user("u1")
    assert (out["events"], out["quarantine"]) == (2, 2)
    assert all_events(log).event_id.tolist() == ["b"]
    assert [json.loads(q["raw"])["user_id"] for q in log.read_quarantine()] == ["u2"]
    assert log.append([ev("d", "u3")]).outcomes[0].offset == 3  # never reused
    assert log.erase_user("u1")["events"] == 0


def test_pseudonymizer_applies_to_log_and_quarantine(tmp_path):
    def pseudo(user_id: str) -> str:
        return "p:" + hashlib.sha256(user_id.encode()).hexdigest()[:12]

    with EventLog(tmp_path / "e.db", pseudonymizer=pseudo) as log:
        log.append([ev("a", "alice"), ev("b", "alice", type="purchase")])
        log.append([ev("c", "x" * 200)])
        stored = log.stored_user_id("alice")
        assert stored == pseudo("alice")
        assert log.read_user(stored).event_id.tolist() == ["a"]
        assert len(log.read_user("alice")) == 0
        raws = [q["raw"] + q["reason"] for q in log.read_quarantine()]
        assert len(raws) == 2
        assert all("alice" not in raw and "x" * 100 not in raw for raw in raws)
        out = log.erase_user(stored)
        assert out == {"events": 1, "quarantine": 1, "wal_checkpointed": True}


# -- concurrency and crashes -----------------------------------------------------------------


def test_concurrent_appends_from_threads(log):
    n_threads, n_batches, size = 8, 12, 15
    results: dict[int, list] = {t: [] for t in range(n_threads)}
    errors = []
    start = threading.Barrier(n_threads)

    def work(t: int) -> None:
        try:
            start.wait()
            for b in range(n_batches):
                batch = [ev(f"t{t}-b{b}-{i}", f"u{i}") for i in range(size)]
                batch.append(ev(f"shared-{b}"))  # every thread sends it; one wins
                results[t].append(log.append(batch))
        except Exception as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    total = n_threads * n_batches * size + n_batches
    ids = all_events(log).event_id.tolist()
    assert len(ids) == total and Counter(ids).most_common(1)[0][1] == 1
    assert all_events(log).offset.tolist() == list(range(total))
    for rs in results.values():
        for r in rs:
            offs = [o.offset for o in r.outcomes if o.status == "accepted"]
            assert offs == list(range(offs[0], offs[0] + len(offs)))  # contiguous per batch
    assert sum(r.duplicates for rs in results.values() for r in rs) == (n_threads - 1) * n_batches


CHILD = textwrap.dedent(
    """
    import sys
    from online.eventlog import EventLog

    log = EventLog(sys.argv[1])
    i = 0
    while True:
        batch = [{"event_id": f"k{i}-{j}", "user_id": f"u{j}", "type": "view",
                  "ts": "2011-05-31T10:00:00Z"} for j in range(1 + i % 7)]
        r = log.append(batch)
        ids = ",".join(o.event_id for o in r.outcomes if o.status == "accepted")
        print(f"{r.last_offset} {ids}", flush=True)
        i += 1
    """
)


def test_acknowledged_appends_survive_sigkill(tmp_path):
    path = tmp_path / "crash.db"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdout=subprocess.PIPE, cwd=REPO, text=True,
    )  # fmt: skip
    acked: list[str] = []
    try:
        for line in child.stdout:  # type: ignore[union-attr]
            acked.append(line)
            if len(acked) >= 150:
                break
        os.kill(child.pid, signal.SIGKILL)  # mid-run: the child is still appending
        rest = child.stdout.read()  # type: ignore[union-attr]
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    lines = acked + rest.splitlines(keepends=True)
    complete = [ln for ln in lines if ln.endswith("\n")]  # a torn last line was never acked
    with EventLog(path) as log:
        batch = all_events(log)
        where = dict(zip(batch.event_id.tolist(), batch.offset.tolist(), strict=True))
        counts = Counter(batch.event_id.tolist())
        assert log._writer.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    for line in complete:
        last, ids = line.split()
        ids = ids.split(",")
        assert all(counts[i] == 1 for i in ids), line
        assert where[ids[-1]] == int(last)
    assert batch.offset.tolist() == list(range(len(batch)))  # unique, and no holes


def test_short_lived_threads_reuse_reader_connections(log):
    log.append([ev("a")])
    for _ in range(20):  # like a thread pool whose idle workers exit and get replaced
        th = threading.Thread(target=lambda: log.read_user("u1"))
        th.start()
        th.join()
    assert len(log._readers) == 1


def test_readers_see_whole_batches_only(log):
    done = threading.Event()
    seen_sizes: list[int] = []
    holes: list[list[int]] = []

    def reader() -> None:
        while not done.is_set():
            batch = all_events(log)
            seen_sizes.append(len(batch))
            if batch.offset.tolist() != list(range(len(batch))):
                holes.append(batch.offset.tolist())

    th = threading.Thread(target=reader)
    th.start()
    try:
        for k in range(40):
            log.append([ev(f"b{k}-{i}") for i in range(10)])
    finally:
        done.set()
        th.join()
    assert seen_sizes and all(n % 10 == 0 for n in seen_sizes) and not holes
