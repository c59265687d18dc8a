"""Inputs at the edges of the ingest path: a per-event rejection or a clear 4xx, never a 500.

One test per defect of issue 12 (history paging, bad lines in files, edge timestamps, lone
surrogates, deep nesting, overflowing amounts, control characters, raw ids in the quarantine,
the media type of POST /v1/events); the fuzz test (test_fuzz_ingest.py) covers the classes.
"""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from offline.cli import cli
from online.api import ApiSettings, create_app
from online.eventlog import EventLog
from online.events import MAX_LINE_AMOUNT, Event, InvalidEvent, validate_event

T0 = "2024-03-01T10:00:00+00:00"
KEY = "3f1c9a7e5b2d4f608e1a3c5b7d9f1e2a-test-key"
EDGE_TS = ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00")
NOW_US = 1_900_000_000_000_000  # pinned "now" for the future rule (2030)


def ev(event_id: str, user: str = "u1", type: str = "view", ts: str = T0, **extra) -> dict:
    return {"event_id": event_id, "user_id": user, "type": type, "ts": ts, **extra}


@pytest.fixture
def settings(tmp_path) -> ApiSettings:
    return ApiSettings(data_dir=tmp_path / "data")


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as c:
        yield c


def post_raw(client, body: str) -> dict:
    r = client.post("/v1/events", content=body.encode(),
                    headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    return r.json()


def raw_json(payload: dict, text: str = "") -> str:
    """``payload`` as JSON with the value "@" replaced by raw JSON ``text`` (escapes, depth)."""
    return json.dumps(payload).replace('"@"', text)


def rejected(body: dict) -> dict[int, dict]:
    return {o["index"]: o for o in body["outcomes"] if o["status"] == "rejected"}


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity (what other JSON parsers do)."""
    def refuse(name: str):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def quarantine(data_dir) -> list[dict]:
    with EventLog(data_dir / "events.db") as log:
        return log.read_quarantine()


# -- 2. history paging ---------------------------------------------------------------------


def test_history_pages_reach_every_event_that_shares_a_timestamp(client) -> None:
    # 250 events at one time (an invoice's lines), then Online-Retail-like invoices of 40 lines
    events = [ev(f"a{k}") for k in range(250)]
    events += [ev(f"i{inv}-{k}", ts=f"2024-03-02T{inv:02d}:00:00+00:00")
               for inv in range(12) for k in range(40)]
    for start in range(0, len(events), 500):
        post_raw(client, json.dumps({"events": events[start:start + 500]}))
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 100} | ({"cursor": cursor} if cursor else {})
        body = client.get("/v1/users/u1/events", params=params).json()
        seen += [e["offset"] for e in body["events"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 8 and len(seen) == len(set(seen)) == 730
    assert seen == sorted(seen, reverse=True)
    # before= stays a time filter, and pages under it by cursor too
    seen, cursor = [], None
    while True:
        params = {"limit": 33, "before": "2024-03-02T00:00:00Z"} | (
            {"cursor": cursor} if cursor else {})
        body = client.get("/v1/users/u1/events", params=params).json()
        seen += [e["event_id"] for e in body["events"]]
        if (cursor := body["next_cursor"]) is None:
            break
    assert sorted(seen) == sorted(f"a{k}" for k in range(250))
    for before in (*EDGE_TS, "2024-03-02T00:00:00Z\u0000x"):
        r = client.get("/v1/users/u1/events", params={"before": before})
        assert r.status_code == 422 and r.json()["field"] == "before", r.text
    full = client.get("/v1/users/u1/events", params={"limit": 730}).json()
    assert len(full["events"]) == 730 and full["next_cursor"] is None
    for bad in ("nope", "!!!", "c", "c-1", "c" + "f" * 16, "C10", "c10 ", "c1\u0000"):
        r = client.get("/v1/users/u1/events", params={"cursor": bad})
        assert r.status_code == 422 and r.json()["field"] == "cursor", r.text


# -- 3, 4, 10. file ingest: every bad line rejected with its line, the rest stored and projected


def test_cli_ingest_rejects_bad_lines_and_stores_and_projects_the_rest(tmp_path) -> None:
    good = [json.dumps(ev(f"g{k}", ts=f"2024-03-01T{k:02d}:00:00Z")) for k in range(10)]
    bad = [
        json.dumps(ev("b1", ts=EDGE_TS[0])),  # overflows when converted to UTC
        "{not json",
        "[1,2,3]",
        "42",
        '"rawcust-text"',
        "null",
        json.dumps(ev("b2", ts="2024-01-01T00:00:00Z\u0000garbage")),
        json.dumps(ev("b3", user="u\u0000x")),
        '{"event_id": "b4", "user_id": "u\\ud800", "type": "view", "ts": "2024-03-01T10:00:00Z"}',
        json.dumps(ev("b5", type="purchase", price=1e305, quantity=100_000)),
        "[" * 5000 + "]" * 5000,
        json.dumps(ev("b6", extra=json.loads("[" * 900 + "]" * 900))),
    ]
    lines = good[:3] + bad + good[3:]
    src = tmp_path / "events.jsonl"
    src.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogatepass") + b"\xff\xfe\n")
    data = tmp_path / "d"
    result = CliRunner().invoke(cli, ["--data-dir", str(data), "ingest", str(src), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    n_bad = len(bad) + 1  # + the line of bad UTF-8
    assert (summary["accepted"], summary["rejected"], summary["skipped"]) == (10, n_bad, 0)
    assert summary["projected_offset"] == 10
    problems = {p["line"]: p for p in summary["problems"]}
    assert sorted(problems) == list(range(4, 4 + len(bad))) + [len(lines) + 1]
    assert problems[4]["field"] == "ts" and "ts_range" in problems[4]["reason"]
    assert problems[10]["field"] == "ts" and "iso8601" in problems[10]["reason"]
    assert problems[11]["field"] == "user_id"
    assert problems[12]["field"] == "user_id" and "unicode" in problems[12]["reason"]
    assert problems[13]["field"] == "price" and "max_amount" in problems[13]["reason"]
    assert problems[14]["field"] == "<line>"  # nested too deep to parse
    assert problems[15]["field"] == "extra"
    for line in (5, 6, 7, 8, 9):
        assert problems[line]["field"] in ("<line>", "<event>"), problems[line]
    kept = quarantine(data)
    assert len(kept) == n_bad
    raws = [row["raw"] for row in kept]
    for text in ("{not json", "[1,2,3]", "42", '"rawcust-text"', "null"):
        assert json.dumps(text) in raws  # the line as read, as a JSON string
    profile = CliRunner().invoke(cli, ["--data-dir", str(data), "profile", "u1", "--json"])
    assert strict_json(profile.stdout)["features"]["event_count"] == 10


# -- 4, 5, 6, 7, 10. HTTP: a bad event is reported by index, the good ones of the request kept


def test_http_batch_rejects_edge_inputs_per_event_and_keeps_the_good_ones(client, settings):
    deep = "[" * 985 + "]" * 985
    items = [
        json.dumps(ev("g1")),
        json.dumps(ev("x1", ts=EDGE_TS[0])),
        json.dumps(ev("x2", ts=EDGE_TS[1])),
        raw_json(ev("x3", user="@"), '"u\\ud800"'),
        raw_json(ev("x4")).replace('"x4"', '"x4", "\\udfff": 1'),
        raw_json(ev("x5", deep="@"), deep),
        raw_json(ev("x6", type="purchase", price="@"), deep),
        json.dumps(ev("x7", ts="2024-01-01T00:00:00Z\u0000garbage")),
        json.dumps(ev("x8", item_id="sku\u001b[31m")),
        "[1,2,3]", "7", "null", '"text"',
        json.dumps(ev("g2", type="purchase", price=2.5, quantity=2)),
    ]
    body = post_raw(client, '{"events": [' + ",".join(items) + "]}")
    assert (body["accepted"], body["rejected"]) == (2, len(items) - 2)
    bad = rejected(body)
    assert (bad[1]["field"], bad[2]["field"]) == ("ts", "ts")
    assert "0001-01-01" in bad[1]["reason"] and "9999-12-31" in bad[2]["reason"]
    assert "ts_range" in bad[1]["reason"]
    assert bad[3]["field"] == "user_id" and "unicode" in bad[3]["reason"]
    assert bad[5]["field"] == "deep" and bad[6]["field"] == "price"
    assert bad[7]["field"] == "ts" and bad[8]["field"] == "item_id"
    assert {bad[i]["field"] for i in (9, 10, 11, 12)} == {"<event>"}
    stored = client.get("/v1/users/u1/events").json()["events"]
    assert sorted(e["event_id"] for e in stored) == ["g1", "g2"]
    assert client.get("/v1/users/u1/profile").json()["features"]["spend_total"] == 5.0
    kept = quarantine(settings.data_dir)
    assert sorted(r["batch_index"] for r in kept) == list(range(1, len(items) - 1))
    assert any("\\ud800" in r["raw"] for r in kept)  # escaped, storable, still readable


def test_a_body_nested_too_deep_is_a_422_not_a_500(client) -> None:
    for body in ("[" * 100_000 + "]" * 100_000, '{"events": [%s]}' % ("[" * 995 + "]" * 995)):
        r = client.post("/v1/events", content=body, headers={"content-type": "application/json"})
        assert r.status_code in (400, 422), r.text
        assert r.json()["field"] == "body"
    assert client.get("/healthz").status_code == 200


def test_python_append_quarantines_what_json_cannot_hold() -> None:
    nested: list = []
    for _ in range(3000):
        nested = [nested]
    with EventLog(":memory:", pseudonymizer=lambda u: "ps_" + u[::-1]) as log:
        r = log.append([ev("e1", user="u\ud800"), ev("e2", deep=nested), {"k\ud800": 1},
                        ev("e3", price=float("nan")), ev("e4", quantity=10**5000), ev("ok")])
        assert [o.status for o in r.outcomes] == ["rejected"] * 5 + ["accepted"]
        fields = [o.field for o in r.outcomes[:5]]
        assert fields == ["user_id", "deep", "<event>", "price", "quantity"]
        assert len(log.read_quarantine()) == 5


# -- 8. as_of at the representable edges -----------------------------------------------------


def test_as_of_outside_the_representable_range_is_a_422_naming_as_of(client, tmp_path) -> None:
    post_raw(client, json.dumps(ev("e1")))
    for as_of in (*EDGE_TS, "2011-06-01T00:00:00Z\u0000x"):
        for user in ("u1", "ghost"):
            r = client.get(f"/v1/users/{user}/profile", params={"as_of": as_of})
            assert r.status_code == 422 and r.json()["field"] == "as_of", r.text
        r = client.post("/v1/profiles:batch", json={"user_ids": ["u1", "ghost"], "as_of": as_of})
        assert r.status_code == 422 and r.json()["field"] == "as_of", r.text
    r = client.get("/v1/users/u1/profile", params={"as_of": EDGE_TS[0]})
    assert "between 0001-01-01T00:00:00Z and 9999-12-31" in r.json()["detail"]
    r = client.get("/v1/users/u1/profile", params={"as_of": "9999-12-31T23:59:59Z"})
    assert r.status_code == 200, r.text  # the last representable time is fine
    data = tmp_path / "cli"
    src = tmp_path / "one.jsonl"
    src.write_text(json.dumps(ev("e1")) + "\n")
    assert CliRunner().invoke(cli, ["--data-dir", str(data), "ingest", str(src)]).exit_code == 0
    for as_of in EDGE_TS:
        out = CliRunner().invoke(cli, ["--data-dir", str(data), "profile", "u1", "--as-of", as_of])
        assert out.exit_code == 2 and "--as-of" in out.output and "between" in out.output
        assert "Traceback" not in out.output


# -- 9. amounts: bounded per event, sums always finite -----------------------------------------


def test_overflowing_amounts_are_rejected_and_sums_stay_finite(client, settings) -> None:
    body = post_raw(client, json.dumps({"events": [
        ev("p1", type="purchase", price=1e305, quantity=100_000),
        ev("p2", type="purchase", price=1.7976931348623157e308),
        ev("p3", type="purchase", price=1.7976931348623157e308),
        ev("p4", type="refund", price=MAX_LINE_AMOUNT / 10, quantity=11),
        ev("p5", type="purchase", price=MAX_LINE_AMOUNT / 4, quantity=4),  # exactly the bound
        ev("p6", type="purchase", price=MAX_LINE_AMOUNT),
    ]}))
    assert body["accepted"] == 2
    assert {i: o["field"] for i, o in rejected(body).items()} == {
        0: "price", 1: "price", 2: "price", 3: "price"}
    assert "max_amount" in rejected(body)[0]["reason"]
    r = client.get("/v1/users/u1/profile")
    assert strict_json(r.text)["features"]["spend_total"] == 2 * MAX_LINE_AMOUNT
    with pytest.raises(InvalidEvent, match="max_amount"):
        validate_event(ev("p7", type="refund", price=2e8, quantity=100_000))


def test_an_unvalidated_event_cannot_make_a_sum_non_finite(tmp_path) -> None:
    # Event objects are taken as validated by the log: the kernels saturate the line amount too
    data = tmp_path / "d"
    data.mkdir()
    huge = Event.model_construct(event_id="h1", user_id="u1", type="purchase",
                                 ts=validate_event(ev("x")).ts, price=math.inf, quantity=1,
                                 item_id=None, category=None, session_id=None)
    with EventLog(data / "events.db") as log:
        assert log.append([huge, huge.model_copy(update={"event_id": "h2"})]).accepted == 2
    result = CliRunner().invoke(cli, ["--data-dir", str(data), "profile", "u1", "--json"])
    assert result.exit_code == 0, result.output
    features = strict_json(result.stdout)["features"]
    assert features["spend_total"] == 2 * MAX_LINE_AMOUNT
    assert all(math.isfinite(v) for v in features.values() if isinstance(v, float))


# -- 10. control characters in any text field ------------------------------------------------


@pytest.mark.parametrize("field", ["event_id", "user_id", "item_id", "category", "session_id"])
@pytest.mark.parametrize("char", ["\u0000", "\t", "\n", "\u001f", "\u007f"])
def test_control_characters_in_text_fields_are_rejected(field: str, char: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        validate_event({**ev("e1"), field: f"a{char}b"})
    assert (info.value.field, info.value.rule) == (field, "no_control_chars")


@pytest.mark.parametrize("ts", [
    "2024-01-01T00:00:00Z\u0000garbage", "2024-01-01T00:00:00Z ", " 2024-01-01T00:00:00Z",
    "2024-01-01T00:00:00Z\n", "2024-W01-1T00:00:00Z", "２０２４-01-01T00:00:00Z",
    "2024-01-01T00:00:00+01:00junk", "2024-01-01T00:00:00ZZ",
])
def test_timestamps_with_trailing_garbage_or_odd_forms_are_rejected(ts: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        validate_event(ev("e1", ts=ts))
    assert (info.value.field, info.value.rule) == ("ts", "iso8601")


@pytest.mark.parametrize("ts", ["2024-01-01T00:00:00Z", "2024-01-01 00:00:00+01:00",
                                "20240101T000000Z", "2024-01-01T00:00:00.1234567+0100",
                                "2024-01-01T00:00Z", "2024-01-01T00:00:00,5-03:30"])
def test_iso_8601_forms_still_accepted(ts: str) -> None:
    assert validate_event(ev("e1", ts=ts)).ts.tzinfo is not None


# -- 13. no raw id in the quarantine when a pseudonym key is set ------------------------------


def test_unattributable_payloads_are_redacted_in_the_quarantine(tmp_path) -> None:
    settings = ApiSettings(data_dir=tmp_path / "data", pseudonym_key=KEY)
    leak = "rawcust-leak-zq"
    with TestClient(create_app(settings)) as client:
        body = post_raw(client, json.dumps({"events": [
            ["evt-1", leak, "view", T0],
            leak,
            ev("e2", user=leak, item_id=[leak]),
            ev("e3", user=[leak]),
            ev("e4", user=leak, email=f"{leak}@example.com"),
            ev("ok", user=leak),
        ]}))
        assert body["rejected"] == 5 and body["accepted"] == 1
        assert all(leak not in (o["reason"] or "") for o in body["outcomes"])
    src = tmp_path / "lines.jsonl"
    src.write_text(f'{{"user_id": "{leak}", oops\n["{leak}"]\n')
    env = {"PORTRAIT_PSEUDONYM_KEY": KEY}
    out = CliRunner().invoke(cli, ["--data-dir", str(settings.data_dir), "ingest", str(src),
                                   "--no-project", "--json"], env=env)
    assert out.exit_code == 0, out.output
    assert leak not in out.stdout
    rows = quarantine(settings.data_dir)
    assert len(rows) == 7
    for row in rows:
        assert leak not in row["raw"] and leak not in row["reason"], row
    assert json.loads(rows[0]["raw"]).keys() == {"redacted", "chars"}
    assert [json.loads(r["raw"]).get("redacted") for r in rows[:2]] == ["list", "str"]


# -- 16. POST /v1/events takes only application/json ----------------------------------------


def test_post_events_requires_application_json(client) -> None:
    body = json.dumps(ev("e1"))
    for headers in ({"content-type": "text/plain"}, {"content-type": "application/x-www-form-"
                    "urlencoded"}, {"content-type": "multipart/form-data; boundary=x"}, {}):
        r = client.post("/v1/events", content=body, headers=headers)
        assert r.status_code == 415, (headers, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["field"] == "content-type"
    assert client.get("/v1/users/u1/events").json()["events"] == []
    r = client.post("/v1/events", content=body,
                    headers={"content-type": "Application/JSON; charset=utf-8"})
    assert r.status_code == 200 and r.json()["accepted"] == 1


# -- 3. bytes that are not UTF-8 reject their row, not the whole file -------------------------


def test_a_csv_row_with_bad_utf8_is_rejected_and_the_rest_ingested(tmp_path) -> None:
    events = tmp_path / "events.csv"
    events.write_bytes(b"event_id,user_id,type,ts\ne1,u1,view,2024-01-01T00:00:00Z\n"
                       b"e2,u\xff,view,2024-01-01T00:00:00Z\ne3,u1,view,2024-01-01T00:00:00Z\n"
                       b"e4,u1,view,0001-01-01T00:00:00+14:00\ne5,u1\n")
    retail = tmp_path / "online_retail_bad.csv"
    retail.write_bytes(
        b"InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
        b"536365,85123A,WHITE,6,12/1/2010 8:26,2.55,17850.0,United Kingdom\n"
        b"536366,8\xff,X,6,12/1/2010 8:26,2.55,17850.0,United Kingdom\n"
        b"536367,85123A,WHITE,6,12/1/2010 8:27,2.55,17850.0,United Kingdom\n")
    for src, fmt, expected in ((events, "csv", (2, {3: "user_id", 5: "ts", 6: "<line>"})),
                               (retail, "online-retail", (2, {3: "item_id"}))):
        data = tmp_path / fmt
        result = CliRunner().invoke(cli, ["--data-dir", str(data), "ingest", str(src),
                                          "--format", fmt, "--json"])
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        accepted, problems = expected
        assert summary["accepted"] == summary["projected_offset"] == accepted
        assert {p["line"]: p["field"] for p in summary["problems"]} == problems
        assert len(quarantine(data)) == len(problems)
