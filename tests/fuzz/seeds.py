"""The seed corpus and the libFuzzer dictionary, built at run time from the test generators.

Seeds are the valid events the rest of the suite uses (``tests/support/synthetic.py``, the synthetic
producer, the CSV fixtures read by ``producers/readers.py``), hand-built segment changes, dead
letters and control messages, and the malformed kinds the worker test dead-letters
(``tests/integration/test_worker.py::malformed``) plus deep nesting. They are written as batches
in :mod:`.target`'s layout: one valid event alone, a few together, and valid ones mixed with bad
ones. Built, not committed: a few hundred small files that the generators already define.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from schemas import (
    ClickEvent,
    DeadLetter,
    LineItem,
    OrderEvent,
    SegmentChange,
    decode,
    encode,
)
from schemas.codec import MAX_EVENT_BYTES, MAX_NESTING
from schemas.events import ChangeReason
from tests.fuzz import SEP, TARGETS
from tests.fuzz.mutator import ENUMS, FIELDS

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def valid_orders_and_clicks() -> tuple[list[OrderEvent], list[ClickEvent]]:
    """The events the other tests build: state-store generators, synthetic data, CSV fixtures."""
    from producers.file_source import FileSource
    from producers.synthetic import SyntheticConfig, generate
    from tests.support.synthetic import clicks, orders

    found: list[OrderEvent | ClickEvent] = [*orders(20, 60), *clicks(20, 15)]
    synthetic = generate(SyntheticConfig(customers=15, days=30, seed=3, start=T0))
    found += list(synthetic.events())[:150]
    for name, fmt in [
        ("orders_small.csv", "orders-csv"),
        ("clicks_small.csv", "clicks-csv"),
        ("online_retail_small.csv", "online-retail"),
    ]:
        found += [
            ev for ev in FileSource(FIXTURES / name, fmt) if isinstance(ev, OrderEvent | ClickEvent)
        ]
    return (
        [ev for ev in found if isinstance(ev, OrderEvent)],
        [ev for ev in found if isinstance(ev, ClickEvent)],
    )


def segment_changes() -> list[SegmentChange]:
    """A first segmentation and later moves, with and without distances."""
    features = {"recency_days": 3.5, "frequency": 4.0, "monetary": 251.25, "aov": 62.8125}
    moves: list[tuple[str | None, str, ChangeReason, str]] = [
        (None, "new", "order", "rules-v1"),
        ("new", "loyal", "order", "kmeans-3"),
        ("loyal", "at_risk", "recency_decay", "kmeans-3"),
        ("at_risk", "champion", "model_update", "kmeans-4"),
        ("browser", "browser", "clicks", "kmeans-4"),
    ]
    return [
        SegmentChange(
            customer_id=f"C{i}",
            old_segment=old,
            new_segment=new,
            reason=reason,
            model_version=version,
            features=dict(features, frequency=float(i)),
            event_time=T0 + timedelta(minutes=i),
            processing_time=T0 + timedelta(minutes=i, seconds=2),
            old_distance=None if old is None else 1.25,
            new_distance=None if old is None else 0.5,
        )
        for i, (old, new, reason, version) in enumerate(moves)
    ]


def malformed_orders(good: bytes) -> list[bytes]:
    """The bad records the worker test dead-letters, plus deep nesting and the size limit."""
    order_fields = good.rstrip(b"}")
    return [
        b"{this is not json",
        b"\xfe\x00binary",  # the worker test's b"\xff\xfe..." without the separator byte
        b"",
        good.replace(b'"customer_id":"C0",', b""),
        good.replace(b'"total":5.0', b'"total":"5"'),
        good.replace(b'"placed"', b'"shipped"'),
        good.replace(b'"schema_version":1', b'"schema_version":9'),
        good.replace(b'"total":5.0', b'"total":7.5'),
        good.replace(b'"quantity":1', b'"quantity":0').replace(b'"total":5.0', b'"total":0.0'),
        good.replace(b"2025-03-01", b"2025-13-45"),
        b'{"pad":"' + b"x" * (MAX_EVENT_BYTES - 9) + b'"}',  # one byte over the limit
        b'{"a":' * 5000 + b"{}" + b"}" * 5000,
        b"[" * 5000 + b"]" * 5000,
        order_fields + b',"x":' + b"[" * (MAX_NESTING + 8) + b"]" * (MAX_NESTING + 8) + b"}",
        order_fields + b',"x":' + b"[" * 10 + b"]" * 10 + b"}",
    ]


def good_order() -> OrderEvent:
    """The worker test's ``_valid_order(0)``, whose bytes the malformed kinds are edits of."""
    return OrderEvent(
        event_id="ok-0", schema_version=1, customer_id="C0", order_id="O0",
        event_time=datetime(2025, 3, 1, tzinfo=UTC), status="placed",
        items=[LineItem(sku="S", quantity=1, unit_price=5.0)], total=5.0,
    )  # fmt: skip


def dead_letters(bad: Sequence[bytes]) -> list[DeadLetter]:
    """The dead letters the worker would write for ``bad`` orders (the reasons are real)."""
    letters = []
    for index, record in enumerate(bad):
        if len(record) > MAX_EVENT_BYTES // 2:  # its base64 must fit under the size limit
            continue
        try:
            decode(OrderEvent, record)
            continue
        except Exception as exc:  # not only SchemaError: a decoder bug is the fuzzer's to report
            reason = str(exc)
        letters.append(
            DeadLetter(
                original=record,
                source_topic="orders",
                partition=index % 4,
                offset=1000 + index,
                error=reason,
                dead_lettered_at=T0,
                key=b"C0" if index % 2 else None,
            )
        )
    return letters


def control_messages() -> list[bytes]:
    from worker.scoring import control

    return [
        control.encode("model_update", version="kmeans-4"),
        control.encode("rescore_all", token="t-1"),
        control.encode(
            "drift", version="kmeans-4", max=0.8, mean=0.2, bound=0.5, at=T0.isoformat()
        ),
        b'{"type": "reboot"}',
        b'{"type": null}',
        b"[]",
    ]


def batches(target: str, good: Sequence[bytes], bad: Sequence[bytes]) -> Iterator[bytes]:
    """Fuzz inputs for ``target``: each good record alone, runs of good ones, good with bad."""
    selector = TARGETS.index(target)
    holders = [selector + len(TARGETS) * h for h in range(3)]  # bytes, bytearray, memoryview
    for i, record in enumerate(good):
        yield bytes([holders[i % 3]]) + record
    for i in range(0, len(good), 4):
        yield bytes([holders[i % 3]]) + SEP.join(good[i : i + 4])
    for i, record in enumerate(bad):
        yield bytes([holders[i % 3]]) + SEP.join([good[i % len(good)], record, good[-1]])


def inputs() -> Iterator[bytes]:
    """Every seed input, for every target."""
    orders, clicks = valid_orders_and_clicks()
    good = encode(good_order())
    bad_orders = malformed_orders(good)
    yield from batches("orders", [good, *map(encode, orders)], bad_orders)
    bad_clicks = [*bad_orders, good]  # an order on the clicks topic is one more bad click
    yield from batches("clicks", [encode(click) for click in clicks], bad_clicks)
    changes = [encode(change) for change in segment_changes()]
    yield from batches("segment_changes", changes, bad_orders[:3] + changes[:1])
    letters = [encode(letter) for letter in dead_letters(bad_orders)]
    yield from batches("dead_letters", letters, bad_orders[:3] + changes[:1])
    yield from batches("control", control_messages(), bad_orders[:3])


def write_corpus(directory: Path) -> int:
    """Write every seed input into ``directory`` (named by content hash); returns how many."""
    directory.mkdir(parents=True, exist_ok=True)
    names = set()
    for data in inputs():
        name = hashlib.sha1(data).hexdigest()
        (directory / name).write_bytes(data)
        names.add(name)
    return len(names)


def write_dictionary(path: Path) -> Path:
    """A libFuzzer dictionary: field names, enum values and JSON/time tokens the decoders know."""
    tokens = [f'"{name}":' for name in FIELDS] + [f'"{value}"' for value in ENUMS]
    tokens += ["null", "true", "false", "1e400", "-0.0", "{}", "[]", '"\\u0000"', '"\\ud800"']
    tokens += ["T00:00:00Z", "+01:00", ".123456", '"2024-03-01T12:00:00Z"']
    entries = [_dictionary_entry(token.encode()) for token in tokens] + [_dictionary_entry(SEP)]
    path.write_text("".join(f"{entry}\n" for entry in entries))
    return path


def _dictionary_entry(token: bytes) -> str:
    """``token`` quoted as libFuzzer reads it: ``\\``, ``\\"`` and ``\\xAB`` escapes."""
    chars = [
        "\\" + chr(b) if b in b'"\\' else chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02X}"
        for b in token
    ]
    return '"' + "".join(chars) + '"'
