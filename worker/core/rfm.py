"""RFM and behaviour arithmetic: what one event does to a customer, and features as of a time.

The state of a customer is a handful of integers that only ever change by commutative
operations (sums, min, max, "first time this fingerprint is seen"), which is what makes late and
out-of-order events give the in-order result, and what lets Redis apply them with ``HINCRBY``.

Definitions (also in ``docs/state.md``):

* ``frequency``: distinct placed orders minus distinct cancelled orders (an order is identified
  by its ``order_id``; a second ``placed`` event for the same order is a duplicate).
* ``monetary``: placed totals minus cancelled and returned totals, kept in integer cents.
* ``items``: items of placed orders minus items of cancelled and returned ones.
* ``first_order_ts`` / ``last_order_ts``: min / max event time of ``placed`` events (a later
  cancellation does not move them: min and max cannot be undone, and the order did happen).
* ``last_seen_ts``: max event time of any event of the customer.
* ``sessions``: distinct session ids of the customer's clicks.
* ``abandoned_carts``: sessions with at least one ``add_to_cart`` and no ``checkout_start``
  (orders carry no session id, so the checkout start is the signal that the cart went on).
* ``views_per_order``: (page views + product views) / max(frequency, 1).
* ``recency_days`` / ``tenure_days``: as-of time minus last / first order time, in fractional
  days, clamped at 0, derived at read time and never stored.

This module imports neither Kafka nor Redis.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import NamedTuple

from schemas import ClickEvent, OrderEvent
from worker.core.attributes import (
    ATTRIBUTE_COLUMNS,
    NO_ATTRIBUTES,
    PROFILE_FIELDS,
    SUMMARY_FIELDS,
    Attributes,
)

MS_PER_DAY = 86_400_000

#: Columns of an export row, in order (the contract every team uses).
EXPORT_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "frequency",
    "monetary",
    "aov",
    "first_order_ts",
    "last_order_ts",
    "recency_days",
    "tenure_days",
    "items",
    "last_seen_ts",
    "sessions",
    "page_views",
    "product_views",
    "add_to_carts",
    "checkout_starts",
    "abandoned_carts",
    "views_per_order",
    *ATTRIBUTE_COLUMNS,
)


class Kind(IntEnum):
    """What an event does; the codes are shared with the Lua script."""

    PLACED = 1
    CANCELLED = 2
    RETURNED = 3
    CLICK = 4
    #: A rejected record, carried only so the counters can be fenced by offset.
    DEAD = 5


#: Click type -> code shared with the Lua script.
CLICK_CODES: dict[str, int] = {
    "page_view": 1,
    "product_view": 2,
    "add_to_cart": 3,
    "remove_from_cart": 4,
    "search": 5,
    "checkout_start": 6,
    # links anonymous_id to customer_id (worker/identity); for the customer it is a click that
    # counts its session and last-seen time only, like search
    "identify": 7,
}
PAGE_VIEW, PRODUCT_VIEW, ADD_TO_CART, CHECKOUT_START = 1, 2, 3, 6

#: CustomerState attribute -> field of the customer hash ``{prefix}:c:{<customer_id>}``. The
#: names are short on purpose: a million small hashes repeat them a million times (~70 bytes
#: per customer saved against spelled-out names; see docs/state.md for the table).
HASH_FIELDS: dict[str, str] = {
    "frequency": "f",
    "monetary_cents": "m",
    "items": "i",
    "first_order_ms": "t0",
    "last_order_ms": "t1",
    "last_seen_ms": "ts",
    "sessions": "s",
    "page_views": "pv",
    "product_views": "iv",
    "add_to_carts": "ac",
    "checkout_starts": "co",
    "cart_sessions": "cs",
    "cart_checkout_sessions": "cc",
}
#: Fields the segmentation team writes into the same hash.
SEGMENT_FIELDS: tuple[str, ...] = ("segment", "model_version", "segment_seq")

FINGERPRINT_BYTES = 8
NO_FINGERPRINT = b"\x00" * FINGERPRINT_BYTES

#: Summary codes shared with the Lua script: spend by category (cents), product views by
#: category, clicks by device; :data:`SUMMARY_BY_CODE` gives their hash fields.
SPEND, VIEWS, DEVICES = 1, 2, 3
SUMMARY_BY_CODE: dict[int, str] = {
    SPEND: SUMMARY_FIELDS["spend_by_category"],
    VIEWS: SUMMARY_FIELDS["views_by_category"],
    DEVICES: SUMMARY_FIELDS["clicks_by_device"],
}
#: The customer hash fields :meth:`Attributes.from_fields` reads.
_ATTRIBUTE_FIELDS = frozenset((*PROFILE_FIELDS.values(), *SUMMARY_FIELDS.values()))
#: (summary code, name, amount): a positive amount adds to the name's pair, a negative one
#: (a cancellation or return) takes from it (worker.core.memory.bump has the rule).
Label = tuple[int, str, int]


def fingerprint(tag: bytes, value: str) -> bytes:
    """An 8-byte digest of ``tag`` + ``value``: what dedup remembers instead of the id itself.

    Tags keep the name spaces apart: ``P``/``C`` order ids placed/cancelled, ``E`` event ids,
    ``S`` sessions, ``A``/``K`` sessions that had an add-to-cart / a checkout start.
    """
    digest = hashlib.blake2b(tag + b"\x00" + value.encode(), digest_size=FINGERPRINT_BYTES)
    return digest.digest()


class EventDelta(NamedTuple):
    """One event reduced to what the state update needs (the Lua script's input, per event).

    A named tuple rather than a dataclass: one is built per event on the hot path.
    """

    kind: Kind
    customer_id: str | None
    time_ms: int
    #: Dedup identity of the event itself (order id for placed/cancelled, else event id).
    fp: bytes
    amount_cents: int = 0
    items: int = 0
    click: int = 0
    session_fp: bytes = NO_FINGERPRINT
    #: add_to_cart: the "session had a cart" marker; checkout_start: "session had a checkout".
    marker_fp: bytes = NO_FINGERPRINT
    #: The other marker of the same session, so whichever of the two comes second counts the
    #: session as a cart that reached checkout (order-independent).
    partner_fp: bytes = NO_FINGERPRINT
    #: What the event adds to (or takes from) the customer's summaries; empty for an event
    #: without category or device, which is what keeps their cost near zero.
    labels: tuple[Label, ...] = ()


def to_delta(event: OrderEvent | ClickEvent) -> EventDelta:
    """Map an event to its state delta. Anonymous clicks get ``customer_id=None``."""
    if isinstance(event, OrderEvent):
        if event.status == "placed":
            kind, fp = Kind.PLACED, fingerprint(b"P", event.order_id)
        elif event.status == "cancelled":
            kind, fp = Kind.CANCELLED, fingerprint(b"C", event.order_id)
        else:
            kind, fp = Kind.RETURNED, fingerprint(b"E", event.event_id)
        labels: tuple[Label, ...] = ()
        for item in event.items:
            if item.category is not None:
                labels = _spend(event, -1 if kind is not Kind.PLACED else 1)
                break
        return EventDelta(
            kind,
            event.customer_id,
            event.event_time_ms,
            fp,
            amount_cents=event.total_cents,
            items=event.item_count,
            labels=labels,
        )
    click = CLICK_CODES[event.type]
    marker = partner = NO_FINGERPRINT
    if click == ADD_TO_CART:
        marker, partner = fingerprint(b"A", event.session_id), fingerprint(b"K", event.session_id)
    elif click == CHECKOUT_START:
        marker, partner = fingerprint(b"K", event.session_id), fingerprint(b"A", event.session_id)
    labels = ()
    if event.device is not None or event.category is not None:
        labels = _click_labels(event, click)
    return EventDelta(
        Kind.CLICK,
        event.customer_id,
        event.event_time_ms,
        fingerprint(b"E", event.event_id),
        click=click,
        session_fp=fingerprint(b"S", event.session_id),
        marker_fp=marker,
        partner_fp=partner,
        labels=labels,
    )


def _spend(event: OrderEvent, sign: int) -> tuple[Label, ...]:
    """Per category of the order's lines (first-seen order), quantity x unit price in cents,
    rounded per line; lines without a category and categories worth 0 cents add nothing."""
    cents: dict[str, int] = {}
    for item in event.items:
        if item.category is not None:
            line = round(item.quantity * item.unit_price * 100)
            cents[item.category] = cents.get(item.category, 0) + line
    return tuple((SPEND, name, sign * c) for name, c in cents.items() if c > 0)


def _click_labels(event: ClickEvent, click: int) -> tuple[Label, ...]:
    """A product view with a category counts in views by category; any click with a device
    counts in clicks by device (an add-to-cart's category is carried, not summarised)."""
    out: list[Label] = []
    if click == PRODUCT_VIEW and event.category is not None:
        out.append((VIEWS, event.category, 1))
    if event.device is not None:
        out.append((DEVICES, event.device, 1))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class CustomerState:
    """One customer's stored state (integers as stored; derived values are properties)."""

    customer_id: str
    frequency: int = 0
    monetary_cents: int = 0
    items: int = 0
    first_order_ms: int | None = None
    last_order_ms: int | None = None
    last_seen_ms: int | None = None
    sessions: int = 0
    page_views: int = 0
    product_views: int = 0
    add_to_carts: int = 0
    checkout_starts: int = 0
    cart_sessions: int = 0
    cart_checkout_sessions: int = 0
    segment: str | None = None
    model_version: str | None = None
    segment_seq: int | None = None
    #: Profile and category/device summaries (worker.core.attributes has their encoding).
    attributes: Attributes = NO_ATTRIBUTES

    @classmethod
    def from_hash(
        cls, customer_id: str, fields: Mapping[bytes, bytes] | Mapping[str, str]
    ) -> CustomerState:
        """Build from an ``HGETALL`` reply (bytes or str keys); absent counters are 0."""
        text = {_text(k): v for k, v in fields.items()}
        values: dict[str, object] = {}
        for attr, name in HASH_FIELDS.items():
            raw = text.get(name)
            if raw is not None:
                values[attr] = int(raw)
        for name in ("segment", "model_version"):
            raw = text.get(name)
            if raw is not None:
                values[name] = _text(raw)
        seq = text.get("segment_seq")
        if seq is not None:
            values["segment_seq"] = int(seq)
        # only the attribute fields: others are not text (``fp`` holds binary fingerprints)
        values["attributes"] = Attributes.from_fields(
            {k: _text(v) for k, v in text.items() if k in _ATTRIBUTE_FIELDS}
        )
        return cls(customer_id, **values)  # type: ignore[arg-type]

    @property
    def monetary(self) -> float:
        return self.monetary_cents / 100

    @property
    def aov(self) -> float:
        """Average order value; 0.0 while the customer has no (net) order."""
        return self.monetary_cents / 100 / self.frequency if self.frequency > 0 else 0.0

    @property
    def abandoned_carts(self) -> int:
        return self.cart_sessions - self.cart_checkout_sessions

    @property
    def views_per_order(self) -> float:
        return (self.page_views + self.product_views) / max(self.frequency, 1)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def ms_to_iso(ms: int | None) -> str | None:
    """Epoch milliseconds -> ISO 8601 UTC with millisecond precision (``None`` stays ``None``)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def to_ms(when: datetime) -> int:
    if when.tzinfo is None:
        raise ValueError(f"as-of time {when.isoformat()} must carry a UTC offset")
    return int(when.timestamp() * 1000)


def features(state: CustomerState, as_of: datetime) -> dict[str, object]:
    """The export row of ``state`` as of ``as_of`` (columns in :data:`EXPORT_COLUMNS` order).

    Timestamps are ISO 8601 UTC strings, or ``None`` when the customer has no order (frequency 0
    and empty order timestamps); recency and tenure are then ``None`` too.
    """
    now = to_ms(as_of)
    recency = tenure = None
    if state.last_order_ms is not None:
        recency = max(0, now - state.last_order_ms) / MS_PER_DAY
    if state.first_order_ms is not None:
        tenure = max(0, now - state.first_order_ms) / MS_PER_DAY
    return {
        "customer_id": state.customer_id,
        "frequency": state.frequency,
        "monetary": state.monetary,
        "aov": state.aov,
        "first_order_ts": ms_to_iso(state.first_order_ms),
        "last_order_ts": ms_to_iso(state.last_order_ms),
        "recency_days": recency,
        "tenure_days": tenure,
        "items": state.items,
        "last_seen_ts": ms_to_iso(state.last_seen_ms),
        "sessions": state.sessions,
        "page_views": state.page_views,
        "product_views": state.product_views,
        "add_to_carts": state.add_to_carts,
        "checkout_starts": state.checkout_starts,
        "abandoned_carts": state.abandoned_carts,
        "views_per_order": state.views_per_order,
        **state.attributes.columns(as_of),
    }
