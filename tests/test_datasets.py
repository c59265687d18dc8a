"""Tests of the dataset loaders, event file readers and the synthetic generator."""

from __future__ import annotations

import gzip
import io
import sys
from pathlib import Path

import pandas as pd
import pytest

from offline.datasets import (
    Record,
    Tally,
    find_online_retail,
    iter_csv_events,
    iter_jsonl,
    iter_online_retail,
)
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
    raw = pd.read_csv(ONLINE_RETAIL, dtype=str, keep_default_na=False)
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
    return list(iter_online_retail(io.BytesIO((HEADER + "\n".join(rows) + "\n").encode())))


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
