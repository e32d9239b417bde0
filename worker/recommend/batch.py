"""A batch of ingestion's events -> the purchases the recommendation counts take.

Pure: no Kafka client, no Redis. Only *placed* orders count (a cancellation or a return does
not take a purchase back: the counts say what a segment chose, and a choice returned was still
made; docs/recommendations.md). The records are ingestion's, already decoded and validated: a
record ingestion dead-letters is none of them, so it is reported once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from schemas import OrderEvent
from worker.core.batch import Batch
from worker.recommend.rank import member, sku_hash

__all__ = ["Line", "Purchase", "RecommendBatch", "purchases_in"]


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

    @property
    def high(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> its highest purchase's offset: where the fence moves (what
        lies above it is no purchase, and a redelivery of it would count nothing anyway)."""
        high: dict[tuple[str, int], int] = {}
        for p in self.purchases:
            tp = (p.topic, p.partition)
            if high.get(tp, -1) < p.offset:
                high[tp] = p.offset
        return high


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


def purchases_in(batch: Batch) -> RecommendBatch | None:
    """The placed orders of ``batch`` as purchases (``None`` when it holds none)."""
    purchases = [
        got
        for r in batch.records
        if isinstance(r.event, OrderEvent)
        and (got := purchase_of(r.topic, r.partition, r.offset, r.event)) is not None
    ]
    return RecommendBatch(purchases) if purchases else None
