"""Fuzz test of the ingest path: Python ``EventLog.append``, ``POST /v1/events`` and file ingest.

Hypothesis builds batches of good events mixed with events broken in exactly one way (edge
timestamps, lone surrogates, deep nesting, huge floats, NUL and control characters, non-objects,
wrong types, unknown and missing fields, in-batch duplicates, and for files lines that are not
JSON). Each payload carries its expected outcome, and every door must give it: no exception and
no 5xx, each bad event rejected by index naming the broken field, each good event stored exactly
once, and every rejected payload in the quarantine.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offline.cli import cli
from offline.datasets import iter_jsonl
from offline.ingest import ingest_records
from online.api import ApiSettings, create_app
from online.eventlog import EventLog
from online.events import EVENT_FIELDS, WIRE_NAMES

FUZZ = settings(max_examples=25, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
TEXT_FIELDS = ("event_id", "user_id", "item_id", "category", "session_id")
EDGE_TS = ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
           "0001-01-01T00:00:00.000001+00:01")
_ids = itertools.count()


@dataclass(frozen=True)
class Deep:
    """A list nested ``depth`` levels, written as raw JSON text (json.dumps would recurse)."""

    depth: int

    def build(self) -> list:
        value: list = []
        for _ in range(self.depth - 1):
            value = [value]
        return value


@dataclass(frozen=True)
class Line:
    """An input line of a file that is no JSON at all (file ingest only)."""

    data: bytes


@dataclass
class Case:
    payload: Any
    expect: str  # "accepted", "duplicate" or "rejected"
    field: str | None = None


def to_json(value: Any) -> str:
    """JSON text of ``value`` (Deep as nested brackets; lone surrogates as \\udXXX escapes)."""
    if isinstance(value, Deep):
        return "[" * value.depth + "]" * value.depth
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return json.dumps(value)


def to_python(value: Any) -> Any:
    if isinstance(value, Deep):
        return value.build()
    if isinstance(value, dict):
        return {k: to_python(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_python(v) for v in value]
    return value


# -- strategies ------------------------------------------------------------------------------

_zones = st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-14)),
                          timezone(timedelta(hours=5, minutes=30))])
_good_ts = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(2025, 1, 1), timezones=_zones)
    .map(lambda d: d.isoformat()),
    st.just("0001-01-01T00:00:00+00:00"),
)
_label = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=0, max_size=12)


@st.composite
def good_event(draw) -> dict:
    n = next(_ids)
    event = {"event_id": f"fz-{n}", "user_id": draw(st.sampled_from(["u1", "u2", "ü-3"])),
             "type": draw(st.sampled_from(WIRE_NAMES)), "ts": draw(_good_ts)}
    for name in ("item_id", "category", "session_id"):
        if draw(st.booleans()):
            event[name] = draw(_label | st.none())
    if event["type"] in ("purchase", "refund") or draw(st.booleans()):
        event["price"] = draw(st.floats(0, 1e6, allow_nan=False) | st.integers(0, 1000))
    if draw(st.booleans()):
        event["quantity"] = draw(st.integers(1, 100_000))
    return event


_control = st.sampled_from([chr(c) for c in (*range(32), 127)])
_surrogate = st.integers(0xD800, 0xDFFF).map(chr)
_wrong = st.sampled_from([
    ("user_id", 123), ("user_id", None), ("event_id", ""), ("event_id", "x" * 129),
    ("quantity", "3"), ("quantity", 1.5), ("quantity", True), ("quantity", 0),
    ("quantity", 10**30), ("price", "9.5"), ("price", -1.0), ("price", True), ("type", "click"),
    ("type", None), ("ts", 1306886400), ("ts", "2011-06-01T00:00:00"), ("ts", "yesterday"),
    ("item_id", 7), ("category", ["a"]), ("session_id", {"a": 1}),
])


@st.composite
def bad_event(draw) -> Case:
    event = draw(good_event())
    kind = draw(st.sampled_from(["edge_ts", "garbage_ts", "surrogate", "control", "deep",
                                 "huge", "non_object", "wrong", "unknown", "missing"]))
    if kind == "edge_ts":
        event["ts"] = draw(st.sampled_from(EDGE_TS))
        return Case(event, "rejected", "ts")
    if kind == "garbage_ts":
        event["ts"] += draw(st.sampled_from(["\x00garbage", "\x00", " ", "junk", "\n", "Z"]))
        return Case(event, "rejected", "ts")
    if kind in ("surrogate", "control"):
        name = draw(st.sampled_from(TEXT_FIELDS))
        bad = draw(_surrogate if kind == "surrogate" else _control)
        event[name] = draw(st.sampled_from([f"a{bad}b", bad, f"ok{bad}"]))
        return Case(event, "rejected", name)
    if kind == "deep":
        name = draw(st.sampled_from(["price", "item_id", "extra", "quantity"]))
        event[name] = Deep(draw(st.sampled_from([2, 40, 985])))
        return Case(event, "rejected", name)
    if kind == "huge":
        event["type"] = draw(st.sampled_from(["purchase", "refund"]))
        price, quantity = draw(st.sampled_from([
            (1e305, 100_000), (1.7976931348623157e308, 1), (1e308, 2), (float("inf"), 1),
            (float("nan"), 1), (1e12, 2), (5e7, 100_000),
        ]))
        event["price"], event["quantity"] = price, quantity
        return Case(event, "rejected", "price")
    if kind == "non_object":
        other = draw(st.sampled_from([[1, 2, 3], [event["event_id"], "rawcust"], 42, "text",
                                      None, True, 1.5, []]))
        return Case(other, "rejected", "<event>")
    if kind == "wrong":
        name, value = draw(_wrong)
        if name == "price":
            event["type"] = "purchase"
        event[name] = value
        return Case(event, "rejected", name)
    if kind == "unknown":
        name = draw(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1,
                            max_size=8).filter(lambda k: k not in EVENT_FIELDS))
        event[name] = draw(st.sampled_from(["x", 1, None, Deep(3)]))
        return Case(event, "rejected", name)
    name = draw(st.sampled_from(["event_id", "user_id", "type", "ts"]))
    del event[name]
    return Case(event, "rejected", name)


@st.composite
def batches(draw, *, lines: bool = False) -> list[Case]:
    kinds = st.sampled_from(["good", "good", "bad", "bad", "dup"] + ["line"] * lines)
    cases: list[Case] = []
    for kind in draw(st.lists(kinds, min_size=1, max_size=25)):
        goods = [c.payload for c in cases if c.expect == "accepted"]
        if kind == "good" or (kind == "dup" and not goods):
            cases.append(Case(draw(good_event()), "accepted"))
        elif kind == "dup":
            cases.append(Case(dict(draw(st.sampled_from(goods))), "duplicate"))
        elif kind == "line":
            data = draw(st.sampled_from([b"{not json", b"\xff\xfe", b"[" * 5000, b"{\"a\":",
                                         b"'single'", b"NaNa", b"\x00"]))
            cases.append(Case(Line(data), "rejected", "<line>"))
        else:
            cases.append(draw(bad_event()))
    return cases


# -- checks ------------------------------------------------------------------------------------


def check_outcomes(cases: list[Case], outcomes: list[dict]) -> None:
    """Every payload got its expected outcome; bad ones by index, naming the field, with why."""
    assert [o["index"] for o in outcomes] == list(range(len(cases)))
    for case, got in zip(cases, outcomes, strict=True):
        assert got["status"] == case.expect, (case, got)
        if case.expect == "rejected":
            assert got["field"] == case.field and got["reason"], (case, got)


def check_log(log: EventLog, cases: list[Case], outcomes: list[dict], before: int) -> None:
    """Each good event stored exactly once at its offset; every rejected payload quarantined."""
    accepted = {o["offset"]: c.payload["event_id"]
                for c, o in zip(cases, outcomes, strict=True) if o["status"] == "accepted"}
    batch, _ = log.read(0)
    stored = dict(zip(batch.offset.tolist(), batch.event_id.tolist(), strict=True))
    assert {o: stored.get(o) for o in accepted} == accepted
    assert len(set(batch.event_id.tolist())) == len(batch)  # nothing stored twice
    rejected = [o["index"] for o in outcomes if o["status"] == "rejected"]
    kept = log.read_quarantine(limit=1_000_000)
    assert [q["batch_index"] for q in kept[before:]] == rejected
    for row, index in zip(kept[before:], rejected, strict=True):
        assert row["field"] == cases[index].field and row["reason"]


def as_dicts(result) -> list[dict]:
    return [o._asdict() for o in result.outcomes]


# -- the three doors ---------------------------------------------------------------------------


@FUZZ
@given(cases=batches())
def test_fuzz_python_append(cases: list[Case]) -> None:
    with EventLog(":memory:") as log:
        result = log.append([to_python(c.payload) for c in cases])
        check_outcomes(cases, as_dicts(result))
        check_log(log, cases, as_dicts(result), 0)
        again = log.append([to_python(c.payload) for c in cases])  # a resend changes nothing
        assert again.accepted == 0 and again.duplicates == result.accepted + result.duplicates


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    s = ApiSettings(data_dir=tmp_path_factory.mktemp("fuzz") / "data", max_body_bytes=2**24)
    with TestClient(create_app(s)) as client:
        yield client, s


@FUZZ
@given(cases=batches())
def test_fuzz_http_post(api, cases: list[Case]) -> None:
    client, s = api
    with EventLog(s.event_log_path) as log:
        before = len(log.read_quarantine(limit=1_000_000))
        body = '{"events": [' + ",".join(to_json(c.payload) for c in cases) + "]}"
        r = client.post("/v1/events", content=body.encode(), params={"outcomes": "all"},
                        headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        check_outcomes(cases, r.json()["outcomes"])
        check_log(log, cases, r.json()["outcomes"], before)
    for user in ("u1", "ü-3"):  # the projection took them: profiles serve finite JSON
        r = client.get(f"/v1/users/{user}/profile")
        assert r.status_code in (200, 404), r.text
        json.loads(r.text, parse_constant=lambda name: pytest.fail(f"{name} in a profile"))


def write_lines(path, cases: list[Case]) -> None:
    with open(path, "wb") as fh:
        for c in cases:
            fh.write(c.payload.data if isinstance(c.payload, Line) else to_json(c.payload).encode())
            fh.write(b"\n")


def file_outcomes(summary, cases: list[Case], log: EventLog, before_offset: int) -> list[dict]:
    """Outcomes per line from a summary (problems by line) and the log (offsets by event id)."""
    problems = {p["line"]: p for p in summary.problems}
    batch, _ = log.read(before_offset)
    offset_of = dict(zip(batch.event_id.tolist(), batch.offset.tolist(), strict=True))
    out = []
    for index, case in enumerate(cases):
        p = problems.get(index + 1)
        if p is not None:
            out.append({"index": index, "status": "rejected", "field": p["field"],
                        "reason": p["reason"]})
        elif case.expect == "duplicate":
            out.append({"index": index, "status": "duplicate"})
        else:
            out.append({"index": index, "status": "accepted",
                        "offset": offset_of.get(case.payload["event_id"])})
    return out


@FUZZ
@given(cases=batches(lines=True))
def test_fuzz_file_ingest(tmp_path_factory, cases: list[Case]) -> None:
    path = tmp_path_factory.mktemp("lines") / "events.jsonl"
    write_lines(path, cases)
    with EventLog(path.parent / "events.db") as log:
        summary = ingest_records(log, iter_jsonl(path), batch_size=7)
        assert summary.balanced and summary.skipped == 0
        assert summary.rejected == sum(c.expect == "rejected" for c in cases)
        assert summary.duplicates == sum(c.expect == "duplicate" for c in cases)
        outcomes = file_outcomes(summary, cases, log, 0)
        check_outcomes(cases, outcomes)
        assert len(log.read_quarantine(limit=1_000_000)) == summary.rejected
        assert log.count() == summary.accepted


@settings(max_examples=3, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(cases=batches(lines=True))
def test_fuzz_cli_ingest_projects_and_serves_valid_json(tmp_path_factory, cases) -> None:
    data = tmp_path_factory.mktemp("cli")
    path = data / "events.jsonl"
    write_lines(path, cases)
    run = CliRunner().invoke(cli, ["--data-dir", str(data / "d"), "ingest", str(path), "--json"])
    assert run.exit_code == 0, run.output
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    accepted = sum(c.expect == "accepted" for c in cases)
    assert (summary["accepted"], summary["projected_offset"]) == (accepted, accepted)
    assert summary["rejected"] == sum(c.expect == "rejected" for c in cases)
    users = {c.payload["user_id"] for c in cases if c.expect == "accepted"}
    for user in sorted(users)[:2]:
        out = CliRunner().invoke(cli, ["--data-dir", str(data / "d"), "profile", user, "--json"])
        assert out.exit_code == 0, out.output
        json.loads(out.stdout, parse_constant=lambda name: pytest.fail(f"{name} in --json"))
