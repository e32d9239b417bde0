"""A placed order -> the lines it owes the recommendation counts.

Pure: no Kafka client, no Redis. Only *placed* orders count (a cancellation or a return does
not take a purchase back: the counts say what a segment chose, and a choice returned was still
made; docs/recommendations.md). The state script takes these lines with the order and hands the
ones it applies to the counts (worker/state/apply.lua, ``{prefix}:rbox``), so an order is
counted exactly when its state is applied.
"""

from __future__ import annotations

from typing import NamedTuple

from schemas import OrderEvent
from worker.recommend.rank import member, sku_hash

__all__ = ["Line", "purchase_lines"]


class Line(NamedTuple):
    """One sku of an order: its counts member, its bought-hash (3 raw bytes, rank.sku_hash),
    and the units (lines summed). A named tuple: one is built per order line (a frozen
    dataclass costs several times as much to build)."""

    member: str
    sku_hash: bytes
    units: int


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


def purchase_lines(order: object) -> tuple[Line, ...] | None:
    """The lines a placed order counts (``None`` for anything else: a cancellation, a return,
    a click). Lines of one sku are summed, in first-seen order."""
    if not isinstance(order, OrderEvent) or order.status != "placed":
        return None
    items = order.items
    if len(items) == 1:  # most orders: no merging of lines needed
        item = items[0]
        return (Line(*_line_key(item.category, item.sku), item.quantity),)
    units: dict[str, int] = {}
    categories: dict[str, str | None] = {}
    for item in items:
        units[item.sku] = units.get(item.sku, 0) + item.quantity
        categories.setdefault(item.sku, item.category)
    return tuple(Line(*_line_key(categories[s], s), u) for s, u in units.items())
