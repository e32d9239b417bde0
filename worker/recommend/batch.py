"""One fetch of the orders topic -> the purchases the recommendation counts take.

Pure: no Kafka client, no Redis. Only *placed* orders count (a cancellation or a return does
not take a purchase back: the counts say what a segment chose, and a choice returned was still
made; docs/recommendations.md). A record that does not decode is skipped and counted: ingestion
reads the same topic and dead-letters it with its reason, so a second dead letter here would
count it twice. Every record's offset goes into ``high``, so the fence moves past all of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from schemas import OrderEvent, decode_many
from worker.ingest.batch import RawRecord
from worker.recommend.rank import member, sku_hash

__all__ = ["Line", "Purchase", "RecommendBatch", "assemble"]


class Line(NamedTuple):
    """One sku of an order: its counts member, its bought-hash (3 raw bytes, rank.sku_hash),
    and the units (lines summed). A named tuple: one is built per order line (a frozen
    dataclass costs several times as much to build)."""

    member: str
    sku_hash: bytes
    units: int


class Purchase(NamedTuple):
    """One placed order as the counts take it (a named tuple: one is built per order)."""

    topic: str
    partition: int
    offset: int
    customer_id: str
    time_ms: int
    lines: tuple[Line, ...]
    #: The order's hash (rank.sku_hash of ``order:<order_id>``, 3 raw bytes): what the
    #: customer's ``ro`` field remembers, so a replay of the order at new offsets is not
    #: counted again.
    order_hash: bytes = b""


@dataclass(frozen=True)
class RecommendBatch:
    """What one pop.lua call per space applies."""

    purchases: Sequence[Purchase] = ()
    #: (topic, partition) -> the highest offset seen (the fence moves to it).
    high: dict[tuple[str, int], int] = field(default_factory=dict)
    #: A customer whose space takes the whole batch (a refused record's fence move).
    route: str | None = None

    @property
    def empty(self) -> bool:
        return not self.high

    def items(self) -> list[RecommendBatch]:
        """One-purchase batches, in offset order (how a refused batch is applied piecewise)."""
        return [
            RecommendBatch([p], {(p.topic, p.partition): p.offset})
            for p in sorted(self.purchases, key=lambda p: (p.topic, p.partition, p.offset))
        ]


#: (category, sku) -> (member, bought-hash). A shop sells a bounded catalogue, so nearly every
#: line is a hit and skips the SHA-1 and the formatting (the bound keeps memory flat when not).
_LINE_KEYS: dict[tuple[str | None, str], tuple[str, bytes]] = {}
_LINE_KEYS_MAX = 100_000


def _line_key(category: str | None, sku: str) -> tuple[str, bytes]:
    got = _LINE_KEYS.get((category, sku))
    if got is None:
        if len(_LINE_KEYS) >= _LINE_KEYS_MAX:
            _LINE_KEYS.clear()
        got = _LINE_KEYS[(category, sku)] = (member(category, sku), sku_hash(sku))
    return got


def purchase_of(topic: str, partition: int, offset: int, order: OrderEvent) -> Purchase | None:
    """The purchase a placed order makes (``None`` for a cancellation or a return)."""
    if order.status != "placed":
        return None
    items = order.items
    if len(items) == 1:  # most orders: no merging of lines needed
        item = items[0]
        lines: tuple[Line, ...] = (Line(*_line_key(item.category, item.sku), item.quantity),)
    else:
        units: dict[str, int] = {}
        categories: dict[str, str | None] = {}
        for item in items:
            units[item.sku] = units.get(item.sku, 0) + item.quantity
            categories.setdefault(item.sku, item.category)
        lines = tuple(Line(*_line_key(categories[s], s), u) for s, u in units.items())
    return Purchase(
        topic, partition, offset, order.customer_id, order.event_time_ms, lines,
        sku_hash(f"order:{order.order_id}"),
    )  # fmt: skip


def assemble(fetched: Iterable[Sequence[RawRecord]]) -> tuple[RecommendBatch, int]:
    """Decode every partition's records (each sequence in offset order) -> (batch, skipped)."""
    purchases: list[Purchase] = []
    high: dict[tuple[str, int], int] = {}
    skipped = 0
    for part in fetched:
        if not part:
            continue
        tp = (part[0].topic, part[0].partition)
        high[tp] = max(high.get(tp, -1), max(r.offset for r in part))
        present = [r for r in part if r.value is not None]
        skipped += len(part) - len(present)
        try:
            valid, bad = decode_many(OrderEvent, [r.value or b"" for r in present])
        except Exception:  # never expected (decode_many rejects any bytes): skip the part's rest
            skipped += len(present)
            continue
        skipped += len(bad)
        for i, order in valid:
            r = present[i]
            got = purchase_of(r.topic, r.partition, r.offset, order)
            if got is not None:
                purchases.append(got)
    return RecommendBatch(purchases, high), skipped
