"""Isolating the records a batch cannot be applied with (pure: no Kafka, no Redis, no clock).

A batch that keeps failing for a reason that is not an outage (see :mod:`.failures`) is split
in two and each half applied on its own, recursively, until the records that still fail are
alone; those are dead-lettered and the rest is applied. The split keeps what makes a batch
exact: inside a partition, every record of the first half comes before every record of the
second, so the state script's per-partition fence moves forward piece by piece and a piece
applied twice (a retry whose first attempt did land) changes nothing the second time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from typing import Any

from schemas import SchemaError, encode
from worker.core.batch import Batch, Record, TopicPartition
from worker.ingest.batch import Assembled, RawRecord, Rejected


def split_batch(batch: Batch) -> tuple[Batch, Batch]:
    """Two batches that, applied one after the other, do what ``batch`` does.

    The first holds the first half of the records and every dead-lettered offset at or below
    its last record's offset in the same partition; the second holds the rest and keeps the
    batch's high offsets. Needs at least two records, in offset order within each partition
    (as :func:`worker.ingest.batch.assemble` builds them).
    """
    if len(batch.records) < 2:
        raise ValueError("a batch of fewer than two records cannot be split")
    half = len(batch.records) // 2
    first, second = batch.records[:half], batch.records[half:]
    cut: dict[TopicPartition, int] = {}
    for rec in first:
        tp = (rec.topic, rec.partition)
        cut[tp] = max(cut.get(tp, -1), rec.offset)
    dead_first: dict[TopicPartition, tuple[int, ...]] = {}
    dead_second: dict[TopicPartition, tuple[int, ...]] = {}
    for tp, offsets in batch.dead_letter_offsets.items():
        top = cut.get(tp, -1)
        below = tuple(o for o in offsets if o <= top)
        above = tuple(o for o in offsets if o > top)
        if below:
            dead_first[tp] = below
        if above:
            dead_second[tp] = above
    head = Batch(
        records=first,
        high_offsets=cut,
        dead_lettered={tp: len(o) for tp, o in dead_first.items()},
        dead_letter_offsets=dead_first,
    )
    tail = Batch(  # rejects given as counts alone stay with the batch's high offsets
        records=second,
        high_offsets=dict(batch.partitions()),
        dead_lettered={**_counted_only(batch), **{tp: len(o) for tp, o in dead_second.items()}},
        dead_letter_offsets=dead_second,
    )
    return head, tail


def dead_letter_all(batch: Batch) -> Batch:
    """``batch`` with every record turned into a dead-lettered offset: moves the fence, counts."""
    return _with_dead(batch, (), (((r.topic, r.partition), r.offset) for r in batch.records))


def _with_dead(
    batch: Batch, records: Sequence[Record], dead: Iterable[tuple[TopicPartition, int]]
) -> Batch:
    """``batch`` holding ``records``, with the offsets ``dead`` added to its dead letters.

    The high offsets stay those of the whole batch, so the fence moves past every record.
    """
    offsets: dict[TopicPartition, list[int]] = {
        tp: list(o) for tp, o in batch.dead_letter_offsets.items()
    }
    for tp, offset in dead:
        offsets.setdefault(tp, []).append(offset)
    by_tp = {tp: tuple(sorted(o)) for tp, o in offsets.items()}
    return Batch(
        records=records,
        high_offsets=dict(batch.partitions()),
        dead_lettered={**_counted_only(batch), **{tp: len(o) for tp, o in by_tp.items()}},
        dead_letter_offsets=by_tp,
    )


def _counted_only(batch: Batch) -> dict[TopicPartition, int]:
    """Rejects a batch counts per partition without their offsets (see :class:`Batch`)."""
    return {tp: n for tp, n in batch.dead_lettered.items() if tp not in batch.dead_letter_offsets}


def reject(
    records: Iterable[Record], reason: str, sources: Mapping[tuple[str, int, int], RawRecord]
) -> list[Rejected]:
    """The dead letters of ``records``, with their original bytes and keys where known.

    ``sources``: the raw fetched records by (topic, partition, offset)
    (:func:`raw_index`); a record not found there is re-encoded from its event.
    """
    out = []
    for rec in records:
        raw = sources.get((rec.topic, rec.partition, rec.offset))
        key = raw.key if raw is not None else None
        value = raw.value if raw is not None and raw.value is not None else encode(rec.event)
        out.append(
            Rejected(rec.topic, rec.partition, rec.offset, key, value, SchemaError("$", reason))
        )
    return out


def raw_index(parts: Iterable[Sequence[RawRecord]]) -> dict[tuple[str, int, int], RawRecord]:
    """Fetched records by (topic, partition, offset), for :func:`reject`."""
    return {(r.topic, r.partition, r.offset): r for part in parts for r in part}


def without(assembled: Assembled, bad: Mapping[int, str]) -> Assembled:
    """``assembled`` with the records at indices ``bad`` moved to its rejects (index -> reason).

    For records that could not be prepared for the state store: they are dead-lettered like a
    schema reject, and the fence still moves past them.
    """
    if not bad:
        return assembled
    index = raw_index(assembled.sources)
    batch = assembled.batch
    keep = [rec for i, rec in enumerate(batch.records) if i not in bad]
    refused: list[Rejected] = []
    for i, reason in bad.items():
        refused += reject([batch.records[i]], reason, index)
    new_batch = _with_dead(batch, keep, (((r.topic, r.partition), r.offset) for r in refused))
    rejected = sorted(
        [*assembled.rejected, *refused], key=lambda r: (r.topic, r.partition, r.offset)
    )
    return Assembled(batch=new_batch, rejected=tuple(rejected), sources=assembled.sources)


def dead_letter_fetched(
    fetched: Mapping[Any, Sequence[RawRecord]], reason: str
) -> tuple[list[Rejected], Batch]:
    """Every fetched record as a dead letter with ``reason``, and the batch that counts them.

    The last resort when the batch path itself keeps failing: the records go to the dead-letter
    topic with their original bytes, and the batch (no events, every offset dead-lettered)
    moves the fence past them.
    """
    error = SchemaError("$", reason)
    letters = [
        Rejected(r.topic, r.partition, r.offset, r.key, r.value or b"", error)
        for part in fetched.values()
        for r in part
    ]
    dead = (((r.topic, r.partition), r.offset) for r in letters)
    return letters, _with_dead(Batch(records=()), (), dead)


def describe(batch: Batch) -> str:
    """``orders[0]@120-130, clicks[3]@7 (12 events)``: the offsets a batch covers, for /health."""
    held = (((rec.topic, rec.partition), rec.offset) for rec in batch.records)
    dead = ((tp, o) for tp, offsets in batch.dead_letter_offsets.items() for o in offsets)
    n = len(batch.records)
    return (_spans(chain(held, dead)) or "no records") + f" ({n} event{'s' if n != 1 else ''})"


def describe_fetched(fetched: Mapping[Any, Sequence[RawRecord]]) -> str:
    """``orders[0]@120-130, clicks[3]@7``: the offsets a fetch covers, for logs and /health."""
    offsets = (((r.topic, r.partition), r.offset) for part in fetched.values() for r in part)
    return _spans(offsets) or "nothing"


def _spans(offsets: Iterable[tuple[TopicPartition, int]]) -> str:
    """One ``topic[partition]@low-high`` (``@offset`` when alone) per partition, sorted."""
    spans: dict[TopicPartition, list[int]] = {}
    for tp, offset in offsets:
        span = spans.setdefault(tp, [offset, offset])
        span[0], span[1] = min(span[0], offset), max(span[1], offset)
    return ", ".join(
        f"{t}[{p}]@{lo}" if lo == hi else f"{t}[{p}]@{lo}-{hi}"
        for (t, p), (lo, hi) in sorted(spans.items())
    )
