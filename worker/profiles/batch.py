"""One fetch of the profiles topic -> the updates to apply and the records to dead-letter.

Pure: no Kafka client, no Redis, no clock. Each partition's records are decoded in one
``decode_many`` pass (:class:`schemas.CustomerProfile`); a record that is null, not JSON, of an
unknown version or with a bad value becomes a :class:`~worker.ingest.batch.Rejected` with its
reason, and the rest of the batch goes on. The offsets of every record seen, good or bad, go
along (``high``), so the profile script's fence moves past the rejects too and a redelivery
never counts them twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from schemas import CustomerProfile, SchemaError, decode_many
from worker.ingest.batch import RawRecord, Rejected

__all__ = ["ProfileBatch", "ProfileRecord", "assemble"]


@dataclass(frozen=True, slots=True)
class ProfileRecord:
    """A valid profile update and where it came from."""

    topic: str
    partition: int
    offset: int
    profile: CustomerProfile


@dataclass(frozen=True)
class ProfileBatch:
    """What one script call per space applies: updates, dead-lettered offsets, partition highs."""

    records: Sequence[ProfileRecord] = ()
    #: (topic, partition, offset) of each record sent to the dead-letter topic.
    dead: Sequence[tuple[str, int, int]] = ()
    #: (topic, partition) -> the highest offset of the batch (the fence moves to it).
    high: dict[tuple[str, int], int] = field(default_factory=dict)
    #: A customer whose space takes the whole batch (else the dead-letter accounting goes to
    #: the first space): the accounting of a record Redis refused belongs to the fence of its
    #: own customer's space, the one its refused calls never moved.
    route: str | None = None

    @property
    def empty(self) -> bool:
        return not self.high

    def items(self) -> list[ProfileBatch]:
        """The batch as one-item batches, in (topic, partition, offset) order: how a batch the
        store keeps refusing is applied record by record (each moves the fence to itself)."""
        singles: list[tuple[tuple[str, int, int], ProfileBatch]] = []
        for r in self.records:
            tp = (r.topic, r.partition)
            singles.append(((*tp, r.offset), ProfileBatch([r], (), {tp: r.offset})))
        for topic, partition, offset in self.dead:
            one = ProfileBatch((), [(topic, partition, offset)], {(topic, partition): offset})
            singles.append(((topic, partition, offset), one))
        return [batch for _, batch in sorted(singles, key=lambda pair: pair[0])]


def assemble(fetched: Iterable[Sequence[RawRecord]]) -> tuple[ProfileBatch, list[Rejected]]:
    """Decode every partition's records of one fetch (each sequence in offset order)."""
    records: list[ProfileRecord] = []
    rejected: list[Rejected] = []
    high: dict[tuple[str, int], int] = {}
    for part in fetched:
        if not part:
            continue
        tp = (part[0].topic, part[0].partition)
        high[tp] = max(high.get(tp, -1), max(r.offset for r in part))
        try:
            good, bad = _decode_part(part)
        except Exception:  # never expected (decode_many rejects any bytes): one by one
            good, bad = [], []
            for r in part:
                try:
                    one_good, one_bad = _decode_part([r])
                except Exception as exc:
                    reason = f"could not be decoded: {type(exc).__name__}: {exc}"
                    one_good, one_bad = [], [_reject(r, SchemaError("$", reason))]
                good += one_good
                bad += one_bad
        records += good
        rejected += bad
    rejected.sort(key=lambda r: (r.topic, r.partition, r.offset))
    dead = [(r.topic, r.partition, r.offset) for r in rejected]
    return ProfileBatch(records, dead, high), rejected


def _decode_part(part: Sequence[RawRecord]) -> tuple[list[ProfileRecord], list[Rejected]]:
    rejected = [
        _reject(r, SchemaError("$", "empty record: the value is null"))
        for r in part
        if r.value is None
    ]
    present = [r for r in part if r.value is not None]
    valid, bad = decode_many(CustomerProfile, [r.value or b"" for r in present])
    records = [
        ProfileRecord(present[i].topic, present[i].partition, present[i].offset, profile)
        for i, profile in valid
    ]
    rejected += [_reject(present[i], error) for i, error in bad]
    return records, rejected


def _reject(record: RawRecord, error: SchemaError) -> Rejected:
    value = record.value if isinstance(record.value, bytes) else b""
    return Rejected(record.topic, record.partition, record.offset, record.key, value, error)
