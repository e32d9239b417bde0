"""Batch assembly: raw Kafka records -> one validated :class:`Batch` plus the rejects.

Pure: no Kafka client, no Redis, no clock. It takes whatever a fetch returned (grouped per
partition, in offset order), decodes each topic's records in one ``decode_many`` pass and keeps
every offset it saw in ``high_offsets`` -- also the offsets of rejected records, so the state
store's per-partition fence moves past them and a redelivery never dead-letters them twice into
the counters. The rejects' offsets go along too, so the store counts a reject only when it
lies above the fence (exact counters even when a redelivered batch straddles the fence).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from schemas import ClickEvent, OrderEvent, SchemaError, decode_many
from worker.core.batch import Batch, Record

#: Reason handed to the ``on_changed`` hook per customer, strongest first: a placed order moves
#: RFM the most, a return/cancellation undoes one, clicks only touch behaviour.
REASON_ORDER = "order"
REASON_RETURN = "return"
REASON_CLICKS = "clicks"


class RawRecord(Protocol):
    """What batch assembly needs from a fetched record (aiokafka's ``ConsumerRecord`` fits)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that failed the schemas, kept whole for the dead-letter topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    error: SchemaError

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True, slots=True)
class Assembled:
    """One fetched batch after decoding: what to apply and what to dead-letter."""

    batch: Batch
    rejected: Sequence[Rejected] = field(default_factory=tuple)
    #: The fetched records it was built from, one sequence per partition (to dead-letter a
    #: valid record with its original bytes when the state store cannot take it).
    sources: Sequence[Sequence[RawRecord]] = field(default_factory=tuple)

    @property
    def received(self) -> int:
        return len(self.batch.records) + len(self.rejected)

    @property
    def empty(self) -> bool:
        return not self.batch.high_offsets


def assemble(
    fetched: Iterable[Sequence[RawRecord]], orders_topic: str, clicks_topic: str
) -> Assembled:
    """Decode every partition's records of one fetch; unknown topics are rejected, not guessed.

    ``fetched`` holds one sequence per partition (aiokafka ``getmany(...).values()``), each in
    offset order. Records keep that order inside a partition in the resulting batch.
    """
    records: list[Record] = []
    rejected: list[Rejected] = []
    high: dict[tuple[str, int], int] = {}
    dead: dict[tuple[str, int], int] = defaultdict(int)
    dead_offsets: dict[tuple[str, int], list[int]] = defaultdict(list)
    parts = [part for part in fetched if part]
    for part in parts:
        topic, partition = part[0].topic, part[0].partition
        tp = (topic, partition)
        high[tp] = max(high.get(tp, -1), max(r.offset for r in part))
        try:
            good, bad = _decode_part(part, orders_topic, clicks_topic)
        except Exception:  # never expected (decode_many rejects any bytes): one by one
            good, bad = [], []
            for r in part:
                try:
                    one_good, one_bad = _decode_part([r], orders_topic, clicks_topic)
                except Exception as exc:
                    reason = f"could not be decoded: {type(exc).__name__}: {exc}"
                    one_good, one_bad = [], [_reject(r, SchemaError("$", reason))]
                good += one_good
                bad += one_bad
        records += good
        rejected += bad
    rejected.sort(key=lambda r: (r.topic, r.partition, r.offset))
    for r in rejected:
        dead[(r.topic, r.partition)] += 1
        dead_offsets[(r.topic, r.partition)].append(r.offset)
    batch = Batch(
        records=records,
        high_offsets=high,
        dead_lettered=dict(dead),
        dead_letter_offsets={tp: tuple(offsets) for tp, offsets in dead_offsets.items()},
    )
    return Assembled(batch=batch, rejected=tuple(rejected), sources=parts)


def _decode_part(
    part: Sequence[RawRecord], orders_topic: str, clicks_topic: str
) -> tuple[list[Record], list[Rejected]]:
    """One partition's records of a fetch: the valid ones in offset order, and the rejects."""
    topic = part[0].topic
    if topic not in (orders_topic, clicks_topic):
        err = SchemaError("$", f"topic {topic!r} is neither orders nor clicks")
        return [], [_reject(r, err) for r in part]
    rejected = [
        _reject(r, SchemaError("$", "empty record: the value is null"))
        for r in part
        if r.value is None
    ]
    present = [r for r in part if r.value is not None]
    values = [r.value or b"" for r in present]
    valid: list[tuple[int, OrderEvent | ClickEvent]]
    if topic == orders_topic:
        orders, bad = decode_many(OrderEvent, values)
        valid = list(orders)
    else:
        clicks, bad = decode_many(ClickEvent, values)
        valid = list(clicks)
    records = []
    for index, event in valid:
        r = present[index]
        records.append(Record(r.topic, r.partition, r.offset, event))
    rejected += [_reject(present[index], error) for index, error in bad]
    return records, rejected


def change_reasons(records: Iterable[Record], changed: Iterable[str]) -> dict[str, str]:
    """Why each changed customer changed: ``order`` > ``return`` > ``clicks`` within a batch.

    Every changed customer starts at ``clicks`` (a dict made in C); only order events can
    raise it, so a click costs one type check and no dict operation: this runs for every
    record of every batch while scoring is on.
    """
    reasons = dict.fromkeys(changed, REASON_CLICKS)
    for record in records:
        event = record.event
        if type(event) is not OrderEvent:  # clicks: the default already
            continue
        customer = event.customer_id
        if customer in reasons:
            if event.status == "placed":
                reasons[customer] = REASON_ORDER
            elif reasons[customer] == REASON_CLICKS:
                reasons[customer] = REASON_RETURN
    return reasons


def offsets_to_commit(
    high_offsets: Mapping[tuple[str, int], int], assigned: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """Next offset to read per partition still assigned (Kafka commits "next", not "last")."""
    owned = set(assigned)
    return {tp: offset + 1 for tp, offset in high_offsets.items() if tp in owned}


def _reject(record: RawRecord, error: SchemaError) -> Rejected:
    return Rejected(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value or b"",
        error=error,
    )
