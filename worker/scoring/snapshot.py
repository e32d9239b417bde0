"""The state script's snapshot of changed customers -> rows scoring can use without a read.

The ingest hook hands over one :class:`~worker.core.batch.PackedSnapshot` per applied batch:
each changed customer's new state (the fields the current model needs), stored segment,
``segment_seq`` and whether its ``model_version`` is the model's, as the state script left them
(worker/state/apply.lua), plus the batch's stamp. A customer queued several times before its
round keeps only its latest snapshot (:class:`SnapshotIndex`), and a round gathers its customers'
rows from the batches they came from into one :class:`~worker.scoring.vectors.Round`.

Why: reading a customer back cost Redis more than the state script spends on it (an ``HMGET``
from Lua is ~5 us on a 2-vCPU machine), and the script already holds every one of those values.

No Kafka, no Redis.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgspec
import numpy as np

from worker.core.batch import PackedSnapshot
from worker.scoring.vectors import Round, widen

#: The state script's marker of an absent field in a snapshot (exact in a double).
SNAPSHOT_ABSENT = -(2**52)
_decode = msgspec.msgpack.Decoder().decode


#: The state script's codes of why a customer changed (see apply.lua).
REASONS = ("order", "return", "clicks")


@dataclass(frozen=True)
class DecodedSnapshot:
    """A batch's snapshot, decoded: rows in the order of the batch's customer ids."""

    #: ``(n, len(STATE_FIELDS))`` int64 in :class:`Round`'s layout (fields not sent: absent).
    raw: np.ndarray
    segments: list[str]
    seqs: list[int]
    #: 1 where the stored ``model_version`` is the snapshot's version.
    current: list[int]
    reasons: list[str]
    row_of: dict[str, int]


class SnapshotBatch:
    """One applied batch's snapshot, decoded only once a round needs one of its customers.

    Under load most customers appear in several batches before their round; only the latest
    snapshot is used, so many batches are never decoded at all.
    """

    __slots__ = ("_decoded", "customer_ids", "packed")

    def __init__(self, customer_ids: Sequence[str], packed: PackedSnapshot) -> None:
        self.customer_ids = customer_ids
        self.packed = packed
        self._decoded: DecodedSnapshot | None = None

    @property
    def version(self) -> str:
        return self.packed.spec.version

    @property
    def stamp(self) -> int:
        return self.packed.stamp

    @property
    def fields(self) -> tuple[str, ...]:
        return self.packed.spec.fields

    def decoded(self) -> DecodedSnapshot:
        if self._decoded is None:
            self._decoded = decode(self.customer_ids, self.packed)
        return self._decoded


def decode(customer_ids: Sequence[str], packed: PackedSnapshot) -> DecodedSnapshot:
    """Decode a batch's snapshot (``customer_ids``: ``ApplyResult.changed``)."""
    n, fields = len(customer_ids), packed.spec.fields
    width = len(fields) + 3
    numbers = np.array(_decode(packed.numbers), dtype=np.int64).reshape(n, width)
    segments = _decode(packed.segments)
    if len(segments) != n:
        raise ValueError(f"snapshot of {len(segments)} customers for {n} changed")
    return DecodedSnapshot(
        widen(numbers[:, : len(fields)], fields, SNAPSHOT_ABSENT),
        segments,
        numbers[:, -3].tolist(),
        numbers[:, -2].tolist(),
        [REASONS[code] for code in numbers[:, -1].tolist()],
        dict(zip(customer_ids, range(n), strict=True)),
    )


class SnapshotIndex:
    """Customer -> the batch of its latest snapshot, until its round takes it."""

    def __init__(self) -> None:
        self._latest: dict[str, SnapshotBatch] = {}

    def __len__(self) -> int:
        return len(self._latest)

    def add(self, batch: SnapshotBatch) -> None:
        self._latest.update(dict.fromkeys(batch.customer_ids, batch))  # C speed: every batch

    def discard(self, customer_ids: Iterable[str]) -> None:
        """Forget these customers' snapshots (their state changed again without one)."""
        latest = self._latest
        for cid in customer_ids:
            latest.pop(cid, None)

    def take(
        self, customer_ids: Iterable[str], needed: Iterable[str]
    ) -> tuple[Round | None, list[str]]:
        """The snapshot rows of ``customer_ids`` as a :class:`Round`, and the ids without one.

        A snapshot that lacks a field ``needed`` (the model changed since its batch) or cannot
        be decoded counts as none: that customer is read from Redis instead. Taken customers
        leave the index.
        """
        want = set(needed)
        latest = self._latest
        groups: dict[int, tuple[SnapshotBatch, list[str]]] = {}
        without: list[str] = []
        for cid in customer_ids:
            batch = latest.pop(cid, None)
            if batch is None:
                without.append(cid)
                continue
            group = groups.get(id(batch))
            if group is None:
                group = groups[id(batch)] = (batch, [])
            group[1].append(cid)
        parts: list[tuple[SnapshotBatch, DecodedSnapshot, list[str]]] = []
        for batch, cids in groups.values():
            try:
                usable = want.issubset(batch.fields)
                decoded = batch.decoded() if usable else None
            except (ValueError, TypeError, msgspec.DecodeError):  # a bad snapshot costs a read
                decoded = None
            if decoded is None:
                without += cids
            else:
                parts.append((batch, decoded, cids))
        if not parts:
            return None, without
        return _round(parts), without


def _round(parts: list[tuple[SnapshotBatch, DecodedSnapshot, list[str]]]) -> Round:
    ids: list[str] = []
    segments: list[str | None] = []
    versions: list[str | None] = []
    seqs: list[int | None] = []
    stamps: list[int] = []
    reasons: list[str | None] = []
    raws = []
    for batch, d, cids in parts:
        idx = [d.row_of[cid] for cid in cids]
        ids += cids
        raws.append(d.raw[idx])
        seg, seq, cur, why = d.segments, d.seqs, d.current, d.reasons
        segments += [seg[i] or None for i in idx]
        seqs += [None if seq[i] < 0 else seq[i] for i in idx]
        # the stored version is known only as "equal to the snapshot's or not"
        versions += [batch.version if cur[i] else "" for i in idx]
        reasons += [why[i] for i in idx]
        stamps += [batch.stamp] * len(idx)
    raw = np.concatenate(raws) if len(raws) > 1 else raws[0]
    return Round(
        ids, raw, segments, versions, seqs, [], stamps=stamps, snapshot=True, reasons=reasons
    )
