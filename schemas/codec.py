"""JSON bytes <-> event models, with rejections that name the field path and the reason.

Every failure becomes one :class:`SchemaError` whose ``path`` is a JSONPath (``$`` for the whole
record) and whose ``reason`` is a sentence an operator can act on; the worker writes exactly that
text into the dead-letter record.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, TypeVar

import msgspec

from schemas.errors import SchemaError
from schemas.events import ClickEvent, DeadLetter, OrderEvent, SegmentChange

#: Larger records are refused before parsing: a real order is a few KiB at most, and parsing a
#: multi-megabyte blob would stall a whole partition.
MAX_EVENT_BYTES = 64 * 1024

T = TypeVar("T", OrderEvent, ClickEvent, SegmentChange, DeadLetter)

_ENCODER = msgspec.json.Encoder()
_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {
    model: msgspec.json.Decoder(model)
    for model in (OrderEvent, ClickEvent, SegmentChange, DeadLetter)
}
_AT_PATH = re.compile(r"^(?P<msg>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_EXPECTED = re.compile(r"^Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`$")


def encode(event: OrderEvent | ClickEvent | SegmentChange | DeadLetter) -> bytes:
    """Compact JSON bytes for any event model."""
    return _ENCODER.encode(event)


def decode(model: type[T], data: bytes | bytearray | memoryview) -> T:
    """Decode and validate one record, or raise :class:`SchemaError`."""
    if len(data) > MAX_EVENT_BYTES:
        raise SchemaError("$", f"oversize: {len(data)} bytes, the limit is {MAX_EVENT_BYTES}")
    try:
        return _DECODERS[model].decode(data)  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        raise _schema_error(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise _decode_error(bytes(data), str(exc)) from None


def decode_order(data: bytes) -> OrderEvent:
    return decode(OrderEvent, data)


def decode_click(data: bytes) -> ClickEvent:
    return decode(ClickEvent, data)


def decode_many(
    model: type[T], records: Iterable[bytes]
) -> tuple[list[tuple[int, T]], list[tuple[int, SchemaError]]]:
    """Decode a batch: ``(index, event)`` for the valid, ``(index, error)`` for the rest."""
    valid: list[tuple[int, T]] = []
    rejected: list[tuple[int, SchemaError]] = []
    decoder = _DECODERS[model]
    for index, data in enumerate(records):
        try:
            if len(data) > MAX_EVENT_BYTES:
                raise SchemaError(
                    "$", f"oversize: {len(data)} bytes, the limit is {MAX_EVENT_BYTES}"
                )
            valid.append((index, decoder.decode(data)))
        except SchemaError as exc:
            rejected.append((index, exc))
        except msgspec.ValidationError as exc:
            rejected.append((index, _schema_error(str(exc))))
        except msgspec.DecodeError as exc:
            rejected.append((index, _decode_error(bytes(data), str(exc))))
    return valid, rejected


def _schema_error(text: str) -> SchemaError:
    match = _AT_PATH.match(text)
    message = match.group("msg") if match else text
    path = (match.group("path") if match else None) or "$"
    if "\x1f" in message:  # a FieldProblem raised by a model's own checks
        field, reason = message.split("\x1f", 1)
        return SchemaError(f"{path}.{field}", reason)
    if missing := _MISSING.match(message):
        return SchemaError(f"{path}.{missing.group('field')}", "missing required field")
    if expected := _EXPECTED.match(message):
        want, got = expected.group("want"), expected.group("got")
        return SchemaError(path, f"wrong type: expected {want}, got {got}")
    if message.startswith("Invalid RFC3339"):
        return SchemaError(path, "unparsable timestamp: expected RFC 3339 / ISO 8601 with offset")
    if message.startswith("Invalid enum value"):
        return SchemaError(path, message.replace("Invalid enum value", "unknown value"))
    return SchemaError(path, message[:1].lower() + message[1:])


def _decode_error(data: bytes, text: str) -> SchemaError:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return SchemaError("$", f"not UTF-8: invalid byte at position {exc.start}")
    return SchemaError("$", f"not JSON: {text}")
