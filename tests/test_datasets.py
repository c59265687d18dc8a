"""Tests of the dataset loaders, event file readers and the synthetic generator."""

from __future__ import annotations

import gzip
import io
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from offline.datasets import (
    Record,
    Tally,
    find_online_retail,
    generate,
    generate_columns,
    iter_csv_events,
    iter_jsonl,
    iter_online_retail,
    write_jsonl,
)
from offline.datasets.encode import TYPE_NAMES, jsonl_from_columns, payloads_from_columns
from offline.datasets.online_retail import london_to_utc_iso

ONLINE_RETAIL = find_online_retail(None)
needs_online_retail = pytest.mark.skipif(
    ONLINE_RETAIL is None, reason="Online Retail file not found (../shared/datasets/)"
)
HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"


# --- Online Retail: the whole file -------------------------------------------------------


@pytest.fixture(scope="module")
def online_retail() -> list[Record]:
    assert ONLINE_RETAIL is not None
    return list(iter_online_retail(ONLINE_RETAIL))


@needs_online_retail
def test_online_retail_every_line_is_accounted_for(online_retail):
    tally = Tally.of(online_retail)
    assert tally.as_dict() == {
        "lines": 541_909,
        "payloads": 406_829,
        "skipped": {"no_customer": 135_080},
        "types": {"purchase": 397_924, "refund": 8_905},
    }
    assert tally.balanced
    assert [r.line for r in online_retail] == list(range(2, 541_911))


@needs_online_retail
def test_online_retail_figures_match_the_readme(online_retail):
    # an independent read of the raw columns for the figures that include skipped lines
    raw = pd.read_csv(ONLINE_RETAIL, dtype=str, keep_default_na=False,
                      usecols=["InvoiceNo", "CustomerID"])
    cancelled = raw["InvoiceNo"].str.startswith("C")
    assert cancelled.sum() == 9_288
    refunds = [r.payload for r in online_retail if r.payload and r.payload["type"] == "refund"]
    assert len(refunds) == (cancelled & (raw["CustomerID"] != "")).sum() == 8_905
    assert all(p["quantity"] > 0 for p in refunds)

    payloads = [r.payload for r in online_retail if r.payload is not None]
    priced = [p for p in payloads if p["type"] == "purchase" and p["price"] > 0]
    assert len(priced) == 397_884
    assert len({p["session_id"] for p in priced}) == 18_532
    assert len({p["user_id"] for p in priced}) == 4_338
    assert sum(p["price"] <= 0 for p in payloads) == 40
    assert len({p["event_id"] for p in payloads}) == len(payloads)
    assert all(p["ts"].endswith("+00:00") and p["user_id"].isdigit() for p in payloads)


@needs_online_retail
def test_online_retail_known_lines(online_retail):
    by_line = {r.line: r for r in online_retail}
    assert by_line[2].payload == {
        "event_id": "or-536365-0", "user_id": "17850", "type": "purchase",
        "ts": "2010-12-01T08:26:00+00:00", "item_id": "85123A", "category": None,
        "session_id": "536365", "price": 2.55, "quantity": 6,
    }
    # a cancellation: refund with the absolute quantity
    assert by_line[143].payload == {
        "event_id": "or-C536379-0", "user_id": "14527", "type": "refund",
        "ts": "2010-12-01T09:41:00+00:00", "item_id": "D", "category": None,
        "session_id": "C536379", "price": 27.5, "quantity": 1,
    }
    # June: British Summer Time, 08:24 local is 07:24 UTC; second line of its invoice
    assert by_line[221827].payload == {
        "event_id": "or-556282-1", "user_id": "15679", "type": "purchase",
        "ts": "2011-06-10T07:24:00+00:00", "item_id": "15044B", "category": None,
        "session_id": "556282", "price": 2.95, "quantity": 6,
    }
    assert by_line[3].skip is None
    first_anonymous = next(r for r in online_retail if r.payload is None)
    assert first_anonymous.skip == "no_customer"
    assert first_anonymous.message == f"line {first_anonymous.line}: no CustomerID"


@needs_online_retail
def test_online_retail_ids_are_deterministic_and_read_from_stdin(online_retail, monkeypatch):
    with gzip.open(ONLINE_RETAIL, "rt", encoding="utf-8") as f:
        head = "".join(next(f) for _ in range(1_001))
    packed = gzip.compress(head.encode())
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(packed)))
    from_stdin = list(iter_online_retail("-"))
    again = list(iter_online_retail(io.BytesIO(head.encode())))
    assert from_stdin == again == online_retail[:1_000]


# --- Online Retail: the rules on small inputs --------------------------------------------


def _retail(rows: list[str]) -> list[Record]:
    text = HEADER + "\n".join(rows) + "\n"
    records = list(iter_online_retail(io.BytesIO(text.encode())))
    assert list(iter_online_retail(io.StringIO(text))) == records
    return records


def test_online_retail_schema_breaks_are_kept_for_the_validator():
    records = _retail([
        "A1,B,bad debt,1,2011-08-12 14:50:00,-11062.06,12346.0,United Kingdom",
        "536999,X,zero,0,2011-01-05 10:00:00,1.0,12346.0,United Kingdom",
        "537000,X,negative,-3,2011-01-05 10:00:00,1.0,12346.0,United Kingdom",
        "537000,Y,anonymous,2,2011-01-05 10:00:00,1.0,,United Kingdom",
        "537000,Z,bad qty,two,not a date,1.x,12346.0,United Kingdom",
        "C537001,X,cancel,-5,2011-01-05 11:00:00,1.0,12346.0,United Kingdom",
    ])
    payloads = [r.payload for r in records]
    assert payloads[0]["price"] == -11062.06 and payloads[0]["type"] == "purchase"
    assert payloads[1]["quantity"] == 0
    assert payloads[2]["quantity"] == -3 and payloads[2]["type"] == "purchase"
    assert payloads[3] is None and records[3].skip == "no_customer"
    # junk stays junk so that the validator names the field; position counts skipped lines
    assert (payloads[4]["quantity"], payloads[4]["price"], payloads[4]["ts"]) == (
        "two", "1.x", "not a date")
    assert [p["event_id"] for p in payloads if p] == [
        "or-A1-0", "or-536999-0", "or-537000-0", "or-537000-2", "or-C537001-0"]
    assert payloads[5]["type"] == "refund" and payloads[5]["quantity"] == 5


@pytest.mark.parametrize(("local", "utc"), [
    ("2011-01-15 12:00:00", "2011-01-15T12:00:00+00:00"),  # GMT
    ("2011-06-01 12:00:00", "2011-06-01T11:00:00+00:00"),  # BST
    ("2011-03-27 00:59:00", "2011-03-27T00:59:00+00:00"),  # last minute of GMT
    ("2011-03-27 02:00:00", "2011-03-27T01:00:00+00:00"),  # first minute of BST
    ("2011-03-27 01:30:00", "2011-03-27T01:30:00+00:00"),  # skipped hour: winter offset
    ("2011-10-30 01:30:00", "2011-10-30T00:30:00+00:00"),  # repeated hour: first occurrence
    ("2011-10-30 02:00:00", "2011-10-30T02:00:00+00:00"),
    ("6/1/2011 12:00", "2011-06-01T11:00:00+00:00"),  # the spreadsheet export's format
])
def test_london_times_become_utc_with_dst(local, utc):
    assert london_to_utc_iso(local) == utc


def test_find_online_retail_order(tmp_path, monkeypatch):
    explicit, from_env = tmp_path / "a.csv.gz", tmp_path / "b.csv.gz"
    explicit.write_bytes(b"")
    from_env.write_bytes(b"")
    monkeypatch.setenv("PORTRAIT_ONLINE_RETAIL", str(from_env))
    assert find_online_retail(str(explicit)) == explicit.resolve()
    assert find_online_retail(str(tmp_path / "missing.csv")) == from_env.resolve()
    assert find_online_retail(None) == from_env.resolve()
    monkeypatch.delenv("PORTRAIT_ONLINE_RETAIL")
    monkeypatch.chdir(tmp_path)
    shared = find_online_retail(None)
    project_copy = Path(__file__).resolve().parents[1] / "../shared/datasets/online_retail.csv.gz"
    assert shared == (project_copy.resolve() if project_copy.is_file() else None)


# --- generic readers ---------------------------------------------------------------------


def test_jsonl_reports_malformed_lines_with_their_numbers(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        b'{"event_id": "e1", "user_id": "u1"}\n'
        b"\n"
        b'{"event_id": "e2",\n'
        b"[1, 2]\n"
        b"null\n"
        b'{"event_id": "\xff"}\n'
        b'{"event_id": "e3"}'  # no final newline
    )
    records = list(iter_jsonl(path))
    assert [(r.line, r.skip) for r in records] == [
        (1, None), (2, "blank"), (3, "invalid_json"), (4, "not_an_object"),
        (5, "not_an_object"), (6, "invalid_json"), (7, None)]
    assert records[2].message.startswith("line 3: invalid JSON: ")
    assert records[4].message == "line 5: not a JSON object: null"
    assert records[6].payload == {"event_id": "e3"}
    assert Tally.of(records).balanced
    # gzip and stdin give the same records
    gz = tmp_path / "events.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert list(iter_jsonl(gz)) == records
    assert list(iter_jsonl(io.BytesIO(path.read_bytes()))) == records


def test_jsonl_from_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"a": 1}\n{"b": 2}\n')))
    assert [r.payload for r in iter_jsonl("-")] == [{"a": 1}, {"b": 2}]
    assert not sys.stdin.closed


def test_csv_events_parse_numbers_and_nulls(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(
        "\ufeffevent_id,user_id,type,ts,item_id,category,session_id,price,quantity\n"
        "e1,u1,purchase,2024-01-01T00:00:00+00:00,i1,c1,s1,9.5,2\n"
        "e2,u1,view,2024-01-01T00:01:00+00:00,i1,,,,\n"
        'e3,u2,"refund",2024-01-02T00:00:00+00:00,"i,2",,s2,abc,1.5\n'
        "e4,u2,view\n"
        "\n"
        "e5,u3,view,2024-01-03T00:00:00+00:00,i1,c1,s3,1e400,3.0\n",
        encoding="utf-8",
    )
    records = list(iter_csv_events(path))
    assert [(r.line, r.skip) for r in records] == [
        (2, None), (3, None), (4, None), (5, "bad_row"), (6, "blank"), (7, None)]
    assert records[0].payload == {
        "event_id": "e1", "user_id": "u1", "type": "purchase", "ts": "2024-01-01T00:00:00+00:00",
        "item_id": "i1", "category": "c1", "session_id": "s1", "price": 9.5, "quantity": 2}
    assert records[1].payload["category"] is None and records[1].payload["price"] is None
    assert records[1].payload["quantity"] is None
    assert records[2].payload["item_id"] == "i,2"
    assert records[2].payload["price"] == "abc" and records[2].payload["quantity"] == 1.5
    assert records[3].message == "line 5: 3 cells, the header has 9"
    assert records[5].payload["price"] == float("inf") and records[5].payload["quantity"] == 3


def test_csv_unknown_columns_are_passed_through(monkeypatch):
    text = "event_id,user_id,colour\ne1,u1,red\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    assert [r.payload for r in iter_csv_events("-")] == [
        {"event_id": "e1", "user_id": "u1", "colour": "red"}]


# --- synthetic generator -----------------------------------------------------------------

SMALL = {"n_users": 2_000, "n_events": 100_000, "seed": 11}


@pytest.fixture(scope="module")
def synthetic_columns() -> dict[str, np.ndarray]:
    chunks = list(generate_columns(**SMALL, chunk_size=30_000))
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def _jsonl_bytes(**kwargs) -> bytes:
    out = io.BytesIO()
    written = write_jsonl(out, **kwargs)
    assert written == kwargs["n_events"]
    return out.getvalue()


def test_generator_same_seed_same_bytes_other_seed_other_bytes():
    args = {"n_users": 300, "n_events": 20_000}
    first = _jsonl_bytes(**args, seed=3)
    assert first == _jsonl_bytes(**args, seed=3)
    assert first != _jsonl_bytes(**args, seed=4)
    # the stream does not depend on the chunk size
    assert first == _jsonl_bytes(**args, seed=3, chunk_size=777)
    assert first.count(b"\n") == 20_000


def test_generator_chunks_are_bounded_and_ids_sequential():
    sizes, ids = [], []
    for chunk in generate_columns(500, 25_000, seed=5, chunk_size=4_000):
        sizes.append(len(chunk["ts"]))
        assert {len(v) for v in chunk.values()} == {len(chunk["ts"])}
        ids += chunk["event_id"].tolist()
    assert sizes == [4_000] * 6 + [1_000]
    assert ids == [f"syn-5-{n}" for n in range(25_000)]
    assert [len(c) for c in generate(500, 9_000, seed=5, chunk_size=4_000)] == [4_000, 4_000, 1_000]
    assert list(generate_columns(500, 0, seed=5)) == []


def test_generator_columns_dicts_and_json_describe_the_same_events():
    args = {"n_users": 400, "n_events": 12_000, "seed": 8, "chunk_size": 5_000}
    chunks = list(generate_columns(**args))
    for column, dtype in [("ts", np.int64), ("type", np.int8), ("price", np.float64),
                          ("quantity", np.int64), ("user_id", object), ("event_id", object)]:
        assert chunks[0][column].dtype == dtype
    payloads = [p for chunk in generate(**args) for p in chunk]
    assert payloads == [p for chunk in chunks for p in payloads_from_columns(chunk)]
    data = _jsonl_bytes(**args)
    assert data == b"".join(jsonl_from_columns(chunk) for chunk in chunks)
    assert [json.loads(line) for line in data.splitlines()] == payloads
    assert [r.payload for r in iter_jsonl(io.BytesIO(data))] == payloads
    # and the dicts say what the columns say
    columns = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for i in (0, 1, 4_321, 11_999):
        p = payloads[i]
        assert (datetime.fromisoformat(p["ts"]) - epoch) // timedelta(microseconds=1) == (
            columns["ts"][i])
        assert TYPE_NAMES[columns["type"][i]] == p["type"]
        assert (p["user_id"], p["item_id"], p["category"], p["session_id"], p["price"],
                p["quantity"]) == (
            columns["user_id"][i], columns["item_id"][i], columns["category"][i],
            columns["session_id"][i], columns["price"][i], columns["quantity"][i])


def test_generator_writes_to_paths_stdout_and_text_streams(tmp_path, capsysbinary):
    args = {"n_users": 50, "n_events": 500, "seed": 2}
    expected = _jsonl_bytes(**args)
    write_jsonl(tmp_path / "events.jsonl", **args)
    assert (tmp_path / "events.jsonl").read_bytes() == expected
    text, progress = io.StringIO(), []
    write_jsonl(text, **args, chunk_size=200, on_chunk=progress.append)
    assert text.getvalue().encode() == expected and progress == [200, 200, 100]
    with open(tmp_path / "text.jsonl", "w", encoding="utf-8") as f:
        f.write("")  # a text-mode file: written through its binary buffer
        write_jsonl(f, **args)
    assert (tmp_path / "text.jsonl").read_bytes() == expected
    write_jsonl("-", **args)
    assert capsysbinary.readouterr().out == expected


def test_generator_funnel_shape(synthetic_columns):
    kind, session = synthetic_columns["type"], synthetic_columns["session_id"]
    share = np.bincount(kind, minlength=5) / len(kind)
    assert share[0] > 0.85  # views dominate
    assert share[1] > share[2] > 0 and share[3] > share[4] > 0
    sessions = {s for s in session.tolist() if s is not None}
    buying = set(session[kind == 3].tolist())
    carting = set(session[kind == 1].tolist())
    assert buying <= carting <= sessions
    assert 0.01 < len(buying) / len(sessions) < 0.08  # a few percent of sessions convert
    assert 0.005 < share[4] / share[3] < 0.08  # a few percent of purchase lines refunded
    assert all(s is None for s in session[kind == 4].tolist())  # refunds are out of session
    assert 4 < len(kind) / len(sessions) < 9


def test_generator_refunds_come_days_after_their_purchase(synthetic_columns):
    c = synthetic_columns
    bought = {}
    for user, item, kind, ts in zip(c["user_id"].tolist(), c["item_id"].tolist(),
                                    c["type"].tolist(), c["ts"].tolist(), strict=True):
        if kind == 3:
            bought.setdefault((user, item), []).append(ts)
        elif kind == 4:
            assert min(ts - t for t in bought[(user, item)]) >= 3_600 * 1_000_000


def test_generator_late_event_share(synthetic_columns):
    newest: dict[str, int] = {}
    late = 0
    for user, ts in zip(synthetic_columns["user_id"].tolist(), synthetic_columns["ts"].tolist(),
                        strict=True):
        if ts < newest.get(user, ts):
            late += 1
        newest[user] = max(ts, newest.get(user, ts))
    assert 0.006 < late / len(synthetic_columns["ts"]) < 0.014


def test_generator_traffic_is_realistic(synthetic_columns):
    c = synthetic_columns
    start = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000
    assert c["ts"].min() >= start and np.all(c["ts"] % 1_000 == 0)
    assert c["ts"].max() < start + 160 * 86_400 * 1_000_000
    hours = (c["ts"] // 3_600_000_000) % 24
    by_hour = np.bincount(hours, minlength=24)
    assert by_hour[2:5].sum() < 0.3 * by_hour[18:21].sum()  # nights are quiet
    _, per_user = np.unique(c["user_id"], return_counts=True)
    top = np.sort(per_user)[::-1]
    assert top[: len(top) // 100].sum() > 0.05 * len(c["ts"])  # heavy-tailed activity
    _, per_item = np.unique(c["item_id"], return_counts=True)
    assert np.sort(per_item)[-1] > 20 * np.median(per_item)  # Zipf-popular items
    assert len(set(c["category"].tolist())) == 20
    # one price per item
    prices = pd.DataFrame({"item": c["item_id"], "price": c["price"]}).groupby("item").price
    assert (prices.nunique() == 1).all() and (c["price"] > 0).all()
    assert set(np.unique(c["type"]).tolist()) == {0, 1, 2, 3, 4}


def test_generated_events_pass_the_event_schema():
    from online import events

    assert TYPE_NAMES == tuple(t.wire_name for t in events.EventType)
    for chunk in generate(300, 5_000, seed=1):
        for payload in chunk:
            events.validate_event(payload)
