"""JSON-aware mutations of fuzz inputs, for the validation code behind msgspec's C parser.

atheris sees coverage only in Python: msgspec parses in C, so byte-level mutations get no
feedback for "this is still JSON" and most of them never get past the parser. This mutator
parses a record as JSON when it can, changes one thing a producer could plausibly get wrong (a
field dropped, renamed, of another type, an out-of-range or NaN-like number, an odd string, an
unknown enum value or version, a timestamp at a bound, deep nesting, a total just inside or
outside the tolerance, a size at the limit) and writes it back. Non-JSON records, and a quarter
of all calls, get libFuzzer's own byte mutations (``atheris.Mutate``), which also use the
comparisons it traced.

The input layout is :mod:`.target`'s: a selector byte, then records split on ``0xff``.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

from schemas import ClickEvent, DeadLetter, OrderEvent, SegmentChange
from schemas.codec import MAX_EVENT_BYTES, MAX_NESTING
from schemas.events import (
    MAX_ITEMS_PER_ORDER,
    MAX_ORDER_TOTAL,
    MAX_QUANTITY,
    ChangeReason,
    ClickType,
    OrderStatus,
)
from tests.fuzz import SEP

#: ``(data, max_size) -> data``: libFuzzer's byte-level mutation (``atheris.Mutate`` when
#: fuzzing; a test passes something else, since ``atheris.Mutate`` needs a running fuzzer).
ByteMutator = Callable[[bytes, int], bytes]


class Raw(str):
    """JSON text written as it is: numbers as the record spelled them, or as JSON can't."""


FIELDS = sorted(
    {name for model in (OrderEvent, ClickEvent, SegmentChange, DeadLetter)
     for name in model.__struct_fields__} | {"sku", "quantity", "unit_price"}
)  # fmt: skip
ENUMS = [*get_args(OrderStatus), *get_args(ClickType), *get_args(ChangeReason)]
ODD_ENUMS = ["PLACED", "placed ", "shipped", "page-view", "Order", ""]
NUMBERS = [
    Raw(text)
    for text in (
        "0", "-0", "-0.0", "1", "-1", "2", "1.0", "1.5", "0.005", "0.01", "1e400", "-1e400",
        "1e-400", "NaN", "Infinity", "-Infinity", str(2**63 - 1), str(2**63), str(2**64),
        str(-(2**63) - 1), "1" + "0" * 400, str(MAX_QUANTITY), str(MAX_QUANTITY + 1),
        str(MAX_ORDER_TOTAL), str(MAX_ORDER_TOTAL + 0.01), "1e7", "0.1e1", "1E+2", "-5e-324",
        "1.7976931348623157e308", "00", "01", "1.", ".5", "+1",
    )
]  # fmt: skip
STRINGS: list[Any] = [
    "", " ", "x" * 128, "x" * 129, "\x00", "\x1f", "é", "💥", "\u2028", "EUR", "eur", "EU",
    "EURO", "ÉUR", "1", "null", "$", "`", " - at `$.x`", "AAAA", "AAA=", "not base64!",
    Raw('"\\ud800"'), Raw('"\\udc00\\ud800"'), Raw('"\\u0000"'), Raw('"\\/"'),
]  # fmt: skip
OTHERS: list[Any] = [None, True, False, [], {}, [None], {"": None}]
TIMES = [
    "2024-02-29T12:00:00Z", "2023-02-29T12:00:00Z", "1995-01-01T00:00:00Z",
    "1994-12-31T23:59:59.999999Z", "1995-01-01T00:59:59+01:00", "2024-01-01T00:00:00",
    "2024-01-01T00:00:00+24:00", "2024-01-01T00:00:00-23:59", "2024-01-01T00:00:00.1234567891Z",
    "2024-01-01t00:00:00z", "2024-01-01 00:00:00Z", "2024-01-01T23:59:60Z", "2024-01-01",
    "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "00:00:00Z", "2024-1-1T0:0:0Z",
    Raw("1704067200"), Raw("1704067200000"),
]  # fmt: skip


def mutate(data: bytes, max_size: int, seed: int, byte_mutate: ByteMutator | None = None) -> bytes:
    """The libFuzzer custom mutator: one structured or byte-level change, within ``max_size``."""
    rng = random.Random(seed)
    if byte_mutate is None:
        import atheris  # only here: importing this module must not need a running fuzzer

        byte_mutate = atheris.Mutate
    if len(data) < 2 or rng.random() < 0.25:
        return byte_mutate(data, max_size)
    head, records = data[:1], data[1:].split(SEP)
    roll = rng.random()
    if roll < 0.05:
        head = bytes([rng.randrange(256)])
    elif roll < 0.15:
        mutate_batch(records, rng)
    else:
        i = rng.randrange(len(records))
        records[i] = mutate_record(records[i], rng, byte_mutate)
    out = head + SEP.join(records)
    return out if len(out) <= max_size else byte_mutate(data, max_size)


def mutate_batch(records: list[bytes], rng: random.Random) -> None:
    """Duplicate, drop, swap or add an empty record: the batch's bookkeeping, not a record."""
    i, j = rng.randrange(len(records)), rng.randrange(len(records))
    action = rng.randrange(4)
    if action == 0:
        records.insert(j, records[i])
    elif action == 1 and len(records) > 1:
        del records[i]
    elif action == 2:
        records[i], records[j] = records[j], records[i]
    else:
        records.insert(j, b"")


def mutate_record(record: bytes, rng: random.Random, byte_mutate: ByteMutator) -> bytes:
    """One structured change if ``record`` is JSON, else a byte-level one."""
    try:
        value = json.loads(record, parse_float=Raw, parse_int=Raw, parse_constant=Raw)
    except (ValueError, RecursionError):  # not UTF-8 or not JSON (or too deep for json)
        return byte_mutate(record, len(record) + 64)
    if rng.random() < 0.05:
        return nested(rng.choice([MAX_NESTING, MAX_NESTING + 1, 5000]), rng).encode()
    try:
        value = rng.choice(OPERATIONS)(value, rng)
        text = dump(value)
    except RecursionError:  # a record nested near the bound: too deep to walk in Python here
        return byte_mutate(record, len(record) + 64)
    if rng.random() < 0.05:
        text = pad_to_limit(text, rng)
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate becomes invalid UTF-8


def dump(value: Any) -> str:
    """JSON text of ``value``; :class:`Raw` parts are written verbatim."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def slots(value: Any) -> list[tuple[Any, Any]]:
    """Every ``(container, key)`` in ``value``, so that one can be changed in place."""
    found: list[tuple[Any, Any]] = []
    stack = [value] if isinstance(value, dict | list) else []
    while stack:
        node = stack.pop()
        pairs = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in list(pairs):
            found.append((node, key))
            if isinstance(child, dict | list):
                stack.append(child)
    return found


def nested(depth: int, rng: random.Random) -> Raw:
    """Objects or arrays ``depth`` levels deep (text: ``json`` could not write 5000 levels)."""
    if rng.random() < 0.5:
        return Raw('{"a":' * (depth - 1) + "{}" + "}" * (depth - 1))
    return Raw("[" * depth + "]" * depth)


def pad_to_limit(text: str, rng: random.Random) -> str:
    """Pad an object to one byte either side of the size limit, in an unknown field (ignored,
    so a valid record stays valid) or in its first string value."""
    if not text.startswith("{"):
        return text
    if rng.random() < 0.5:
        text, at = '{"x":"",' + text[1:] if text != "{}" else '{"x":""}', 6
    else:
        at = text.find(':"') + 2  # just inside the first string value
    missing = MAX_EVENT_BYTES + rng.choice((-1, 0, 1)) - len(text.encode("utf-8", "surrogatepass"))
    if at < 2 or missing <= 0:
        return text
    return text[:at] + "x" * missing + text[at:]


# -- operations: each takes the parsed record and returns the changed one ---------------------


def drop(value: Any, rng: random.Random) -> Any:
    """Remove a field or an array element (a missing field, or an empty array)."""
    if places := slots(value):
        node, key = rng.choice(places)
        del node[key]
    return value


def replace(value: Any, rng: random.Random) -> Any:
    """Set a field to an odd value of any type."""
    if places := slots(value):
        node, key = rng.choice(places)
        pool = rng.choice((NUMBERS, STRINGS, OTHERS, TIMES, ENUMS + ODD_ENUMS))
        node[key] = copy.deepcopy(rng.choice(pool))
    return value


def retype(value: Any, rng: random.Random) -> Any:
    """Keep a field's content but change its type: ``5`` <-> ``"5"``, ``x`` -> ``[x]``."""
    if places := slots(value):
        node, key = rng.choice(places)
        old = node[key]
        if isinstance(old, Raw):
            node[key] = str(old)
        elif isinstance(old, str) and rng.random() < 0.5:
            node[key] = Raw(old) if old[:1].isdigit() or old[:1] == "-" else Raw(json.dumps([old]))
        else:
            node[key] = rng.choice(([old], {"value": old}, None))
    return value


def rename(value: Any, rng: random.Random) -> Any:
    """Misspell a field name, or use another model's: one missing field, one unknown."""
    dicts = [node for node, _ in slots(value) if isinstance(node, dict)] or [value]
    node = rng.choice(dicts)
    if isinstance(node, dict) and node:
        key = rng.choice(list(node))
        new = rng.choice((key.upper(), key + "_", key[:-1], rng.choice(FIELDS)))
        node[new] = node.pop(key)
    return value


def add_unknown(value: Any, rng: random.Random) -> Any:
    """Add an unknown field, often nested near (or past) the nesting limit."""
    dicts = [node[key] for node, key in slots(value) if isinstance(node[key], dict)]
    node = rng.choice([value, *dicts]) if isinstance(value, dict) else None
    if isinstance(node, dict):
        depth = rng.choice((1, 2, 10, 40, MAX_NESTING - 2, MAX_NESTING - 1, MAX_NESTING, 300))
        node[rng.choice(("x", "extra", "items_", *FIELDS))] = nested(depth, rng)
    return value


def enum_or_version(value: Any, rng: random.Random) -> Any:
    """An unknown or another model's enumerated value, or an unknown schema version."""
    if isinstance(value, dict):
        field = rng.choice(("status", "type", "reason", "schema_version"))
        if field == "schema_version":
            value[field] = rng.choice([Raw(v) for v in ("0", "1", "2", "-1", "1.0", "1e0")])
        else:
            value[field] = rng.choice(ENUMS + ODD_ENUMS)
    return value


def timestamp(value: Any, rng: random.Random) -> Any:
    """A time field at or past a bound, malformed, or without offset."""
    if isinstance(value, dict):
        fields = [k for k in value if k.endswith(("_time", "_at"))] or ["event_time"]
        now = datetime.now(UTC)
        near = [(now + timedelta(hours=h)).isoformat() for h in (23, 25, -1)]
        value[rng.choice(fields)] = rng.choice(TIMES + near)
    return value


def order_lines(value: Any, rng: random.Random) -> Any:
    """Many or extreme lines, and a total just inside or outside the one-cent tolerance."""
    items = value.get("items") if isinstance(value, dict) else None
    if not isinstance(items, list) or not items:
        return value
    if rng.random() < 0.3:
        count = rng.choice((MAX_ITEMS_PER_ORDER, MAX_ITEMS_PER_ORDER + 1, rng.randrange(2, 50)))
        items[:] = [items[i % len(items)] for i in range(count)]
    elif rng.random() < 0.5 and isinstance(items[0], dict):
        items[0] = dict(items[0], quantity=rng.choice(NUMBERS), unit_price=rng.choice(NUMBERS))
    try:
        exact = sum(float(item["quantity"]) * float(item["unit_price"]) for item in items)
    except (KeyError, TypeError, ValueError):
        return value
    nudge = rng.choice((0.0, 0.005, -0.01, 0.01, 0.01 + 1e-9, 0.0100001, 1e-12))
    value["total"] = Raw(repr(exact + nudge))
    return value


def splice(value: Any, rng: random.Random) -> Any:
    """Copy one part of the record over another (a field's value in another's place)."""
    places = slots(value)
    if len(places) > 1:
        (src, skey), (dst, dkey) = rng.sample(places, 2)
        dst[dkey] = copy.deepcopy(src[skey])  # a copy: the source may contain the target
    return value


OPERATIONS: list[Callable[[Any, random.Random], Any]] = [
    drop, replace, replace, retype, rename, add_unknown, enum_or_version, timestamp, order_lines,
    order_lines, splice,
]  # fmt: skip
