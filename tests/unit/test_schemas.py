"""The event contracts: every kind of rejection with its exact message, and round trips."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from schemas import (
    MAX_EVENT_BYTES,
    ClickEvent,
    DeadLetter,
    FieldProblem,
    LineItem,
    OrderEvent,
    SchemaError,
    SegmentChange,
    batch_clock,
    decode,
    decode_click,
    decode_many,
    decode_order,
    encode,
)
from schemas import events as events_module
from schemas.codec import MAX_REASON_CHARS

NOW = datetime.now(UTC).replace(microsecond=0)
YESTERDAY = (NOW - timedelta(days=1)).isoformat()


def order(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event_id": "e-1",
        "schema_version": 1,
        "customer_id": "C1",
        "order_id": "O1",
        "event_time": YESTERDAY,
        "status": "placed",
        "items": [
            {"sku": "A", "quantity": 2, "unit_price": 9.99},
            {"sku": "B", "quantity": 1, "unit_price": 5.0},
        ],
        "total": 24.98,
        "currency": "EUR",
    }
    record.update(changes)
    return record


def click(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event_id": "c-1",
        "schema_version": 1,
        "session_id": "S1",
        "event_time": YESTERDAY,
        "type": "product_view",
        "customer_id": "C1",
        "sku": "A",
    }
    record.update(changes)
    return {k: v for k, v in record.items() if v is not ...}


def raw(record: dict[str, Any]) -> bytes:
    return json.dumps(record).encode()


def rejection(model: type[Any], data: bytes) -> str:
    """The full ``path: reason`` text of the rejection; fails the test if ``data`` is accepted."""
    with pytest.raises(SchemaError) as caught:
        decode(model, data)
    error = caught.value
    assert str(error) == f"{error.path}: {error.reason}"
    # decode_many must reject it the same way, and never raise.
    valid, rejected = decode_many(model, [data])
    assert valid == [] and len(rejected) == 1
    assert str(rejected[0][1]) == str(error)
    return str(error)


def with_item(index: int, **changes: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = order()["items"]
    items[index] = {**items[index], **changes}
    return items


# --- one test per kind of rejection, each with the exact message -------------------------


def test_valid_order_and_click_decode() -> None:
    event = decode_order(raw(order()))
    assert event.total == 24.98 and event.items[0] == LineItem(sku="A", quantity=2, unit_price=9.99)
    assert event.item_count == 3 and event.total_cents == 2498
    assert decode_click(raw(click())).sku == "A"


@pytest.mark.parametrize(
    ("model", "record", "message"),
    [
        (OrderEvent, {k: v for k, v in order().items() if k != "customer_id"},
         "$.customer_id: missing required field"),
        (OrderEvent, order(items=[{"sku": "A", "quantity": 1}]),
         "$.items[0].unit_price: missing required field"),
        (ClickEvent, {k: v for k, v in click().items() if k != "session_id"},
         "$.session_id: missing required field"),
    ],
)  # fmt: skip
def test_missing_field(model: type[Any], record: dict[str, Any], message: str) -> None:
    assert rejection(model, raw(record)) == message


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (order(items=with_item(0, quantity="2")),
         "$.items[0].quantity: wrong type: expected int, got str"),
        (order(items=with_item(1, quantity=1.5)),
         "$.items[1].quantity: wrong type: expected int, got float"),
        (order(schema_version=True), "$.schema_version: wrong type: expected int, got bool"),
        (order(total="24.98"), "$.total: wrong type: expected float, got str"),
        (order(customer_id=None), "$.customer_id: wrong type: expected str, got null"),
        (order(items={"sku": "A"}), "$.items: wrong type: expected array, got object"),
    ],
)  # fmt: skip
def test_wrong_type(record: dict[str, Any], message: str) -> None:
    assert rejection(OrderEvent, raw(record)) == message


def test_wrong_type_of_the_whole_record() -> None:
    assert rejection(OrderEvent, b"[]") == "$: wrong type: expected object, got array"
    assert rejection(ClickEvent, b'"click"') == "$: wrong type: expected object, got str"


def test_negative_price() -> None:
    record = order(items=with_item(1, unit_price=-1.5), total=18.48)
    assert (
        rejection(OrderEvent, raw(record))
        == "$.items[1].unit_price: must not be negative, got -1.5"
    )


def test_quantity_zero() -> None:
    record = order(items=with_item(1, quantity=0), total=19.98)
    assert rejection(OrderEvent, raw(record)) == "$.items[1].quantity: must be at least 1, got 0"


def test_quantity_and_price_upper_bounds() -> None:
    too_many = order(items=with_item(0, quantity=100_001))
    assert (
        rejection(OrderEvent, raw(too_many))
        == "$.items[0].quantity: must be at most 100000, got 100001"
    )
    # Two lines at 1e308 would overflow the total check itself: they are refused first.
    huge = order(items=[{"sku": "A", "quantity": 1, "unit_price": 1e308}] * 2, total=1.0)
    assert (
        rejection(OrderEvent, raw(huge))
        == "$.items[0].unit_price: must be at most 10000000, got 1e+308"
    )


def test_total_beyond_a_cent_is_rejected() -> None:
    # 2 x 9.99 + 5.00 = 24.98
    assert (
        rejection(OrderEvent, raw(order(total=24.96)))
        == "$.total: 24.96 disagrees with the items, which sum to 24.98 (more than 0.01 apart)"
    )
    assert (
        rejection(OrderEvent, raw(order(total=24.991)))
        == "$.total: 24.991 disagrees with the items, which sum to 24.98 (more than 0.01 apart)"
    )


@pytest.mark.parametrize("total", [24.98, 24.97, 24.99, 24.975, 24.9849])
def test_total_within_a_cent_is_accepted(total: float) -> None:
    assert decode_order(raw(order(total=total))).total == total


def test_total_of_binary_fractions_is_accepted() -> None:
    # 3 x 19.99 is 59.970000000000006 in binary floating point; 0.1 x 3 is 0.30000000000000004.
    three = [{"sku": "A", "quantity": 3, "unit_price": 19.99}]
    assert decode_order(raw(order(items=three, total=59.97))).total == 59.97
    assert decode_order(raw(order(items=three, total=59.96))).total == 59.96  # exactly a cent
    tenths = [{"sku": s, "quantity": 1, "unit_price": 0.1} for s in "ABC"]
    assert decode_order(raw(order(items=tenths, total=0.3))).total == 0.3


def test_total_out_of_range() -> None:
    assert (
        rejection(OrderEvent, raw(order(total=-1.0)))
        == "$.total: must be a non-negative number, got -1.0"
    )
    assert (
        rejection(OrderEvent, raw(order(total=20_000_000)))
        == "$.total: must be at most 10000000, got 20000000.0"
    )
    assert rejection(OrderEvent, raw(order()).replace(b"24.98", b"1e999")) == (
        "$.total: number out of range"
    )


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01T00:00:00Z", "2024-05-01", "", "17"])
def test_timestamp_unparsable(value: str) -> None:
    assert (
        rejection(OrderEvent, raw(order(event_time=value)))
        == "$.event_time: unparsable timestamp: expected RFC 3339 / ISO 8601 with offset"
    )


def test_timestamp_absurdly_far_in_the_future() -> None:
    assert (
        rejection(OrderEvent, raw(order(event_time="2999-01-01T00:00:00Z")))
        == "$.event_time: 2999-01-01T00:00:00+00:00 is more than 24h in the future"
    )
    assert (
        rejection(ClickEvent, raw(click(event_time="2999-01-01T00:00:00+02:00")))
        == "$.event_time: 2999-01-01T00:00:00+02:00 is more than 24h in the future"
    )


def test_timestamp_bounds_hold_in_any_offset() -> None:
    plus2, minus5 = timezone(timedelta(hours=2)), timezone(timedelta(hours=-5))
    soon = (NOW + timedelta(hours=23)).astimezone(minus5)
    late = (NOW + timedelta(hours=25)).astimezone(plus2)
    assert decode_order(raw(order(event_time=soon.isoformat()))).event_time == soon
    assert (
        rejection(OrderEvent, raw(order(event_time=late.isoformat())))
        == f"$.event_time: {late.isoformat()} is more than 24h in the future"
    )
    # 1995-01-01T01:00+02:00 is 1994-12-31T23:00Z: too early, although its digits are not.
    assert (
        rejection(OrderEvent, raw(order(event_time="1995-01-01T01:00:00+02:00")))
        == "$.event_time: 1995-01-01T01:00:00+02:00 is before 1995-01-01"
    )
    first = decode_order(raw(order(event_time="1995-01-01T00:00:00-01:00")))
    assert first.event_time == datetime(1995, 1, 1, 1, tzinfo=UTC)


def test_timestamp_too_old() -> None:
    assert (
        rejection(OrderEvent, raw(order(event_time="1970-01-01T00:00:00Z")))
        == "$.event_time: 1970-01-01T00:00:00+00:00 is before 1995-01-01"
    )


def test_timestamp_without_offset() -> None:
    assert (
        rejection(OrderEvent, raw(order(event_time="2024-05-01T12:00:00")))
        == "$.event_time: must carry a UTC offset (e.g. 2024-05-01T12:00:00Z)"
    )
    assert (
        rejection(ClickEvent, raw(click(event_time="2024-05-01T12:00:00.5")))
        == "$.event_time: must carry a UTC offset (e.g. 2024-05-01T12:00:00Z)"
    )


def test_unknown_schema_version() -> None:
    assert (
        rejection(OrderEvent, raw(order(schema_version=2)))
        == "$.schema_version: unknown schema_version 2 (supported: 1)"
    )
    assert (
        rejection(ClickEvent, raw(click(schema_version=0)))
        == "$.schema_version: unknown schema_version 0 (supported: 1)"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "$: not JSON: object keys must be strings (byte 1)"),
        (b"", "$: not JSON: input data was truncated"),
        (b'{"event_id": "e-1"', "$: not JSON: input data was truncated"),
        # msgspec counts this position from 1 (the "x" is at index len + 1).
        (raw(order()) + b" x", f"$: not JSON: trailing characters (byte {len(raw(order())) + 2})"),
        (b"\xef\xbb\xbf{}", "$: not JSON: invalid character (byte 0)"),  # a UTF-8 BOM
        (b'{"total": NaN}', "$: not JSON: invalid character (byte 10)"),
    ],
)
def test_not_json(data: bytes, message: str) -> None:
    assert rejection(OrderEvent, data) == message


def test_not_utf8() -> None:
    assert (
        rejection(OrderEvent, b"\xff\xfe\x00binary") == "$: not UTF-8: invalid byte at position 0"
    )
    # Inside a string value the parser itself trips on it; the position is still the record's.
    data = raw(order(customer_id="C-XX")).replace(b"C-XX", b"C-\xc3\x28")
    position = data.index(b"\xc3")
    assert rejection(OrderEvent, data) == f"$: not UTF-8: invalid byte at position {position}"


def test_oversize() -> None:
    big = raw(order())[:-1] + b', "pad": "' + b"x" * MAX_EVENT_BYTES + b'"}'
    assert rejection(OrderEvent, big) == f"$: oversize: {len(big)} bytes, the limit is 65536"
    at_limit = raw(order()) + b" " * (MAX_EVENT_BYTES - len(raw(order())))
    assert len(at_limit) == MAX_EVENT_BYTES
    assert decode_order(at_limit).event_id == "e-1"


def test_unknown_status_and_type() -> None:
    assert (
        rejection(OrderEvent, raw(order(status="shipped")))
        == "$.status: unknown value 'shipped' (expected one of: cancelled, placed, returned)"
    )
    assert rejection(ClickEvent, raw(click(type="teleport"))) == (
        "$.type: unknown value 'teleport' (expected one of: add_to_cart, checkout_start, "
        "identify, page_view, product_view, remove_from_cart, search)"
    )


def test_record_content_cannot_forge_a_path_or_flood_the_reason() -> None:
    forged = rejection(OrderEvent, raw(order(status="x - at `$.evil`")))
    assert forged.startswith("$.status: unknown value 'x - at `$.evil`'")
    flood = rejection(OrderEvent, raw(order(status="s" * 5000)))
    assert flood.startswith("$.status: unknown value 'sss") and "s… (expected one of:" in flood
    assert len(flood) <= len("$.status: ") + MAX_REASON_CHARS
    long_key = rejection(OrderEvent, b'{"' + b"k" * 2000 + b'": NaN}')
    assert long_key.startswith("$: not JSON: invalid character")


def test_click_without_customer_or_anonymous_id() -> None:
    message = "$.customer_id: either customer_id or anonymous_id is required"
    assert rejection(ClickEvent, raw(click(customer_id=...))) == message
    assert rejection(ClickEvent, raw(click(customer_id=None, anonymous_id=None))) == message
    assert decode_click(raw(click(customer_id=..., anonymous_id="anon-1"))).customer_id is None


def test_click_that_concerns_a_product_names_it() -> None:
    assert (
        rejection(ClickEvent, raw(click(type="add_to_cart", sku=...)))
        == "$.sku: is required for a add_to_cart event"
    )
    assert decode_click(raw(click(type="page_view", sku=...))).sku is None


def test_declared_bounds() -> None:
    assert rejection(OrderEvent, raw(order(items=[]))) == (
        "$.items: invalid value: expected array of length >= 1"
    )
    assert rejection(OrderEvent, raw(order(event_id=""))) == (
        "$.event_id: invalid value: expected str of length >= 1"
    )
    assert rejection(ClickEvent, raw(click(session_id="s" * 129))) == (
        "$.session_id: invalid value: expected str of length <= 128"
    )


@pytest.mark.parametrize("code", ["eur", "EURO", "E1R", "", "EUR\n", "ÉUR"])
def test_currency(code: str) -> None:
    assert rejection(OrderEvent, raw(order(currency=code))) == (
        f"$.currency: must be three capital letters A-Z (ISO 4217, e.g. EUR), got {code!r}"
    )


def test_a_line_is_checked_before_the_total_it_makes_wrong() -> None:
    record = order(items=with_item(0, quantity=0))  # the total no longer matches either
    assert rejection(OrderEvent, raw(record)) == "$.items[0].quantity: must be at least 1, got 0"


# --- models built in code are held to the same checks ------------------------------------


def test_building_an_invalid_order_in_code_raises_field_problem() -> None:
    with pytest.raises(FieldProblem) as caught:
        OrderEvent(
            event_id="e", schema_version=1, customer_id="C", order_id="O",
            event_time=NOW, status="placed",
            items=[LineItem(sku="A", quantity=1, unit_price=2.0),
                   LineItem(sku="B", quantity=0, unit_price=2.0)],
            total=2.0,
        )  # fmt: skip
    assert str(caught.value) == "items[1].quantity: must be at least 1, got 0"
    assert isinstance(caught.value, ValueError)
    with pytest.raises(FieldProblem, match=r"^event_time: must carry a UTC offset"):
        ClickEvent(
            event_id="c", schema_version=1, session_id="S", type="search", customer_id="C",
            event_time=datetime(2024, 5, 1),
        )  # fmt: skip
    with pytest.raises(FieldProblem, match=r"^processing_time: must carry a UTC offset"):
        segment_change(processing_time=datetime(2024, 5, 1))


# --- round trips ---------------------------------------------------------------------------


def segment_change(**changes: Any) -> SegmentChange:
    fields: dict[str, Any] = {
        "customer_id": "C1",
        "old_segment": None,
        "new_segment": "champions",
        "reason": "order",
        "model_version": "kmeans-v3",
        "features": {"recency_days": 2.5, "frequency": 7.0, "monetary": 812.4},
        "event_time": NOW - timedelta(minutes=1),
        "processing_time": NOW,
    }
    fields.update(changes)
    return SegmentChange(**fields)


ROUND_TRIPS: list[OrderEvent | ClickEvent | SegmentChange | DeadLetter] = [
    decode_order(raw(order())),
    OrderEvent(
        event_id="e-2",
        schema_version=1,
        customer_id="C2",
        order_id="O1",
        event_time=NOW.astimezone(timezone(timedelta(hours=-5, minutes=-30))),
        status="returned",
        items=[LineItem(sku="Ω-1", quantity=1, unit_price=0.0)],
        total=0.0,
        currency="JPY",
    ),
    decode_click(raw(click())),
    ClickEvent(
        event_id="c-2",
        schema_version=1,
        session_id="S2",
        event_time=NOW,
        type="search",
        anonymous_id="anon-7",
        query="red shoes size 42 🥿",
    ),
    segment_change(),
    segment_change(
        old_segment="at_risk", reason="recency_decay", old_distance=1.25, new_distance=0.5
    ),
    DeadLetter(
        original=b"\xff\xfe\x00not utf-8 \x80",
        source_topic="orders",
        partition=3,
        offset=123_456_789_012,
        error="$: not UTF-8: invalid byte at position 0",
        dead_lettered_at=NOW,
        key=b"\x00C1",
    ),
    DeadLetter(
        original=b"",
        source_topic="clicks",
        partition=0,
        offset=0,
        error="$: not JSON: input data was truncated",
        dead_lettered_at=NOW,
    ),
]


@pytest.mark.parametrize("event", ROUND_TRIPS, ids=lambda e: f"{type(e).__name__}")
def test_round_trip(event: OrderEvent | ClickEvent | SegmentChange | DeadLetter) -> None:
    data = encode(event)
    again = decode(type(event), data)
    assert again == event
    assert encode(again) == data
    assert again.schema_version == 1


def test_dead_letter_keeps_arbitrary_bytes_as_base64() -> None:
    every_byte = bytes(range(256))
    letter = DeadLetter(
        original=every_byte, source_topic="orders", partition=0, offset=1, error="x",
        dead_lettered_at=NOW,
    )  # fmt: skip
    as_json = json.loads(encode(letter))
    assert isinstance(as_json["original"], str) and as_json["key"] is None
    assert decode(DeadLetter, encode(letter)).original == every_byte


def test_output_events_reject_times_without_offset_and_unknown_versions() -> None:
    data = encode(segment_change()).replace(b"+00:00", b"").replace(b"Z", b"")
    assert rejection(SegmentChange, data) == (
        "$.event_time: must carry a UTC offset (e.g. 2024-05-01T12:00:00Z)"
    )
    future = encode(segment_change()).replace(b'"schema_version":1', b'"schema_version":2')
    assert rejection(SegmentChange, future) == (
        "$.schema_version: unknown schema_version 2 (supported: 1)"
    )


# --- batches -------------------------------------------------------------------------------


def test_decode_many_reports_each_record_by_index() -> None:
    good, bad = raw(order()), raw(order(total=1.0))
    records: list[Any] = [good, b"{", bytearray(good), bad, memoryview(good)]
    valid, rejected = decode_many(OrderEvent, records)
    assert [i for i, _ in valid] == [0, 2, 4]
    assert [(i, str(e)) for i, e in rejected] == [
        (1, "$: not JSON: input data was truncated"),
        (3, "$.total: 1.0 disagrees with the items, which sum to 24.98 (more than 0.01 apart)"),
    ]
    assert all(event == valid[0][1] for _, event in valid)
    assert decode_many(ClickEvent, []) == ([], [])


def test_decode_many_reads_the_clock_once_per_batch_and_restores_it() -> None:
    assert events_module._BOUNDS.get() is None
    with batch_clock() as refresh:
        first = events_module.future_limit()
        assert events_module.future_limit() is first  # one reading for the batch
        refresh()
        assert events_module.future_limit() >= first
    assert events_module._BOUNDS.get() is None

    def failing_source() -> Any:
        yield raw(order())
        raise OSError("source broke")

    with pytest.raises(OSError, match="source broke"):
        decode_many(OrderEvent, failing_source())
    assert events_module._BOUNDS.get() is None


def test_outside_a_batch_the_clock_is_read_at_most_once_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = events_module._IdleClock()
    first = clock.get()
    assert clock.get() is first
    monkeypatch.setattr(events_module.time, "monotonic", lambda: clock.until)
    assert clock.get() is not first
    assert clock.get().limit >= first.limit


def test_batch_clock_is_per_thread() -> None:
    # A thread (like an asyncio task) has its own context: it never sees, nor resets, the
    # bounds of a batch running elsewhere.
    seen: list[object] = []
    with batch_clock():
        worker = threading.Thread(target=lambda: seen.append(events_module._BOUNDS.get()))
        worker.start()
        worker.join()
        assert events_module._BOUNDS.get() is not None
    assert seen == [None]


def test_categories_and_devices_are_optional_bounded_and_free_of_separators() -> None:
    good = decode_order(raw(order(items=with_item(1, category="home"))))
    assert [i.category for i in good.items] == [None, "home"]
    assert b'"category"' not in encode(decode_order(raw(order())))  # absent stays absent
    view = decode_click(raw(click(category="électroménager", device="app")))
    assert (view.category, view.device) == ("électroménager", "app")
    assert decode_click(raw(click(category="x" * 32))).category == "x" * 32
    bad = "must be 1 to 32 characters without '=' or ','"
    assert rejection(OrderEvent, raw(order(items=with_item(1, category="a,b")))) == (
        f"$.items[1].category: {bad}, got 'a,b'"
    )
    assert rejection(ClickEvent, raw(click(category="x" * 33))).startswith(f"$.category: {bad}")
    assert rejection(ClickEvent, raw(click(device=""))) == f"$.device: {bad}, got ''"
    assert rejection(ClickEvent, raw(click(device="k=v"))) == f"$.device: {bad}, got 'k=v'"
    # built in code, the same checks hold
    with pytest.raises(FieldProblem, match="device"):
        ClickEvent(event_id="c", schema_version=1, session_id="s", event_time=NOW,
                   type="page_view", customer_id="C1", device="a=b")  # fmt: skip
    with pytest.raises(FieldProblem, match=r"items\[0\].category"):
        OrderEvent(event_id="e", schema_version=1, customer_id="C1", order_id="O",
                   event_time=NOW, status="placed", total=1.0,
                   items=[LineItem(sku="A", quantity=1, unit_price=1.0, category="")])  # fmt: skip
