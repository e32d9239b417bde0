"""Records the fuzzer (tests/fuzz, docs/fuzzing.md) found or is built to find, as plain tests.

Each one once stopped, or could stop, a batch: a decoder that raises instead of rejecting ends
the worker's loop for every record behind it. New findings go here, one test each.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from schemas import (
    ClickEvent,
    LineItem,
    OrderEvent,
    SchemaError,
    decode,
    decode_many,
    encode,
)
from schemas.codec import MAX_NESTING
from worker.scoring import control
from worker.scoring.errors import ControlMessageInvalid

R = TypeVar("R")
TOO_DEEP = f"$: nested too deeply: more than {MAX_NESTING} levels of arrays and objects"


def order() -> OrderEvent:
    return OrderEvent(
        event_id="e-1", schema_version=1, customer_id="C1", order_id="O1",
        event_time=datetime(2025, 3, 1, tzinfo=UTC), status="placed",
        items=[LineItem(sku="S", quantity=2, unit_price=2.5)], total=5.0,
    )  # fmt: skip


def click() -> ClickEvent:
    return ClickEvent(
        event_id="k-1", schema_version=1, session_id="S1",
        event_time=datetime(2025, 3, 1, tzinfo=UTC), type="page_view", customer_id="C1",
    )  # fmt: skip


def objects(depth: int) -> bytes:
    """``{"a":{"a":...{}}}``, ``depth`` objects deep."""
    return b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


def arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def with_unknown_field(event: OrderEvent | ClickEvent, value: bytes) -> bytes:
    """``event``'s JSON with one more field, ``"x": value``, which the model does not know."""
    return encode(event)[:-1] + b',"x":' + value + b"}"


def at_stack_depth(frames: int, call: Callable[[], R]) -> R:
    """``call()`` made ``frames`` Python frames deeper than here."""
    if frames <= 0:
        return call()
    return at_stack_depth(frames - 1, call)


@pytest.mark.parametrize("model", [OrderEvent, ClickEvent], ids=["orders", "clicks"])
@pytest.mark.parametrize("shape", [objects, arrays], ids=["objects", "arrays"])
def test_a_record_nested_5000_levels_is_rejected_not_raised(
    model: type[Any], shape: Callable[[int], bytes]
) -> None:
    good = encode(order() if model is OrderEvent else click())
    valid, rejected = decode_many(model, [good, shape(5000), good])
    assert [index for index, _ in valid] == [0, 2]
    assert [(index, str(error)) for index, error in rejected] == [(1, TOO_DEEP)]
    with pytest.raises(SchemaError) as raised:
        decode(model, shape(5000))
    assert str(raised.value) == TOO_DEEP


@pytest.mark.parametrize("shape", [objects, arrays], ids=["objects", "arrays"])
def test_a_valid_order_with_an_unknown_field_nested_past_the_bound_is_rejected_as_too_deep(
    shape: Callable[[int], bytes],
) -> None:
    record = with_unknown_field(order(), shape(MAX_NESTING + 8))
    for _ in range(3):  # the same verdict every time, not whatever the stack allows
        _, rejected = decode_many(OrderEvent, [record])
        assert [(index, str(error)) for index, error in rejected] == [(0, TOO_DEEP)]


@pytest.mark.parametrize("shape", [objects, arrays], ids=["objects", "arrays"])
def test_a_valid_order_with_an_unknown_field_nested_10_deep_is_accepted(
    shape: Callable[[int], bytes],
) -> None:
    valid, rejected = decode_many(OrderEvent, [with_unknown_field(order(), shape(10))])
    assert rejected == [] and valid == [(0, order())]


@pytest.mark.parametrize("depth", [MAX_NESTING, MAX_NESTING + 1])
def test_the_nesting_verdict_is_the_same_whatever_the_callers_stack_depth(depth: int) -> None:
    # The order itself is one level: an unknown field ``depth - 1`` deep makes it ``depth``.
    record = with_unknown_field(order(), arrays(depth - 1))
    shallow = decode_many(OrderEvent, [record])
    # as deep as the stack can be and still leave the bound's levels to the parser
    frames = sys.getrecursionlimit() - MAX_NESTING - 150
    deep = at_stack_depth(frames, lambda: decode_many(OrderEvent, [record]))
    assert [(i, str(e)) for i, e in deep[1]] == [(i, str(e)) for i, e in shallow[1]]
    assert deep[0] == shallow[0]
    assert bool(shallow[0]) is (depth <= MAX_NESTING)


@pytest.mark.parametrize("kind", [b"[]", b"{}", b'["model_update"]'])
def test_a_control_message_whose_type_is_not_a_string_is_invalid_not_a_type_error(
    kind: bytes,
) -> None:
    # Found by the fuzzer: ``type`` was looked up in a frozenset, so an unhashable value raised.
    with pytest.raises(ControlMessageInvalid, match="not a control message"):
        control.decode(b'{"type": ' + kind + b"}")
