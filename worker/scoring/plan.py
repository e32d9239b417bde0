"""A round's write and its outgoing changes, built from its decisions (pure: no Kafka, no Redis).

The write goes to Redis as :class:`WritePlan` columns (``write.lua``, sent by
:class:`~worker.scoring.store.ScoringStore`);
each real change becomes an :class:`OutgoingChange`, kept in the outbox with the write and
published after it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import msgspec

from schemas import encode
from worker.scoring.decide import Decision, change_events
from worker.scoring.vectors import Round


@dataclass
class WritePlan:
    """One round's write in ``write.lua``'s columns; rows count from 0 in ``ids``."""

    ids: list[str] = field(default_factory=list)
    #: The unscored stamp each customer's state was read at (0 = none).
    stamps: list[int] = field(default_factory=list)
    #: Flat ``row, expected segment_seq (-1 = none)`` pairs: compared before writing.
    checks: list[int] = field(default_factory=list)
    #: Flat ``row, segment, new segment_seq`` triples: the round's real changes.
    changes: list[int | str] = field(default_factory=list)
    #: Rows whose kept segment was assigned by another model version.
    stale: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


class OutgoingChange(NamedTuple):
    """One ``segment-changes`` record: key, ``segment_seq`` and ``model_version`` headers, JSON."""

    customer_id: str
    segment_seq: int
    model_version: str
    payload: bytes


def add_part(
    plan: WritePlan,
    version: str,
    rnd: Round,
    dec: Decision,
    reasons: Mapping[str, str | None],
    as_of_ms: int,
    sent: dict[str, OutgoingChange],
) -> None:
    """Add one part of a round to ``plan``; its outgoing changes go into ``sent``.

    Most customers keep their segment: they only leave ``unscored``. A row that writes
    something has its ``segment_seq`` compared (see ``WRITE_LUA``) only when it was read
    without a stamp (rescore, sweep: nothing else vouches for it); customers without a hash
    are compared too, so that their entry goes without a write.
    """
    base = len(plan.ids)
    ids, seqs = rnd.customer_ids, rnd.seqs
    plan.ids += ids
    plan.stamps += rnd.stamps
    segments = dec.new_segments
    changed: list[int] = []
    for r, ev in change_events(dec, reasons, as_of_ms):
        cid, seq = ids[r], seqs[r]
        nseq = 1 if seq is None else seq + 1
        sent[cid] = OutgoingChange(cid, nseq, version, encode(ev))
        plan.changes += (base + r, segments[r], nseq)
        changed.append(r)
    skip = set(changed)
    stale = [r for r, v in enumerate(rnd.model_versions) if v != version and r not in skip]
    plan.stale += [base + r for r in stale]
    if not rnd.snapshot:
        stamps = rnd.stamps
        for r in (*changed, *stale):
            if stamps[r] <= 0:  # no stamp to vouch for segment_seq
                read_seq = seqs[r]
                plan.checks += (base + r, -1 if read_seq is None else read_seq)
    for cid, stamp in zip(rnd.missing, rnd.missing_stamps, strict=True):
        plan.checks += (len(plan.ids), -1)
        plan.ids.append(cid)
        plan.stamps.append(stamp)


def build(
    version: str,
    decisions: Sequence[tuple[Round, Decision]],
    reasons: Mapping[str, str | None],
    as_of_ms: int,
) -> tuple[WritePlan, dict[str, OutgoingChange]]:
    """A whole round's write and its outgoing changes (customer id -> change)."""
    plan = WritePlan()
    sent: dict[str, OutgoingChange] = {}
    for rnd, dec in decisions:
        add_part(plan, version, rnd, dec, reasons, as_of_ms, sent)
    return plan, sent


def outbox_entries(changes: Mapping[str, OutgoingChange]) -> list[tuple[str, int, bytes]]:
    """The changes as the outbox keeps them: ``(customer id, segment_seq, JSON)``."""
    return [(c.customer_id, c.segment_seq, c.payload) for c in changes.values()]


def from_outbox(
    rounds: Sequence[tuple[str, Sequence[tuple[str, int, bytes]]]],
) -> list[OutgoingChange]:
    """Outbox rounds left by an earlier run as changes to publish, each customer's in seq order."""
    decode = msgspec.json.decode
    items = [
        OutgoingChange(cid, seq, str(decode(value).get("model_version", "")), value)
        for _, entries in rounds
        for cid, seq, value in entries
    ]
    items.sort(key=lambda c: (c.segment_seq, c.customer_id))
    return items
