"""Event schema v1: every rule, each rejection naming its field and rule."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from online.events import (
    EVENT_FIELDS,
    MAX_FUTURE_US,
    N_EVENT_TYPES,
    Event,
    EventBatch,
    EventType,
    InvalidEvent,
    validate_event,
)

NOW_US = 1_306_886_400_000_000  # 2011-06-01T00:00:00Z


def payload(**overrides):
    base = {
        "event_id": "e1",
        "user_id": "u1",
        "type": "view",
        "ts": "2011-05-31T12:00:00Z",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


def rejects(field: str, rule: str, **overrides) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as info:
        validate_event(payload(**overrides), now_us=NOW_US)
    exc = info.value
    assert (exc.field, exc.rule) == (field, rule), str(exc)
    assert field in str(exc) and f"rule={rule}" in str(exc)
    assert len(exc.value) <= 80
    assert "pydantic" not in str(exc) and "Traceback" not in str(exc)
    return exc


# -- the happy path ------------------------------------------------------------------------


def test_minimal_event_defaults():
    e = validate_event(payload(), now_us=NOW_US)
    assert (e.item_id, e.category, e.session_id, e.price, e.quantity) == (None,) * 4 + (1,)
    assert e.event_type is EventType.VIEW
    assert e.ts == datetime(2011, 5, 31, 12, tzinfo=UTC)


def test_full_event_and_record():
    e = validate_event(
        payload(type="purchase", item_id="i9", category="home", session_id="s1", price=2.5,
                quantity=3),
        now_us=NOW_US,
    )  # fmt: skip
    assert e.to_record() == (
        "e1", "u1", 3, NOW_US - 12 * 3600 * 10**6, "i9", "home", "s1", 2.5, 3,
    )  # fmt: skip
    assert len(e.to_record()) == len(EVENT_FIELDS)


def test_ts_normalised_to_utc_with_microseconds():
    e = validate_event(payload(ts="2011-05-31T14:00:00.1234569+02:00"), now_us=NOW_US)
    assert e.ts.tzinfo is UTC
    assert e.ts == datetime(2011, 5, 31, 12, 0, 0, 123456, tzinfo=UTC)  # truncated, not rounded
    assert e.ts_us == NOW_US - 12 * 3600 * 10**6 + 123456


def test_ts_accepts_aware_datetime_objects():
    when = datetime(2011, 5, 31, 7, tzinfo=timezone(timedelta(hours=-5)))
    e = validate_event(payload(ts=when), now_us=NOW_US)
    assert e.ts_us == NOW_US - 12 * 3600 * 10**6


def test_price_accepts_int_valued_number():
    e = validate_event(payload(type="refund", price=3), now_us=NOW_US)
    assert e.price == 3.0 and isinstance(e.price, float)


def test_price_zero_and_null_on_views():
    assert validate_event(payload(type="purchase", price=0.0), now_us=NOW_US).price == 0.0
    assert validate_event(payload(price=None), now_us=NOW_US).price is None


def test_quantity_bounds_inclusive():
    assert validate_event(payload(quantity=1), now_us=NOW_US).quantity == 1
    assert validate_event(payload(quantity=100_000), now_us=NOW_US).quantity == 100_000


def test_strings_at_128_chars_pass():
    e = validate_event(payload(event_id="x" * 128, user_id="u" * 128, item_id="i" * 128),
                       now_us=NOW_US)  # fmt: skip
    assert len(e.event_id) == 128


def test_future_limit_is_five_minutes():
    edge = datetime.fromtimestamp((NOW_US + MAX_FUTURE_US) / 1e6, tz=UTC).isoformat()
    assert validate_event(payload(ts=edge), now_us=NOW_US).ts_us == NOW_US + MAX_FUTURE_US


def test_event_is_frozen():
    e = validate_event(payload(), now_us=NOW_US)
    with pytest.raises(Exception):  # noqa: B017  # pydantic's frozen-instance error
        e.price = 1.0  # type: ignore[misc]


def test_json_round_trip():
    e = validate_event(payload(type="purchase", price=1.5), now_us=NOW_US)
    again = validate_event(e.model_dump(mode="json"), now_us=NOW_US)
    assert again == e and again.ts_us == e.ts_us


def test_event_types():
    assert N_EVENT_TYPES == 5
    assert [t.wire_name for t in EventType] == [
        "view", "add_to_cart", "remove_from_cart", "purchase", "refund",
    ]  # fmt: skip
    assert EventType.from_name("add_to_cart") == 1
    with pytest.raises(ValueError, match="unknown event type"):
        EventType.from_name("buy")


# -- the rules, one rejection each -----------------------------------------------------------


@pytest.mark.parametrize("field", ["event_id", "user_id", "type", "ts"])
def test_required_fields(field):
    exc = rejects(field, "required", **{field: _DROP})
    assert exc.value == "<missing>"


def test_naive_ts_rejected():
    rejects("ts", "timezone_required", ts="2011-05-31T12:00:00")
    rejects("ts", "timezone_required", ts=datetime(2011, 5, 31, 12))


def test_future_ts_rejected():
    exc = rejects("ts", "not_in_future", ts="2011-06-01T00:05:01Z")
    assert "2011-06-01T00:05:01Z" in exc.value


@pytest.mark.parametrize("ts", ["garbage", "2011-13-01T00:00:00Z", 1306886400, 1.5e9, None, True])
def test_ts_must_be_iso_text(ts):
    rejects("ts", "iso8601", ts=ts)


def test_unknown_type_rejected():
    rejects("type", "one_of", type="buy")
    rejects("type", "one_of", type=3)


@pytest.mark.parametrize("kind", ["purchase", "refund"])
def test_price_required_for_money_events(kind):
    rejects("price", "required_for_type", type=kind)
    rejects("price", "required_for_type", type=kind, price=None)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_price_must_be_finite(bad):
    rejects("price", "finite", type="purchase", price=bad)


def test_price_must_not_be_negative():
    rejects("price", "min", type="purchase", price=-0.01)


@pytest.mark.parametrize("bad", ["3.5", True, [1.0]])
def test_price_wrong_type(bad):
    rejects("price", "type", type="purchase", price=bad)


@pytest.mark.parametrize("bad", ["3.5", "3", 3.0, 3.5, True])
def test_quantity_wrong_type_not_coerced(bad):
    rejects("quantity", "type", quantity=bad)


def test_quantity_bounds():
    rejects("quantity", "min", quantity=0)
    rejects("quantity", "max", quantity=100_001)


def test_unknown_field_rejected():
    exc = rejects("coupon", "unknown_field", coupon="X1")
    assert exc.value == "'X1'"


@pytest.mark.parametrize("field", ["event_id", "user_id"])
def test_ids_length(field):
    rejects(field, "min_length", **{field: ""})
    exc = rejects(field, "max_length", **{field: "x" * 129})
    assert exc.value.endswith("...")


@pytest.mark.parametrize("field", ["item_id", "category", "session_id"])
def test_optional_strings_length(field):
    rejects(field, "max_length", **{field: "y" * 129})


@pytest.mark.parametrize("field", ["event_id", "user_id", "item_id", "category", "session_id"])
def test_strings_not_coerced(field):
    rejects(field, "type", **{field: 17850})


def test_huge_value_truncated_in_message():
    exc = rejects("user_id", "max_length", user_id="z" * 10_000_000)
    assert len(str(exc)) < 300


def test_non_mapping_payload():
    with pytest.raises(InvalidEvent) as info:
        validate_event(["not", "an", "object"])  # type: ignore[arg-type]
    assert (info.value.field, info.value.rule) == ("<event>", "type")


def test_several_errors_report_the_first_and_count():
    with pytest.raises(InvalidEvent) as info:
        validate_event({"event_id": "e1"})
    assert info.value.rule == "required" and "more" in str(info.value)


def test_wall_clock_used_without_now():
    soon = datetime.now(UTC) + timedelta(minutes=1)
    later = datetime.now(UTC) + timedelta(minutes=10)
    assert validate_event(payload(ts=soon.isoformat())).ts.tzinfo is UTC
    with pytest.raises(InvalidEvent, match="not_in_future"):
        validate_event(payload(ts=later.isoformat()))


def test_constructed_event_has_ts_us():
    e = Event.model_construct(event_id="e", user_id="u", type="view",
                              ts=datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC))  # fmt: skip
    assert e.ts_us == 1_000_000


# -- EventBatch ----------------------------------------------------------------------------


def test_event_batch_from_rows_take_concat():
    rows = [
        (0, 10, 3, "u1", "i1", None, None, 2.5, 2, "e0"),
        (1, 20, 0, "u2", None, "c", "s", None, 1, "e1"),
    ]
    b = EventBatch.from_rows(rows)
    assert len(b) == 2
    assert b.type.dtype == np.int8 and b.offset.dtype == np.int64 and b.price.dtype == np.float64
    assert np.isnan(b.price[1]) and b.item_id.tolist() == ["i1", None]
    assert b.take([1]).event_id.tolist() == ["e1"]
    both = EventBatch.concat([b, EventBatch.empty(), b.take(slice(0, 1))])
    assert both.offset.tolist() == [0, 1, 0]
    assert len(EventBatch.concat([])) == 0
