"""One consumed batch -> what the database must do with it, in one transaction. Pure: no I/O.

The order inside a batch matters only per customer, and one customer's records sit on one
partition, in order. A tombstone erases everything of the customer written before it, in the
database and earlier in the same batch; a change after it (the customer came back after
``segstream forget``, starting again at ``segment_seq`` 1) is kept. So: erase first, then write
the changes that follow each customer's last tombstone.

Every record's position counts for the offsets, rejects included: the offsets written with the
rows are "everything before this has been dealt with".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sinks.sql.changes import Change, ChangeRow, Decoded, Reject, Tombstone


@dataclass(frozen=True)
class BatchPlan:
    #: Customers whose rows are deleted (tombstones), before anything is written.
    erase: tuple[str, ...] = ()
    #: Every change to append to ``segment_history``, once per ``(customer_id, segment_seq)``.
    history: tuple[ChangeRow, ...] = ()
    #: Per customer, its change with the highest ``segment_seq`` (for ``customer_segment``).
    latest: tuple[ChangeRow, ...] = ()
    #: ``(topic, partition) -> next offset to read``, written with the rows.
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    #: The model versions the changes name (``segment_profile`` needs each once).
    versions: frozenset[str] = frozenset()
    #: The records for the dead-letter topic.
    rejects: tuple[Reject, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.erase or self.history or self.offsets)


def next_offsets(records: Iterable[Decoded]) -> dict[tuple[str, int], int]:
    """``(topic, partition) -> 1 + the highest offset seen``."""
    out: dict[tuple[str, int], int] = {}
    for record in records:
        at = record.at
        key = (at.topic, at.partition)
        if out.get(key, -1) <= at.offset:
            out[key] = at.offset + 1
    return out


def plan_batch(records: Sequence[Decoded]) -> BatchPlan:
    """The plan of one batch (records in the order they were consumed)."""
    last_tombstone: dict[str, int] = {}
    for i, record in enumerate(records):
        if isinstance(record, Tombstone):
            last_tombstone[record.customer_id] = i
    history: dict[tuple[str, int], ChangeRow] = {}
    latest: dict[str, ChangeRow] = {}
    rejects: list[Reject] = []
    for i, record in enumerate(records):
        if isinstance(record, Change):
            row = record.row
            cid = row.customer_id
            if last_tombstone.get(cid, -1) > i:
                continue  # erased later in this batch
            history.setdefault((cid, row.segment_seq), row)
            best = latest.get(cid)
            if best is None or best.segment_seq < row.segment_seq:
                latest[cid] = row
        elif isinstance(record, Reject):
            rejects.append(record)
    return BatchPlan(
        erase=tuple(last_tombstone),
        history=tuple(history.values()),
        latest=tuple(latest.values()),
        offsets=next_offsets(records),
        versions=frozenset(row.model_version for row in latest.values())
        | frozenset(row.model_version for row in history.values()),
        rejects=tuple(rejects),
    )


def halves(records: Sequence[Decoded]) -> tuple[Sequence[Decoded], Sequence[Decoded]]:
    """Split a batch the database refused, to find the record it refuses.

    The records are in consumption order, so each half holds a prefix of each partition's
    records and the first half's offsets never pass a record of the second.
    """
    middle = len(records) // 2
    return records[:middle], records[middle:]
