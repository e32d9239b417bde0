"""What one write to the state store carries: valid events with their Kafka coordinates.

These types are the contract between the ingestion service (which decodes a batch of Kafka
records) and a state store (Redis or in-memory). They hold no behaviour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from schemas import ClickEvent, OrderEvent

TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Record:
    """One valid input event and where it came from."""

    topic: str
    partition: int
    offset: int
    event: OrderEvent | ClickEvent


@dataclass(frozen=True, slots=True)
class Batch:
    """Everything one ``apply`` writes, atomically.

    ``high_offsets`` is the highest offset seen per (topic, partition) in this batch, including
    rejected (dead-lettered) records, so the applied-offset fence moves past them too.
    ``dead_lettered`` counts the rejected records per (topic, partition). When the caller also
    knows their offsets it may pass ``dead_letter_offsets``: then each rejected record is counted
    only if it lies above the fence, which keeps the counters exact even when a redelivered batch
    straddles the fence (with counts alone, a partition's rejects are counted when the batch's high
    offset is above the fence).
    """

    records: Sequence[Record]
    high_offsets: Mapping[TopicPartition, int] = field(default_factory=dict)
    dead_lettered: Mapping[TopicPartition, int] = field(default_factory=dict)
    dead_letter_offsets: Mapping[TopicPartition, Sequence[int]] = field(default_factory=dict)

    def partitions(self) -> dict[TopicPartition, int]:
        """Every (topic, partition) this batch touches -> its highest offset."""
        high: dict[TopicPartition, int] = dict(self.high_offsets)
        for rec in self.records:
            tp = (rec.topic, rec.partition)
            if high.get(tp, -1) < rec.offset:
                high[tp] = rec.offset
        for tp, offsets in self.dead_letter_offsets.items():
            top = max(offsets, default=-1)
            if high.get(tp, -1) < top:
                high[tp] = top
        for tp in self.dead_lettered:
            high.setdefault(tp, -1)
        return high


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What an ``apply`` did.

    ``applied`` counts events that were new for a known customer (they changed, or at least
    touched, that customer's state); ``duplicates`` counts events skipped because they lay at or
    below their partition's fence or because their fingerprint was already recorded.
    ``changed`` lists the customers with at least one applied event, in first-seen order.
    """

    applied: int
    duplicates: int
    changed: Sequence[str]
    #: Written with every changed customer into ``{prefix}:unscored`` (0 when none changed).
    stamp: int = 0
    #: The changed customers' new state, when asked for (see :class:`SnapshotSpec`).
    snapshot: PackedSnapshot | None = None
    #: When the store applied the batch in several atomic calls (one per shard of a Redis
    #: Cluster): each call's part of the batch and its result, in which ``stamp`` and
    #: ``snapshot`` are; the fields above are then their sums (``stamp`` 0, ``snapshot`` None).
    parts: tuple[tuple[Batch, ApplyResult], ...] = ()


@dataclass(frozen=True, slots=True)
class SnapshotSpec:
    """What an apply returns of each changed customer's new state, for scoring.

    ``fields``: short hash field names (``worker.core.rfm.HASH_FIELDS`` values); ``version``:
    the model version each customer's stored ``model_version`` is compared with.
    """

    fields: tuple[str, ...]
    version: str


@dataclass(frozen=True, slots=True)
class PackedSnapshot:
    """The state script's snapshot reply, left packed (decoded by ``worker.scoring.snapshot``).

    ``numbers``: msgpack list, per changed customer (in ``ApplyResult.changed`` order) the
    ``spec.fields`` values (-2**52 = absent), the stored ``segment_seq`` (-1 = none), 1 if its
    ``model_version`` is ``spec.version`` else 0, and why it changed (0 an order placed, 1 a
    cancellation or return, 2 clicks only); ``segments``: msgpack list of the stored segment
    names ('' = none).
    """

    spec: SnapshotSpec
    stamp: int
    numbers: bytes
    segments: bytes
