"""Which records of a batch identity handles, packed into ``anon.lua``'s arguments.

Identity handles two kinds of click, and only those: an *anonymous* click (an
``anonymous_id`` and no ``customer_id``) and an *identify* click (both ids). Both also go
through the state script as before (the first counted ``anonymous``, the second applied to its
customer as a click that counts its session and last-seen time), so what identity adds is
separate and a batch without either kind costs nothing here: :func:`anon_calls` returns no call.

Pure: no Redis client (the stage sends what this builds).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas import ClickEvent
from worker.core.batch import Batch, Record
from worker.core.rfm import to_delta
from worker.state.keys import Keyspace

#: One record in ``anon.lua``'s blob (must match ``FMT`` there): kind, click code, partition
#: index, customer index, offset, event time ms, fingerprint, session, marker, partner fps.
RECORD = struct.Struct("<BBHHqq8s8s8s8s")
assert RECORD.size == 54
ANONYMOUS, IDENTIFY = 1, 2
IDENTIFY_TYPE = "identify"


@dataclass(frozen=True)
class Limits:
    """The bounds of anonymous state (settings ``anonymous_*``, ``identity_link_ttl_days``)."""

    max_events: int = 500
    anonymous_ttl_ms: int = 30 * 86_400_000
    link_ttl_ms: int = 180 * 86_400_000

    @classmethod
    def of_days(cls, anonymous_ttl_days: float, link_ttl_days: float, max_events: int) -> Limits:
        """From the settings' units (at least one ms: Redis refuses a PX of 0)."""
        return cls(
            max_events=max(0, max_events),
            anonymous_ttl_ms=max(1, round(anonymous_ttl_days * 86_400_000)),
            link_ttl_ms=max(1, round(link_ttl_days * 86_400_000)),
        )


@dataclass(frozen=True)
class AnonCall:
    """One ``anon.lua`` call: the identity records of one visitor space."""

    space: str
    #: A key of the space's slot (None on a single Redis).
    key: str | None
    args: list[Any] = field(repr=False)
    records: int = 0


def handled(event: object) -> bool:
    """True for an anonymous click or an identify click (both ids)."""
    return (
        type(event) is ClickEvent
        and event.anonymous_id is not None
        and (event.customer_id is None or event.type == IDENTIFY_TYPE)
    )


def identity_records(batch: Batch) -> list[Record]:
    """The batch's records identity handles, in batch order (usually none)."""
    # inlined (not handled()): this runs over every record of every batch
    return [
        rec
        for rec in batch.records
        if type(ev := rec.event) is ClickEvent
        and ev.anonymous_id is not None
        and (ev.customer_id is None or ev.type == IDENTIFY_TYPE)
    ]


def anon_calls(batch: Batch, keyspace: Keyspace, limits: Limits) -> list[AnonCall]:
    """``anon.lua``'s calls for ``batch``: one per visitor space it touches, none if no record
    is an anonymous or identify click."""
    records = identity_records(batch)
    if not records:
        return []
    by_space: dict[int, list[Record]] = {}
    for rec in records:
        anon = rec.event.anonymous_id  # type: ignore[union-attr]
        by_space.setdefault(keyspace.shard_of(anon or ""), []).append(rec)
    calls = []
    for shard in sorted(by_space):
        space = keyspace.spaces[shard]
        key = f"{space}:counters" if keyspace.cluster else None
        calls.append(
            AnonCall(space, key, build_args(by_space[shard], space, limits), len(by_space[shard]))
        )
    return calls


def build_args(records: Sequence[Record], space: str, limits: Limits) -> list[Any]:
    """ARGV of one ``anon.lua`` call (layout in the script's header)."""
    index: dict[tuple[str, int], int] = {}
    for rec in records:
        index.setdefault((rec.topic, rec.partition), len(index) + 1)
    args: list[Any] = [
        space,
        limits.max_events,
        limits.anonymous_ttl_ms,
        limits.link_ttl_ms,
        len(index),
    ]
    for topic, partition in index:
        args += [topic, partition]
    groups: dict[str, tuple[list[bytes], dict[str, int]]] = {}
    pack = RECORD.pack
    for rec in records:
        event = rec.event
        assert isinstance(event, ClickEvent) and event.anonymous_id is not None
        rows, customers = groups.setdefault(event.anonymous_id, ([], {}))
        d = to_delta(event)
        kind, customer_index = ANONYMOUS, 0
        if event.customer_id is not None:
            kind = IDENTIFY
            customer_index = customers.setdefault(event.customer_id, len(customers) + 1)
        rows.append(
            pack(
                kind,
                d.click,
                index[(rec.topic, rec.partition)],
                customer_index,
                rec.offset,
                d.time_ms,
                d.fp,
                d.session_fp,
                d.marker_fp,
                d.partner_fp,
            )
        )
    args.append(len(groups))
    for anon, (rows, customers) in groups.items():
        args += [anon, b"".join(rows), len(customers), *customers]
    return args
