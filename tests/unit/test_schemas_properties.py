"""Properties of the event contracts: valid events round-trip, no bytes at all break a batch."""

from __future__ import annotations

import json
import math
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, get_args

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from schemas import ClickEvent, LineItem, OrderEvent, SchemaError, decode_many, encode
from schemas.codec import MAX_EVENT_BYTES, MAX_REASON_CHARS
from schemas.events import MAX_ORDER_TOTAL, SKU_CLICK_TYPES, TOTAL_TOLERANCE, ClickType

#: Hundreds of generated examples per property: the whole suite's tier, not the unit tier's.
pytestmark = pytest.mark.slow

# The machine running the suite may be busy: judge correctness, not speed.
PROPERTY = settings(deadline=None, max_examples=200)

_LATEST = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=2)

ids = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40)
offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
event_times = st.datetimes(
    min_value=datetime(1995, 1, 3), max_value=_LATEST, timezones=st.just(UTC) | offsets
)
prices = st.integers(0, 1_000_000).map(lambda cents: cents / 100) | st.floats(
    0, 10_000, allow_nan=False, allow_infinity=False
)
# Up to 20 units at any price, or up to the 100000-unit maximum at a price below 1.00, so that
# a dozen lines stay under the maximum order total without filtering.
line_items = st.builds(LineItem, sku=ids, quantity=st.integers(1, 20), unit_price=prices) | (
    st.builds(
        LineItem,
        sku=ids,
        quantity=st.integers(1, 100_000),
        unit_price=st.integers(0, 100).map(lambda cents: cents / 100),
    )
)


@st.composite
def orders(draw: st.DrawFn) -> OrderEvent:
    items = draw(st.lists(line_items, min_size=1, max_size=12))
    items_sum = math.fsum(i.quantity * i.unit_price for i in items)
    assume(items_sum <= MAX_ORDER_TOTAL - 1)
    # What a producer would send: the exact sum, or the sum rounded to cents.
    total = draw(st.sampled_from([items_sum, round(items_sum, 2)]))
    return OrderEvent(
        event_id=draw(ids),
        schema_version=1,
        customer_id=draw(ids),
        order_id=draw(ids),
        event_time=draw(event_times),
        status=draw(st.sampled_from(["placed", "cancelled", "returned"])),
        items=items,
        total=total,
        currency=draw(st.text(string.ascii_uppercase, min_size=3, max_size=3)),
    )


@st.composite
def clicks(draw: st.DrawFn) -> ClickEvent:
    kind = draw(st.sampled_from(get_args(ClickType)))
    # an identify links both ids, so it names both
    customer = draw(ids) if kind == "identify" else draw(st.none() | ids)
    anonymous = draw(ids) if customer is None or kind == "identify" else draw(st.none() | ids)
    return ClickEvent(
        event_id=draw(ids),
        schema_version=1,
        session_id=draw(ids),
        event_time=draw(event_times),
        type=kind,
        customer_id=customer,
        anonymous_id=anonymous,
        sku=draw(ids) if kind in SKU_CLICK_TYPES else draw(st.none() | ids),
        query=draw(st.none() | st.text(st.characters(exclude_categories=("Cs",)), max_size=60)),
    )


@PROPERTY
@given(orders())
def test_any_valid_order_round_trips(event: OrderEvent) -> None:
    data = encode(event)
    valid, rejected = decode_many(OrderEvent, [data])
    assert rejected == []
    assert valid == [(0, event)]


@PROPERTY
@given(clicks())
def test_any_valid_click_round_trips(event: ClickEvent) -> None:
    valid, rejected = decode_many(ClickEvent, [encode(event)])
    assert rejected == []
    assert valid == [(0, event)]


# --- arbitrary input -----------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_ORDER_KEYS = list(OrderEvent.__struct_fields__)
_ITEM_KEYS = list(LineItem.__struct_fields__)


@st.composite
def mutated_orders(draw: st.DrawFn) -> bytes:
    """A valid order with one field (or one line's field) replaced, dropped or added."""
    record: dict[str, Any] = json.loads(encode(draw(orders())))
    target = record
    if draw(st.booleans()):
        target = record["items"][draw(st.integers(0, len(record["items"]) - 1))]
    key = draw(st.sampled_from(_ITEM_KEYS if target is not record else _ORDER_KEYS) | st.text())
    if draw(st.booleans()):
        target.pop(key, None)
    else:
        target[key] = draw(json_values)
    return json.dumps(record).encode()


@st.composite
def corrupted(draw: st.DrawFn) -> bytes:
    """Valid bytes with a slice replaced by arbitrary bytes."""
    data = encode(draw(orders()))
    start = draw(st.integers(0, len(data)))
    end = draw(st.integers(start, len(data)))
    return data[:start] + draw(st.binary(max_size=8)) + data[end:]


records = st.lists(
    st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | mutated_orders()
    | corrupted()
    | st.builds(lambda n: b" " * n, st.integers(MAX_EVENT_BYTES - 2, MAX_EVENT_BYTES + 2)),
    max_size=12,
)


def _check_batch(model: type[Any], batch: list[bytes]) -> None:
    valid, rejected = decode_many(model, batch)
    assert len(valid) + len(rejected) == len(batch)
    assert sorted(i for i, _ in valid + rejected) == list(range(len(batch)))
    for _, event in valid:
        assert isinstance(event, model)
    for _, error in rejected:
        assert isinstance(error, SchemaError)
        assert error.path.startswith("$") and "`" not in error.path
        assert error.reason and len(error.reason) <= MAX_REASON_CHARS


@PROPERTY
@given(records)
def test_decode_many_never_raises_on_orders(batch: list[bytes]) -> None:
    _check_batch(OrderEvent, batch)


@PROPERTY
@given(records)
def test_decode_many_never_raises_on_clicks(batch: list[bytes]) -> None:
    _check_batch(ClickEvent, batch)


# --- the total check decides exactly as a correctly rounded sum would ----------------------


@PROPERTY
@given(
    st.lists(line_items, min_size=1, max_size=20),
    st.sampled_from([0.0, 0.01, -0.01, 0.005, -0.005, 0.0100001, -0.0100001])
    | st.floats(-0.03, 0.03),
)
def test_total_check_agrees_with_fsum(items: list[LineItem], shift: float) -> None:
    exact = math.fsum(i.quantity * i.unit_price for i in items)
    total = exact + shift
    assume(0 <= total <= MAX_ORDER_TOTAL)
    valid, rejected = decode_many(OrderEvent, [json.dumps(_an_order(items, total)).encode()])
    expected_ok = abs(exact - total) <= TOTAL_TOLERANCE
    assert (len(valid) == 1) is expected_ok, (rejected, exact, total)


def _an_order(items: list[LineItem], total: float) -> dict[str, Any]:
    return {
        "event_id": "e",
        "schema_version": 1,
        "customer_id": "C",
        "order_id": "O",
        "event_time": "2024-05-01T12:00:00Z",
        "status": "placed",
        "items": [
            {"sku": i.sku, "quantity": i.quantity, "unit_price": i.unit_price} for i in items
        ],
        "total": total,
    }
