"""JSON bytes <-> event models, with rejections that name the field path and the reason.

Every failure becomes one :class:`SchemaError` whose ``path`` is a JSONPath (``$`` for the whole
record) and whose ``reason`` is a sentence an operator can act on; the worker writes exactly that
text into the dead-letter record. Nothing else escapes: :func:`decode_many` rejects any bytes at
all without raising.

The reasons, by kind (``<...>`` varies with the record; the tests assert each one):

- oversize: ``$: oversize: <n> bytes, the limit is 65536``
- nested too deeply: ``$: nested too deeply: more than 256 levels of arrays and objects``
- not UTF-8: ``$: not UTF-8: invalid byte at position <i>``
- not JSON: ``$: not JSON: <what the parser saw>``
- missing field: ``$.<field>: missing required field``
- wrong type: ``$.<path>: wrong type: expected <type>, got <type>``
- outside a declared length or pattern: ``$.<path>: invalid value: expected <type> <bound>``
- unknown enumerated value: ``$.status: unknown value '<v>' (expected one of: <values>)``
- unparsable timestamp: ``$.event_time: unparsable timestamp: expected RFC 3339 ...``
- a model's own checks (prices, quantities, totals, times, versions, ids): see
  :mod:`schemas.events`, e.g. ``$.items[0].quantity: must be at least 1, got 0``
- anything else a record makes the decoder raise (the last resort, so that one record can never
  stop a batch): ``$: could not be decoded: <exception type>: <message>``
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, TypeVar

import msgspec

from schemas.errors import SchemaError
from schemas.events import (
    ClickEvent,
    DeadLetter,
    FieldProblem,
    OrderEvent,
    SegmentChange,
    batch_clock,
)
from schemas.profile import CustomerProfile

#: Larger records are refused before parsing: a real order is a few KiB at most, and parsing a
#: multi-megabyte blob would stall a whole partition.
MAX_EVENT_BYTES = 64 * 1024
#: Deeper records are refused before parsing. Valid events nest three levels (an order, its
#: ``items`` array, one item), but unknown fields may hold anything; msgspec skips them
#: recursively, one level of Python's recursion limit (1000) per level of nesting, and raises
#: ``RecursionError`` past it, at a depth that depends on how deep the caller's stack already
#: is (and past which a decoder can go on failing on later, valid records). A fixed bound well
#: below the limit keeps the verdict the same in every process.
MAX_NESTING = 256
#: A record cannot nest deeper than half its length, so shorter records skip the scan (the
#: common case: a click is ~200 bytes, an order a few hundred).
_NESTING_SCAN_FROM = 2 * MAX_NESTING
#: A reason longer than this is cut (a rejected value is quoted in it, and can be 64 KiB).
MAX_REASON_CHARS = 300
#: ``decode_many`` re-reads the clock for the future-time bound every 4096 records.
_CLOCK_REFRESH_MASK = 4096 - 1

T = TypeVar("T", OrderEvent, ClickEvent, CustomerProfile, SegmentChange, DeadLetter)

_MODELS: tuple[type[Any], ...] = (
    OrderEvent,
    ClickEvent,
    CustomerProfile,
    SegmentChange,
    DeadLetter,
)
_ENCODER = msgspec.json.Encoder()
_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {
    model: msgspec.json.Decoder(model) for model in _MODELS
}


def _literal_fields(model: type[Any]) -> dict[str, tuple[str, ...]]:
    info = msgspec.inspect.type_info(model)
    if not isinstance(info, msgspec.inspect.StructType):
        raise TypeError(f"{model!r} is not a msgspec Struct")
    return {
        f"$.{field.encode_name}": tuple(str(value) for value in field.type.values)
        for field in info.fields
        if isinstance(field.type, msgspec.inspect.LiteralType)
    }


#: For "unknown value" reasons: the allowed values of each enumerated field, by JSONPath.
_CHOICES: dict[type[Any], dict[str, tuple[str, ...]]] = {m: _literal_fields(m) for m in _MODELS}


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_OPENERS = frozenset(b"[{")


def nesting_depth(data: bytes | bytearray | memoryview) -> int:
    """How deeply arrays and objects nest in JSON ``data`` (brackets inside strings ignored).

    Malformed JSON gets a number too (an unterminated string's brackets count); the parser
    refuses such a record anyway, this only decides which reason it gets first.
    """
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", bytes(data)))
    depth = deepest = 0
    for byte in brackets:
        if byte in _OPENERS:
            depth += 1
            if depth > deepest:
                deepest = depth
        else:
            depth -= 1
    return deepest


def _guard(data: bytes | bytearray | memoryview) -> SchemaError | None:
    """The checks made before parsing a record longer than ``_NESTING_SCAN_FROM``: size, then
    nesting (scanned only when there are enough brackets to be too deep)."""
    if len(data) > MAX_EVENT_BYTES:
        return _oversize(len(data))
    if isinstance(data, memoryview):  # no count(); rare enough for the copy not to matter
        data = data.tobytes()
    if data.count(b"{") + data.count(b"[") > MAX_NESTING and nesting_depth(data) > MAX_NESTING:
        return SchemaError(
            "$", f"nested too deeply: more than {MAX_NESTING} levels of arrays and objects"
        )
    return None


def encode(
    event: OrderEvent | ClickEvent | CustomerProfile | SegmentChange | DeadLetter,
) -> bytes:
    """Compact JSON bytes for any event model."""
    return _ENCODER.encode(event)


def decode(model: type[T], data: bytes | bytearray | memoryview) -> T:
    """Decode and validate one record, or raise :class:`SchemaError` (and nothing else)."""
    try:
        refused = _guard(data) if len(data) > _NESTING_SCAN_FROM else None
        if refused is None:
            return _DECODERS[model].decode(data)  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        refused = validation_error(model, exc)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        refused = decode_error(data, exc)
    except Exception as exc:  # the last resort: see the module docstring
        refused = _unexpected(exc)
    raise refused


def decode_order(data: bytes) -> OrderEvent:
    return decode(OrderEvent, data)


def decode_click(data: bytes) -> ClickEvent:
    return decode(ClickEvent, data)


def decode_profile(data: bytes) -> CustomerProfile:
    return decode(CustomerProfile, data)


def decode_many(
    model: type[T], records: Iterable[bytes | bytearray | memoryview]
) -> tuple[list[tuple[int, T]], list[tuple[int, SchemaError]]]:
    """Decode a batch: ``(index, event)`` for the valid, ``(index, error)`` for the rest.

    ``index`` is the record's position in ``records``, so a caller can dead-letter the exact
    bytes it received; both lists are in input order and together hold every index once. Never
    raises for a record's content, whatever it is: an exception no check foresaw rejects that
    record alone, with the exception's type in the reason. The future-time bound is read from
    the clock once per 4096 records (:func:`schemas.events.batch_clock`).
    """
    valid: list[tuple[int, T]] = []
    rejected: list[tuple[int, SchemaError]] = []
    keep = valid.append
    decode_one = _DECODERS[model].decode
    with batch_clock() as refresh_clock:
        for index, data in enumerate(records):
            if not index & _CLOCK_REFRESH_MASK and index:
                refresh_clock()
            try:
                if len(data) > _NESTING_SCAN_FROM:
                    refused = _guard(data)
                    if refused is not None:
                        rejected.append((index, refused))
                        continue
                keep((index, decode_one(data)))
            except msgspec.ValidationError as exc:
                rejected.append((index, validation_error(model, exc)))
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                rejected.append((index, decode_error(data, exc)))
            except Exception as exc:  # the last resort: see the module docstring
                rejected.append((index, _unexpected(exc)))
    return valid, rejected


def _oversize(size: int) -> SchemaError:
    return SchemaError("$", f"oversize: {size} bytes, the limit is {MAX_EVENT_BYTES}")


def _unexpected(exc: Exception) -> SchemaError:
    try:
        detail = str(exc)
    except Exception:  # an exception whose __str__ raises must not escape either
        detail = "(message unavailable)"
    return _error("$", f"could not be decoded: {type(exc).__name__}: {detail}")


def _error(path: str, reason: str) -> SchemaError:
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 1] + "…"
    return SchemaError(path, reason)


def _split_path(text: str) -> tuple[str, str]:
    """msgspec's ``"<message> - at `$.path`"`` -> (message, path); no suffix means ``$``.

    The suffix is msgspec's and comes last; the message may quote record content, so it is
    split off from the right.
    """
    message, sep, tail = text.rpartition(" - at `")
    if sep and tail.startswith("$") and tail.endswith("`") and "`" not in tail[:-1]:
        return message, tail[:-1]
    return text, "$"


def validation_error(model: type[Any], exc: msgspec.ValidationError) -> SchemaError:
    text = str(exc)
    problem = exc.__cause__
    if isinstance(problem, FieldProblem):  # raised by a model's own checks
        _, path = _split_path(text)
        return _error(f"{path}.{problem.field}", problem.reason)
    message, path = _split_path(text)
    if message.startswith("Object missing required field `") and message.endswith("`"):
        field = message[len("Object missing required field `") : -1]
        return _error(f"{path}.{field}", "missing required field")
    if message.startswith("Expected `"):
        want, _, rest = message[len("Expected `") :].partition("`")
        if rest.startswith(", got `") and rest.endswith("`"):
            return _error(path, f"wrong type: expected {want}, got {rest[len(', got `') : -1]}")
        return _error(path, f"invalid value: expected {want}{rest}")
    if message.startswith("Invalid RFC3339 encoded datetime"):
        return _error(path, "unparsable timestamp: expected RFC 3339 / ISO 8601 with offset")
    if message.startswith("Invalid enum value "):
        value = message[len("Invalid enum value ") :]
        choices = _CHOICES.get(model, {}).get(path)
        if choices:
            value = value if len(value) <= 80 else value[:79] + "…"
            return _error(path, f"unknown value {value} (expected one of: {', '.join(choices)})")
        return _error(path, f"unknown value {value}")
    return _error(path, message[:1].lower() + message[1:])


def decode_error(
    data: bytes | bytearray | memoryview, exc: msgspec.DecodeError | UnicodeDecodeError
) -> SchemaError:
    try:
        bytes(data).decode("utf-8")
    except UnicodeDecodeError as bad:
        return _error("$", f"not UTF-8: invalid byte at position {bad.start}")
    text = str(exc).removeprefix("JSON is malformed: ")
    return _error("$", f"not JSON: {text[:1].lower()}{text[1:]}")
