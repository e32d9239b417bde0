"""Poison records: each one is dead-lettered once with its reason; the same worker keeps going.

What this proves, against the real broker and Redis with ``segstream worker`` as a subprocess:

- At least 30 distinct malformed kinds are sent to ``orders`` and at least 30 to ``clicks``
  (:func:`order_kinds`, :func:`click_kinds`), interleaved at seeded random places with a few
  thousand valid orders (with cancellations and returns) and clicks, on every partition, with
  keys that are missing, empty, binary or long and with assorted headers. Every malformed
  record gets exactly one dead letter, matched by its (topic, partition, offset), carrying its
  original bytes and key and a reason with the expected phrase; every valid event is applied
  exactly once (the Redis state equals the oracle customer by customer, the counters add up);
  and the worker process that started is the one still running, with no traceback in its log.
- The kinds include the record that stopped the worker before commit d2c38e0: an object nested
  5000 levels deep made msgspec raise ``RecursionError`` out of ``decode_many``; the offset was
  never committed, so every restart fetched it again and died again. Also a valid event carrying
  an unknown field nested 300 levels deep (refused: past the fixed bound of 256 levels, which
  keeps msgspec far from Python's recursion limit), 70 KB records, random bytes, other encodings,
  every JSON top-level type, and each model's own checks (prices, quantities, totals, times,
  versions, ids, enums).
- Records produced before any worker runs are drained by the first worker (also when the first
  record of every partition is the 5000-deep one: the original outage), and a second worker
  started after a SIGTERM starts, re-applies nothing and dead-letters nothing again, and goes
  on with new records. A worker of a new consumer group (the committed offsets lost) re-reads
  every poison record without dying; the state does not change and the counters only count the
  re-read records as duplicates (dead letters are at-least-once: one per delivery at most).

Why: a single record must never stop ingestion, and a record that could not be applied must be
somewhere an operator can find it, exactly once per delivery, with the reason to fix it.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import pytest

from schemas import (
    ClickEvent,
    OrderEvent,
    SchemaError,
    decode,
    decode_click,
    decode_order,
)
from segstream.settings import Settings
from tests.support.kafka_reads import committed_offsets, read_dead_letters
from tests.support.producing import (
    Kind,
    Outgoing,
    Sent,
    interleave,
    next_offsets,
    produce,
    records_for,
    send_all,
    valid_records,
)
from tests.support.state_checks import (
    assert_same_state,
    counters,
    oracle_rows,
    redis_rows,
    wait_drained,
)
from tests.support.synthetic import Event, dataset
from tests.support.waiting import wait_for
from tests.support.worker_process import WorkerProcess, assert_same_worker_healthy, start
from worker.ingest.listener import NullListener
from worker.ingest.service import IngestService
from worker.state.store import StateStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Partitions of each input topic (the ``make_topic`` fixture's default).
PARTITIONS = 4
#: Small batches: the poison lands in many different batches, next to valid events.
BATCH_MAX_RECORDS = 250
#: The record that crashed the worker before d2c38e0 (30 KB, under the size limit).
DEEP_OBJECT = b'{"a":' * 5000 + b"1" + b"}" * 5000
NESTED_TOO_DEEPLY = "$: nested too deeply: more than 256 levels"


@pytest.fixture(autouse=True)
def _remove_keys_afterwards(redis_client: object) -> None:
    """``redis_client`` deletes every key under this test's prefix when the test ends."""


# -- the malformed kinds -------------------------------------------------------------------------
ORDER: dict[str, Any] = {
    "event_id": "poison-order", "schema_version": 1, "customer_id": "C00001",
    "order_id": "poison-order", "event_time": "2025-03-01T10:00:00Z", "status": "placed",
    "items": [{"sku": "SKU-1", "quantity": 2, "unit_price": 5.0}], "total": 10.0,
    "currency": "EUR",
}  # fmt: skip
CLICK: dict[str, Any] = {
    "event_id": "poison-click", "schema_version": 1, "session_id": "S-poison",
    "event_time": "2025-03-01T10:00:00Z", "type": "product_view", "customer_id": "C00001",
    "sku": "SKU-1",
}  # fmt: skip


def _json(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def _with(template: dict[str, Any], **changes: Any) -> bytes:
    """``template`` with fields changed; ``...`` removes a field."""
    doc = json.loads(json.dumps(template))
    for name, value in changes.items():
        if value is ...:
            doc.pop(name)
        else:
            doc[name] = value
    return _json(doc)


def _nested(levels: int) -> Any:
    doc: Any = 1
    for _ in range(levels):
        doc = {"a": doc}
    return doc


def shared_kinds(template: dict[str, Any], other: dict[str, Any]) -> list[Kind]:
    """Kinds that are malformed for either topic; the event-shaped ones start from ``template``.

    ``template`` is a valid event of the topic and ``other`` one of the other topic.
    """
    good = _json(template)
    rng = random.Random(20261206)
    mixed_deep = b'[{"a":' * 150 + b"1" + b"}]" * 150  # 300 levels, arrays and objects in turn
    return [
        # -- nesting: the record that raised before, and its relatives
        Kind("object nested 5000 deep", DEEP_OBJECT, NESTED_TOO_DEEPLY),
        Kind("array nested 5000 deep", b"[" * 5000 + b"]" * 5000, NESTED_TOO_DEEPLY),
        Kind("arrays and objects nested 300 deep", mixed_deep, NESTED_TOO_DEEPLY),
        Kind("valid event + unknown field nested 300 deep", _with(template, extra=_nested(300)),
             NESTED_TOO_DEEPLY),
        # -- size
        Kind("70 KB of JSON", b'{"pad":"' + b"x" * 70_000 + b'"}', "$: oversize: 70010 bytes"),
        Kind("valid event padded to 70 KB", _with(template, pad="y" * 70_000), "$: oversize:"),
        # -- bytes that are not UTF-8 JSON
        Kind("random binary", b"\xff" + rng.randbytes(511), "$: not UTF-8: invalid byte"),
        Kind("invalid UTF-8 inside a string", good.replace(b'"C00001"', b'"C\xff\xfe01"'),
             "$: not UTF-8: invalid byte"),
        Kind("overlong UTF-8", good.replace(b'"C00001"', b'"C\xc0\xaf1"'), "$: not UTF-8"),
        Kind("UTF-16 with BOM", json.dumps(template).encode("utf-16"), "$: not UTF-8"),
        Kind("UTF-8 BOM before the JSON", b"\xef\xbb\xbf" + good, "$: not JSON: invalid character"),
        Kind("NUL byte before the JSON", b"\x00" + good, "$: not JSON: invalid character"),
        Kind("empty value (zero bytes)", b"", "$: not JSON: input data was truncated"),
        Kind("null value (tombstone)", None, "$: empty record: the value is null"),
        Kind("whitespace only", b" \n\t ", "$: not JSON: input data was truncated"),
        # -- JSON that is not an object
        Kind("JSON null", b"null", "$: wrong type: expected object, got null"),
        Kind("JSON integer", b"42", "$: wrong type: expected object, got int"),
        Kind("JSON float", b"-1.5e3", "$: wrong type: expected object, got float"),
        Kind("JSON string", b'"order"', "$: wrong type: expected object, got str"),
        Kind("JSON array of the event", b"[" + good + b"]", "$: wrong type: expected object, got "
             "array"),
        Kind("JSON true", b"true", "$: wrong type: expected object, got bool"),
        Kind("empty object", b"{}", "$.event_id: missing required field"),
        # -- broken JSON
        Kind("truncated", good[:-7], "$: not JSON: input data was truncated"),
        Kind("trailing garbage", good + b" garbage", "$: not JSON: trailing characters"),
        Kind("two JSON documents", good + b"\n" + good, "$: not JSON: trailing characters"),
        Kind("raw control character in a string", good.replace(b'"C00001"', b'"C\x0100001"'),
             "$: not JSON: invalid character"),
        Kind("single quotes", good.replace(b'"', b"'"), "$: not JSON"),
        Kind("trailing comma", good[:-1] + b",}", "$: not JSON: trailing comma"),
        Kind("lone surrogate escape", good.replace(b'"C00001"', b'"\\ud800"'),
             "$: not JSON: unexpected end of escaped utf-16 surrogate pair"),
        Kind("comment before the JSON", b"/* order */" + good, "$: not JSON"),
        Kind("NaN literal", good[:-1] + b',"score":NaN}', "$: not JSON: invalid character"),
        Kind("Infinity literal", good[:-1] + b',"score":Infinity}', "$: not JSON"),
        # -- well-formed events that break the contract
        Kind("event_id missing", _with(template, event_id=...), "$.event_id: missing required"),
        Kind("event_id empty", _with(template, event_id=""),
             "$.event_id: invalid value: expected str of length >= 1"),
        Kind("event_id of 200 characters", _with(template, event_id="E" * 200),
             "$.event_id: invalid value: expected str of length <= 128"),
        Kind("event_id a number", _with(template, event_id=17), "$.event_id: wrong type"),
        Kind("schema_version as a string", _with(template, schema_version="1"),
             "$.schema_version: wrong type: expected int, got str"),
        Kind("unknown schema_version", _with(template, schema_version=2),
             "$.schema_version: unknown schema_version 2"),
        Kind("schema_version of 5000 digits",
             good.replace(b'"schema_version":1', b'"schema_version":' + b"9" * 5000),
             "$.schema_version: integer value out of range"),
        Kind("event_time unparsable", _with(template, event_time="2025-13-45T25:61:00Z"),
             "$.event_time: unparsable timestamp"),
        Kind("event_time a date only", _with(template, event_time="2025-03-01"),
             "$.event_time: unparsable timestamp"),
        Kind("event_time without offset", _with(template, event_time="2025-03-01T10:00:00"),
             "$.event_time: must carry a UTC offset"),
        Kind("event_time as epoch seconds", _with(template, event_time=1740823200),
             "$.event_time: wrong type: expected datetime, got int"),
        Kind("event_time in 2999", _with(template, event_time="2999-01-01T00:00:00Z"),
             "is more than 24h in the future"),
        Kind("event_time at the epoch", _with(template, event_time="1970-01-01T00:00:00Z"),
             "is before 1995-01-01"),
        Kind("event_time year 1 at +23:59", _with(template, event_time="0001-01-01T00:00:00+23:59"),
             "is before 1995-01-01"),
        Kind("event_time null", _with(template, event_time=None),
             "$.event_time: wrong type: expected datetime, got null"),
        Kind("duplicate key, the last one bad", good[:-1] + b',"schema_version":3}',
             "$.schema_version: unknown schema_version 3"),
        Kind("the other topic's event", _json(other), "missing required field"),
    ]  # fmt: skip


def order_kinds() -> list[Kind]:
    """Every kind sent to ``orders``."""
    item = ORDER["items"][0]
    return [
        *shared_kinds(ORDER, CLICK),
        Kind("items missing", _with(ORDER, items=...), "$.items: missing required field"),
        Kind("items empty", _with(ORDER, items=[], total=0.0),
             "$.items: invalid value: expected array of length >= 1"),
        Kind("1001 items", _with(ORDER, items=[item] * 1001, total=10010.0),
             "$.items: invalid value: expected array of length <= 1000"),
        Kind("items an object", _with(ORDER, items=item), "$.items: wrong type"),
        Kind("negative unit price", _with(ORDER, items=[{**item, "unit_price": -5.0}], total=0.0),
             "$.items[0].unit_price: must not be negative"),
        Kind("unit price above the bound", _with(ORDER, items=[{**item, "unit_price": 2e7}],
             total=4e7), "$.items[0].unit_price: must be at most 10000000"),
        Kind("zero quantity", _with(ORDER, items=[{**item, "quantity": 0}], total=0.0),
             "$.items[0].quantity: must be at least 1, got 0"),
        Kind("negative quantity", _with(ORDER, items=[{**item, "quantity": -3}], total=0.0),
             "$.items[0].quantity: must be at least 1, got -3"),
        Kind("huge quantity", _with(ORDER, items=[{**item, "quantity": 10**6}], total=5e6),
             "$.items[0].quantity: must be at most 100000"),
        Kind("quantity beyond 64 bits", _with(ORDER, items=[{**item, "quantity": 2**70}]),
             "$.items[0].quantity: must be at most 100000"),
        Kind("quantity of 5000 digits",
             _json(ORDER).replace(b'"quantity":2', b'"quantity":' + b"7" * 5000),
             "$.items[0].quantity: integer value out of range"),
        Kind("fractional quantity", _with(ORDER, items=[{**item, "quantity": 1.5}], total=7.5),
             "$.items[0].quantity: wrong type: expected int, got float"),
        Kind("empty sku", _with(ORDER, items=[{**item, "sku": ""}]),
             "$.items[0].sku: invalid value: expected str of length >= 1"),
        Kind("total disagrees with the items", _with(ORDER, total=12.0),
             "$.total: 12.0 disagrees with the items, which sum to 10.0"),
        Kind("negative total", _with(ORDER, items=[{**item, "unit_price": 0.0}], total=-10.0),
             "$.total: must be a non-negative number"),
        Kind("total above the bound", _with(ORDER, items=[{**item, "unit_price": 1e7}],
             total=2e7), "$.total: must be at most 10000000"),
        Kind("total 1e999", _json(ORDER).replace(b'"total":10.0', b'"total":1e999'),
             "$.total: number out of range"),
        Kind("total as a string", _with(ORDER, total="10.00"),
             "$.total: wrong type: expected float, got str"),
        Kind("unknown status", _with(ORDER, status="shipped"),
             "$.status: unknown value 'shipped' (expected one of: cancelled, placed, returned)"),
        Kind("status null", _with(ORDER, status=None), "$.status: wrong type"),
        Kind("lower-case currency", _with(ORDER, currency="eur"),
             "$.currency: must be three capital letters"),
        Kind("customer_id of 200 characters", _with(ORDER, customer_id="C" * 200),
             "$.customer_id: invalid value: expected str of length <= 128"),
        Kind("customer_id null", _with(ORDER, customer_id=None),
             "$.customer_id: wrong type: expected str, got null"),
        Kind("order_id missing", _with(ORDER, order_id=...), "$.order_id: missing required"),
    ]  # fmt: skip


def click_kinds() -> list[Kind]:
    """Every kind sent to ``clicks``."""
    return [
        *shared_kinds(CLICK, ORDER),
        Kind("unknown click type", _with(CLICK, type="purchase"),
             "$.type: unknown value 'purchase' (expected one of: add_to_cart"),
        Kind("click type a number", _with(CLICK, type=3), "$.type: wrong type"),
        Kind("product_view without sku", _with(CLICK, sku=...),
             "$.sku: is required for a product_view event"),
        Kind("neither customer_id nor anonymous_id", _with(CLICK, customer_id=...),
             "$.customer_id: either customer_id or anonymous_id is required"),
        Kind("both ids null", _with(CLICK, customer_id=None, anonymous_id=None),
             "$.customer_id: either customer_id or anonymous_id is required"),
        Kind("customer_id a number", _with(CLICK, customer_id=42),
             "$.customer_id: wrong type: expected str | null, got int"),
        Kind("sku an array", _with(CLICK, sku=["SKU-1"]), "$.sku: wrong type"),
        Kind("session_id missing", _with(CLICK, session_id=...),
             "$.session_id: missing required field"),
        Kind("session_id of 200 characters", _with(CLICK, session_id="S" * 200),
             "$.session_id: invalid value: expected str of length <= 128"),
        Kind("query over 512 characters", _with(CLICK, type="search", query="q" * 600),
             "$.query: invalid value: expected str of length <= 512"),
    ]  # fmt: skip


def kinds_by_topic(settings: Settings) -> dict[str, list[Kind]]:
    return {settings.kafka.orders_topic: order_kinds(), settings.kafka.clicks_topic: click_kinds()}


#: Keys and headers the malformed records are sent with (cycled; co-prime lengths).
KEYS: list[bytes | None] = [
    None, b"", b"C00042", bytes(range(256))[::7], b"\xff" * 1024, "клиент-7".encode(), b"\x00",
]  # fmt: skip
HEADERS: list[list[tuple[str, bytes]] | None] = [
    None,
    [("trace-id", b"0af7651916cd43dd8448eb211c80319c")],
    [("bin", b"\x00\xff\xfe"), ("bin", b"")],
    [(f"h{i}", bytes([i]) * 64) for i in range(16)],
    [("ünïcødé", "värde".encode())],
]


def malformed_records(settings: Settings, tag: int = 0) -> list[Outgoing]:
    """Every kind once per topic, spread over all partitions, with varied keys and headers."""
    out = []
    for topic, kinds in kinds_by_topic(settings).items():
        for i, kind in enumerate(kinds):
            n = i + tag
            out.append(
                Outgoing(topic, KEYS[n % len(KEYS)], kind.value, partition=n % PARTITIONS,
                         headers=HEADERS[n % len(HEADERS)], kind=kind)
            )  # fmt: skip
    return out


def renamed(events: Sequence[Event], prefix: str) -> list[Event]:
    """The same events under new event and order ids (new events to the dedup, same shape)."""
    out: list[Event] = []
    for ev in events:
        if isinstance(ev, OrderEvent):
            out.append(msgspec.structs.replace(
                ev, event_id=f"{prefix}{ev.event_id}", order_id=f"{prefix}{ev.order_id}"
            ))  # fmt: skip
        else:
            out.append(msgspec.structs.replace(ev, event_id=f"{prefix}{ev.event_id}"))
    return out


# -- the checks ----------------------------------------------------------------------------------
def assert_exact(
    settings: Settings, sent: Sequence[Sent], *, letters_per_record: tuple[int, int] = (1, 1)
) -> dict[str, int]:
    """Counters, state and dead letters are exactly what ``sent`` calls for; the counters.

    ``letters_per_record``: the least and the most dead letters each malformed record may have.
    """
    fewest, most = letters_per_record
    bad = [s for s in sent if s.record.kind is not None]
    events = [s.record.event for s in sent if s.record.event is not None]
    assert len(bad) + len(events) == len(sent)
    got = counters(settings)
    assert got["received"] == len(sent), got
    assert got["valid"] == len(events), got
    assert got["dead_lettered"] == len(bad), got
    assert_same_state(redis_rows(settings), oracle_rows(events))

    letters = read_dead_letters(settings, at_least=fewest * len(bad))
    per_record = Counter((d.letter.source_topic, d.letter.partition, d.letter.offset)
                         for d in letters)  # fmt: skip
    expected = {s.where: s for s in bad}
    strays = set(per_record) - set(expected)
    assert not strays, f"dead letters for records that are not malformed: {sorted(strays)[:5]}"
    wrong_count = {expected[w].what: n for w, n in per_record.items() if not fewest <= n <= most}
    assert not wrong_count, f"want {fewest} to {most} letter(s) per record, got {wrong_count}"
    missing = [s.what for w, s in expected.items() if w not in per_record]
    assert not missing, f"no dead letter for {missing}"
    for d in letters:
        s = expected[(d.letter.source_topic, d.letter.partition, d.letter.offset)]
        kind, what = s.record.kind, s.what
        assert kind is not None
        assert kind.phrase in d.letter.error, f"{what}: {d.letter.error!r}"
        assert d.letter.original == (s.record.value or b""), what
        assert d.letter.key == s.record.key, f"{what}: key {d.letter.key!r} != {s.record.key!r}"
        assert d.message_key == s.record.key, f"{what}: message key {d.message_key!r}"
    return dict(got)


# -- tests ---------------------------------------------------------------------------------------
def test_every_kind_in_the_tables_is_refused_by_the_codec_with_its_phrase() -> None:
    """The tables' own check: each value is malformed for its topic, with the phrase expected."""
    assert len(order_kinds()) >= 30 and len(click_kinds()) >= 30
    assert decode(OrderEvent, _json(ORDER)) and decode(ClickEvent, _json(CLICK))
    tables: list[tuple[Callable[[bytes], object], list[Kind]]] = [
        (decode_order, order_kinds()),
        (decode_click, click_kinds()),
    ]
    for decode_one, kinds in tables:
        names = [k.name for k in kinds]
        assert len(set(names)) == len(names), "kind names must be distinct"
        assert len({k.value for k in kinds}) == len(kinds), "kind values must be distinct"
        for kind in kinds:
            if kind.value is None:  # a null value never reaches the codec (batch assembly)
                continue
            with pytest.raises(SchemaError) as refused:
                decode_one(kind.value)
            assert kind.phrase in str(refused.value), f"{kind.name}: {refused.value}"


def test_poison_mixed_into_a_live_stream_is_dead_lettered_once_and_the_same_worker_applies_every_valid_event_once(  # noqa: E501
    settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    s = settings.with_(batch_max_records=BATCH_MAX_RECORDS)
    events = dataset(300, 1800, 450, seed=41)  # ~2k orders (cancels, returns) + ~2k clicks
    bad = malformed_records(s)
    worker = start(workers, s, "live")
    pid = worker.proc.pid

    sent = send_all(s.kafka.bootstrap, interleave(valid_records(s, events), bad, seed=42))
    by_partition = Counter((x.record.topic, x.partition) for x in sent if x.record.kind)
    assert len(by_partition) == 2 * PARTITIONS, by_partition  # poison on every partition
    wait_drained(s, len(sent), worker)

    got = assert_exact(s, sent)
    assert got["duplicates"] == 0, got
    health = assert_same_worker_healthy(worker, pid)
    assert health["process"]["received"] == len(sent), health
    assert health["process"]["batches"] > 10, health  # the poison really met many batches
    log = worker.log_path.read_text(errors="replace")
    assert log.count("dead-lettered ") == len(bad)


@pytest.mark.parametrize("deep_first", [False, True], ids=["mixed", "deep-record-first"])
def test_a_worker_started_over_poisoned_topics_drains_them_and_a_restarted_one_applies_nothing_twice(  # noqa: E501
    settings: Settings, workers: Callable[..., WorkerProcess], deep_first: bool
) -> None:
    s = settings.with_(batch_max_records=BATCH_MAX_RECORDS)
    events = dataset(250, 1200, 300, seed=43)
    # The original outage: the 5000-deep record first on every partition of both topics, so
    # the very first fetch of every partition holds it.
    deep = Kind("object nested 5000 deep, first on its partition", DEEP_OBJECT, NESTED_TOO_DEEPLY)
    first = [
        Outgoing(topic, b"C00001", DEEP_OBJECT, partition=p, kind=deep)
        for topic in s.kafka.input_topics
        for p in range(PARTITIONS)
        if deep_first
    ]
    sent = send_all(s.kafka.bootstrap, first)  # flushed before the rest: offset 0 each
    assert all(x.offset == 0 for x in sent)
    sent += send_all(
        s.kafka.bootstrap, interleave(valid_records(s, events), malformed_records(s), seed=44)
    )

    worker = start(workers, s, "first")
    pid = worker.proc.pid
    wait_drained(s, len(sent), worker)
    before = assert_exact(s, sent)
    assert before["duplicates"] == 0, before
    assert_same_worker_healthy(worker, pid)

    # Offsets are committed after the Redis write, by a task beside the loop; nothing is
    # committed on the way out. Wait until the commits cover every record before the SIGTERM,
    # so that the second worker starts past them: then "exactly once" holds for the dead
    # letters too (they are at-least-once only across records fetched again: see the last test).
    want = next_offsets(sent)
    wait_for(lambda: committed_offsets(s, list(want)) == want, 30, f"committed offsets {want}")
    assert worker.stop() == 0
    assert "Traceback" not in worker.log_path.read_text(errors="replace")

    again = start(workers, s, "restarted")
    pid2 = again.proc.pid
    health = again.health()
    assert health is not None and len(health["assigned"]) == 2 * PARTITIONS, health
    # New records prove it runs: fresh ids (not duplicates of the old ones) and poison again.
    more_events = renamed(dataset(40, 120, 30, seed=45), "again-")
    more = send_all(
        s.kafka.bootstrap,
        interleave(valid_records(s, more_events), malformed_records(s, tag=3), seed=46),
    )
    wait_drained(s, len(sent) + len(more), again)
    after = assert_exact(s, [*sent, *more])
    assert after["duplicates"] == 0, after  # nothing old was fetched again
    health = assert_same_worker_healthy(again, pid2)
    assert health["process"]["received"] == len(more), health


def test_a_worker_of_a_new_group_rereads_every_poison_record_without_changing_the_state(
    settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    s = settings.with_(batch_max_records=BATCH_MAX_RECORDS)
    events = dataset(200, 800, 200, seed=47)
    sent = send_all(
        s.kafka.bootstrap, interleave(valid_records(s, events), malformed_records(s), seed=48)
    )
    worker = start(workers, s, "first")
    wait_drained(s, len(sent), worker)
    before = assert_exact(s, sent)
    rows = redis_rows(s)
    assert worker.stop() == 0

    # Committed offsets lost (a new group id, same Redis state): every record, poison included,
    # is fetched again. The per-partition fence skips them all: no state change, and the
    # counters only add the fenced records to `duplicates`. Dead letters are at-least-once: a
    # batch's are sent and acknowledged before its Redis write, which is where the fence is
    # consulted, so a record fetched again may be dead-lettered again (today it always is),
    # but never more than once per delivery: one or two letters per record here.
    lost = s.with_(group_id=f"{s.kafka.group_id}-lost-offsets")
    again = start(workers, lost, "new-group")
    pid = again.proc.pid

    def reread() -> dict[str, Any] | None:
        assert again.alive, f"{again.name} exited:\n{again.tail()}"
        h = again.health()
        return h if h and h["process"]["received"] >= len(sent) else None

    health = wait_for(reread, 180, f"{len(sent)} records fetched again")
    assert health["process"]["received"] == len(sent), health
    after = counters(lost)
    assert after["duplicates"] == before["duplicates"] + len(sent), after
    for name in ("received", "valid", "dead_lettered"):
        assert after[name] == before[name], (name, before, after)
    assert redis_rows(lost) == rows
    assert_exact(lost, sent, letters_per_record=(1, 2))
    assert_same_worker_healthy(again, pid)


# -- the batch path itself failing -------------------------------------------------------------
def _run_with_failing_batch_path(
    settings: Settings, events: list[Event], failures: int
) -> tuple[IngestService, str]:
    """An in-process ingest service whose batch path raises ``failures`` times, then works.

    Returns the service (stopped) and the state it was in once every event was received.

    The failure is injected where no record is to blame: the listener's ``snapshot_spec``, which
    says what each apply should return (called once per fetched batch before it is prepared).
    """
    calls = 0

    class FailingSpec(NullListener):
        def snapshot_spec(self) -> None:
            nonlocal calls
            calls += 1
            if calls <= failures:
                raise RuntimeError(f"injected batch-path failure {calls}")

    async def scenario() -> tuple[IngestService, str]:
        store = StateStore(settings.redis.url, settings.redis.prefix)
        service = IngestService(settings, store=store, listener=FailingSpec())
        await service.start()
        try:
            produce(settings.kafka.bootstrap, records_for(settings, events))
            deadline = time.monotonic() + 90
            while service.metrics.received < len(events):
                assert time.monotonic() < deadline, service.metrics
                await asyncio.sleep(0.05)
            state = service.metrics.state
        finally:
            await service.stop()
        return service, state

    return asyncio.run(scenario())


def test_a_batch_path_that_raises_is_retried_from_the_batch_and_loses_nothing(
    settings: Settings,
) -> None:
    events = dataset(40, 300, 100, seed=83)
    service, state = _run_with_failing_batch_path(settings.with_(poison_retries=5), events, 3)
    assert service.metrics.batch_path_failures == 3
    assert state == "running"  # /health is ok again once the batch path works
    assert service.metrics.dead_lettered == 0
    got = counters(settings)
    assert got["valid"] == len(events) and got["dead_lettered"] == 0, got
    assert_same_state(redis_rows(settings), oracle_rows(events))


def test_a_batch_path_that_keeps_raising_dead_letters_that_batch_and_moves_on(
    settings: Settings,
) -> None:
    events = dataset(40, 300, 100, seed=84)
    service, state = _run_with_failing_batch_path(settings.with_(poison_retries=2), events, 2)
    assert state == "running"
    set_aside = service.metrics.dead_lettered
    assert service.metrics.batch_path_failures == 2 and set_aside > 0
    got = counters(settings)
    assert got["dead_lettered"] == set_aside and got["valid"] == len(events) - set_aside, got
    letters = [d.letter for d in read_dead_letters(settings, set_aside)]
    assert all("the batch path failed 2 times" in d.error for d in letters)
    assert all("injected batch-path failure 2" in d.error for d in letters)
    assert len({(d.source_topic, d.partition, d.offset) for d in letters}) == set_aside
    gone = {msgspec.json.decode(d.original)["event_id"] for d in letters}
    kept = [e for e in events if e.event_id not in gone]
    assert len(kept) == len(events) - set_aside
    assert_same_state(redis_rows(settings), oracle_rows(kept))
