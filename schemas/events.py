"""Versioned event contracts: orders and clicks in, segment changes and dead letters out.

The models are msgspec ``Struct``s because decoding and validating straight from JSON bytes in C
is what lets one core keep up with the stream (see ``benchmarks/bench_schemas.py``). Checks that
types alone cannot express (prices, totals, time bounds, versions) run in ``__post_init__`` and
raise :class:`FieldProblem`, which :mod:`schemas.codec` turns into a :class:`SchemaError` naming
the full field path.

This module does no I/O and imports neither Kafka nor Redis.
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Annotated, ClassVar, Literal

import msgspec

#: The versions of each input event this code understands. A new version is added here, never
#: by changing the meaning of an old one.
ORDER_SCHEMA_VERSIONS: frozenset[int] = frozenset({1})
CLICK_SCHEMA_VERSIONS: frozenset[int] = frozenset({1})
CURRENT_SCHEMA_VERSION = 1

#: Events stamped further than this ahead of the wall clock are rejected: clocks drift by
#: seconds, not days, and a far-future time would freeze a customer's recency at zero.
MAX_FUTURE_SKEW_S = 24 * 3600.0
#: Nothing before this is a plausible e-commerce event (and it catches seconds-vs-ms mix-ups).
MIN_EVENT_TIME = datetime.fromisoformat("1995-01-01T00:00:00+00:00")
#: A difference between the order total and its items above this (one cent) is an error.
TOTAL_TOLERANCE = 0.01 + 1e-9
MAX_ITEMS_PER_ORDER = 1000
MAX_ORDER_TOTAL = 10_000_000.0

OrderStatus = Literal["placed", "cancelled", "returned"]
ClickType = Literal[
    "page_view", "product_view", "add_to_cart", "remove_from_cart", "search", "checkout_start"
]
ChangeReason = Literal["order", "return", "clicks", "recency_decay", "model_update"]

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Sku = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Currency = Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")]


class FieldProblem(ValueError):
    """Raised inside a model's checks; ``field`` is relative to the struct being checked."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        # msgspec appends " - at `$.path`" to this text; the codec splits it back apart.
        super().__init__(f"{field}\x1f{reason}")


def _check_event_time(value: datetime, field: str = "event_time") -> None:
    if value.tzinfo is None:
        raise FieldProblem(field, "must carry a UTC offset (e.g. 2024-05-01T12:00:00Z)")
    if value < MIN_EVENT_TIME:
        raise FieldProblem(field, f"{value.isoformat()} is before {MIN_EVENT_TIME.date()}")
    if value.timestamp() > time.time() + MAX_FUTURE_SKEW_S:
        raise FieldProblem(
            field, f"{value.isoformat()} is more than {MAX_FUTURE_SKEW_S / 3600:.0f}h in the future"
        )


def _check_version(version: int, supported: frozenset[int]) -> None:
    if version not in supported:
        known = ", ".join(str(v) for v in sorted(supported))
        raise FieldProblem(
            "schema_version", f"unknown schema_version {version} (supported: {known})"
        )


class LineItem(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """One product line of an order."""

    sku: Sku
    quantity: int
    unit_price: float

    def __post_init__(self) -> None:
        if self.quantity < 1:
            raise FieldProblem("quantity", f"must be at least 1, got {self.quantity}")
        if self.quantity > 100_000:
            raise FieldProblem("quantity", f"must be at most 100000, got {self.quantity}")
        if not math.isfinite(self.unit_price):
            raise FieldProblem("unit_price", "must be a finite number")
        if self.unit_price < 0:
            raise FieldProblem("unit_price", f"must not be negative, got {self.unit_price}")


class OrderEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An order placed, cancelled or returned, in the order's own currency.

    ``total`` is what the customer paid (``placed``) or got back (``cancelled``, ``returned``);
    it must match the line items within a cent. A cancellation or return names the ``order_id``
    it undoes and lists the items it concerns.
    """

    kind: ClassVar[str] = "order"

    event_id: Id
    schema_version: int
    customer_id: Id
    order_id: Id
    event_time: datetime
    status: OrderStatus
    items: Annotated[list[LineItem], msgspec.Meta(min_length=1, max_length=MAX_ITEMS_PER_ORDER)]
    total: float
    currency: Currency = "EUR"

    def __post_init__(self) -> None:
        _check_version(self.schema_version, ORDER_SCHEMA_VERSIONS)
        _check_event_time(self.event_time)
        if not math.isfinite(self.total) or self.total < 0:
            raise FieldProblem("total", f"must be a non-negative number, got {self.total}")
        if self.total > MAX_ORDER_TOTAL:
            raise FieldProblem("total", f"must be at most {MAX_ORDER_TOTAL:.0f}, got {self.total}")
        items_sum = math.fsum(item.quantity * item.unit_price for item in self.items)
        if abs(items_sum - self.total) > TOTAL_TOLERANCE:
            raise FieldProblem(
                "total", f"{self.total:.2f} disagrees with the items, which sum to {items_sum:.2f}"
            )

    @property
    def event_time_ms(self) -> int:
        return int(self.event_time.timestamp() * 1000)

    @property
    def total_cents(self) -> int:
        return round(self.total * 100)

    @property
    def item_count(self) -> int:
        return sum(item.quantity for item in self.items)


class ClickEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One clickstream event of a known customer or an anonymous visitor."""

    kind: ClassVar[str] = "click"

    event_id: Id
    schema_version: int
    session_id: Id
    event_time: datetime
    type: ClickType
    customer_id: Id | None = None
    anonymous_id: Id | None = None
    sku: Sku | None = None
    query: Annotated[str, msgspec.Meta(max_length=512)] | None = None

    def __post_init__(self) -> None:
        _check_version(self.schema_version, CLICK_SCHEMA_VERSIONS)
        _check_event_time(self.event_time)
        if self.customer_id is None and self.anonymous_id is None:
            raise FieldProblem("customer_id", "either customer_id or anonymous_id is required")
        if self.type in ("product_view", "add_to_cart", "remove_from_cart") and self.sku is None:
            raise FieldProblem("sku", f"is required for a {self.type} event")

    @property
    def event_time_ms(self) -> int:
        return int(self.event_time.timestamp() * 1000)


class SegmentChange(msgspec.Struct, frozen=True, kw_only=True):
    """A customer moved from one segment to another (published to ``segment-changes``).

    ``old_segment`` is ``None`` the first time a customer is segmented. ``features`` are in real
    units (days, orders, currency), ``old_distance``/``new_distance`` in standard units of the
    model's scaled feature space. ``model_version`` is ``"rules-v1"`` before any K-means model.
    """

    kind: ClassVar[str] = "segment_change"

    customer_id: Id
    old_segment: str | None
    new_segment: str
    reason: ChangeReason
    model_version: str
    features: dict[str, float]
    event_time: datetime
    processing_time: datetime
    old_distance: float | None = None
    new_distance: float | None = None
    schema_version: int = CURRENT_SCHEMA_VERSION


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """An input record the worker could not accept, kept whole with the reason.

    ``original`` holds the exact bytes received (base64 in JSON) so it can be fixed and replayed.
    """

    kind: ClassVar[str] = "dead_letter"

    original: bytes
    source_topic: str
    partition: int
    offset: int
    error: str
    dead_lettered_at: datetime
    key: bytes | None = None
    schema_version: int = CURRENT_SCHEMA_VERSION


Event = OrderEvent | ClickEvent | SegmentChange | DeadLetter
