"""Identity merge in memory: the oracle the tests compare Redis with, and a model of the scripts.

Two things, both pure (no Kafka, no Redis):

* :func:`expected` is **the oracle**: what every customer's behaviour must be for a set of
  clicks, whatever order they arrive in. Each visitor is linked to the customer of its first
  identify (only one customer per visitor in a conflict-free stream, so order cannot matter),
  each anonymous click of a linked visitor counts as a click of that customer, an unlinked
  visitor's clicks count for nobody; the result is then the in-memory state store's
  (:class:`worker.core.InMemoryStateStore`, the state script's oracle) on those clicks.
* :class:`IdentityModel` follows ``anon.lua`` and ``merge.lua`` step by step (visitor state,
  links, transfers in an outbox, merges that may be postponed as by a crash), so the property
  tests can check that the *design* gives the oracle's result for every arrival order, replay
  and crash point before the Redis tests check the scripts.

Only the behaviour identity moves is compared (:data:`IDENTITY_FIELDS`); the per-visitor event
bound is not modelled (the tests stay below it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import msgspec

from schemas import ClickEvent, OrderEvent
from worker.core.batch import Batch, Record
from worker.core.memory import MAX_FINGERPRINTS, InMemoryStateStore
from worker.core.rfm import (
    ADD_TO_CART,
    CHECKOUT_START,
    PAGE_VIEW,
    PRODUCT_VIEW,
    CustomerState,
    EventDelta,
    to_delta,
)

#: The customer state identity merge moves (CustomerState attributes).
IDENTITY_FIELDS: tuple[str, ...] = (
    "sessions",
    "page_views",
    "product_views",
    "add_to_carts",
    "checkout_starts",
    "cart_sessions",
    "cart_checkout_sessions",
    "last_seen_ms",
)
#: The counted fields (all but last seen), as _Customer keeps them.
_COUNTED = IDENTITY_FIELDS[:-1]
_COUNTER = {
    PAGE_VIEW: "page_views",
    PRODUCT_VIEW: "product_views",
    ADD_TO_CART: "add_to_carts",
    CHECKOUT_START: "checkout_starts",
}

Behaviour = tuple[int | None, ...]


def behaviour(state: CustomerState | None) -> Behaviour:
    """The :data:`IDENTITY_FIELDS` of ``state`` (all 0 / None for no state)."""
    state = state or CustomerState("")
    return tuple(getattr(state, name) for name in IDENTITY_FIELDS)


def is_anonymous(event: object) -> bool:
    return isinstance(event, ClickEvent) and event.customer_id is None


def is_identify(event: object) -> bool:
    return (
        isinstance(event, ClickEvent)
        and event.type == "identify"
        and event.customer_id is not None
        and event.anonymous_id is not None
    )


def links(events: Iterable[OrderEvent | ClickEvent]) -> dict[str, str]:
    """Visitor -> customer of its first identify in ``events`` (first link wins)."""
    out: dict[str, str] = {}
    for event in events:
        if is_identify(event):
            assert isinstance(event, ClickEvent) and event.anonymous_id and event.customer_id
            out.setdefault(event.anonymous_id, event.customer_id)
    return out


def attributed(
    events: Iterable[OrderEvent | ClickEvent], linked: Mapping[str, str]
) -> list[OrderEvent | ClickEvent]:
    """``events`` with each linked visitor's anonymous clicks given to its customer (the
    unlinked ones dropped)."""
    out: list[OrderEvent | ClickEvent] = []
    for event in events:
        if isinstance(event, ClickEvent) and event.customer_id is None:
            cid = linked.get(event.anonymous_id or "")
            if cid is not None:
                out.append(msgspec.structs.replace(event, customer_id=cid))
        else:
            out.append(event)
    return out


def expected(
    events: Iterable[OrderEvent | ClickEvent],
    linked: Mapping[str, str] | None = None,
    max_fingerprints: int = MAX_FINGERPRINTS,
) -> dict[str, CustomerState]:
    """The oracle: every customer's state for ``events`` (``linked``: the links, by default
    each visitor's first identify in ``events``)."""
    events = list(events)
    given = attributed(events, links(events) if linked is None else linked)
    store = InMemoryStateStore(max_fingerprints)
    store.apply(Batch([Record("oracle", 0, i, e) for i, e in enumerate(given)]))
    return {s.customer_id: s for s in store.customers()}


# -- the model of the scripts ------------------------------------------------------------------
@dataclass
class Bag:
    """Behaviour as a visitor's hash and a transfer hold it (``anon.lua``'s bag)."""

    events: list[tuple[bytes, int]] = field(default_factory=list)
    sessions: list[bytes] = field(default_factory=list)
    carts: list[tuple[bytes, bytes]] = field(default_factory=list)
    checkouts: list[tuple[bytes, bytes]] = field(default_factory=list)
    seen: set[bytes] = field(default_factory=set)
    last_seen_ms: int | None = None

    def add(self, d: EventDelta) -> bool:
        """One anonymous click; False if the bag holds its fingerprint already."""
        if d.fp in self.seen:
            return False
        self.seen.add(d.fp)
        self.events.append((d.fp, d.click))
        if d.session_fp not in self.seen:
            self.seen.add(d.session_fp)
            self.sessions.append(d.session_fp)
        if d.click in (ADD_TO_CART, CHECKOUT_START) and d.marker_fp not in self.seen:
            self.seen.add(d.marker_fp)
            pair = (d.marker_fp, d.partner_fp)
            (self.carts if d.click == ADD_TO_CART else self.checkouts).append(pair)
        if self.last_seen_ms is None or d.time_ms > self.last_seen_ms:
            self.last_seen_ms = d.time_ms
        return True


@dataclass(frozen=True)
class Transfer:
    customer_id: str
    anonymous_id: str
    bag: Bag

    @property
    def id(self) -> bytes:
        """Named by content, as in ``anon.lua``."""
        b = self.bag
        text = repr((self.customer_id, self.anonymous_id, b.events, b.sessions, b.carts,
                     b.checkouts, b.last_seen_ms))  # fmt: skip
        return hashlib.sha1(text.encode()).digest()[:8]


@dataclass
class _Customer:
    """A customer's behaviour and fingerprints (as ``apply.lua`` and ``merge.lua`` keep them)."""

    values: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTED, 0))
    last_seen_ms: int | None = None
    order: list[bytes] = field(default_factory=list)
    fps: set[bytes] = field(default_factory=set)

    def _add(self, fp: bytes) -> None:
        self.order.append(fp)
        self.fps.add(fp)

    def _seen(self, ms: int) -> None:
        if self.last_seen_ms is None or ms > self.last_seen_ms:
            self.last_seen_ms = ms

    def _trim(self, limit: int) -> None:
        if len(self.order) > limit:
            for fp in self.order[: len(self.order) - limit]:
                self.fps.discard(fp)
            del self.order[: len(self.order) - limit]

    def _marker(self, marker: bytes, partner: bytes, cart: bool) -> None:
        if marker not in self.fps:
            self._add(marker)
            if cart:
                self.values["cart_sessions"] += 1
            if partner in self.fps:
                self.values["cart_checkout_sessions"] += 1

    def click(self, d: EventDelta, limit: int) -> None:
        """``apply.lua`` for one click of this customer."""
        if d.fp in self.fps:
            return
        self._add(d.fp)
        self._seen(d.time_ms)
        if d.session_fp not in self.fps:
            self._add(d.session_fp)
            self.values["sessions"] += 1
        name = _COUNTER.get(d.click)
        if name is not None:
            self.values[name] += 1
            if d.click in (ADD_TO_CART, CHECKOUT_START):
                self._marker(d.marker_fp, d.partner_fp, d.click == ADD_TO_CART)
        self._trim(limit)

    def merge(self, transfer: Transfer, limit: int) -> bool:
        """``merge.lua`` for one transfer; False if it was merged before."""
        b = transfer.bag
        if not b.events:
            return True
        if transfer.id in self.fps:
            return False
        self._add(transfer.id)
        for fp, click in b.events:
            if fp not in self.fps:
                self._add(fp)
                name = _COUNTER.get(click)
                if name is not None:
                    self.values[name] += 1
        for fp in b.sessions:
            if fp not in self.fps:
                self._add(fp)
                self.values["sessions"] += 1
        for marker, partner in b.carts:
            self._marker(marker, partner, True)
        for marker, partner in b.checkouts:
            self._marker(marker, partner, False)
        if b.last_seen_ms is not None:
            self._seen(b.last_seen_ms)
        self._trim(limit)
        return True

    def behaviour(self) -> Behaviour:
        v = self.values
        return (*(v[name] for name in _COUNTED), self.last_seen_ms)


class IdentityModel:
    """The state script (clicks only), ``anon.lua`` and ``merge.lua`` in memory, one event at a
    time. ``crash`` on :meth:`ingest`: ``"before_merge"`` leaves the event's transfer in the
    outbox unmerged, ``"before_delete"`` merges it and leaves it there too (the process died
    before the ``HDEL``); :meth:`drain` merges what is left."""

    def __init__(self, max_fingerprints: int = MAX_FINGERPRINTS) -> None:
        self.limit = max_fingerprints
        self.customers: dict[str, _Customer] = {}
        self.visitors: dict[str, Bag] = {}
        self.links: dict[str, str] = {}
        self.outbox: list[Transfer] = []
        self.conflicts = 0

    def ingest(self, event: ClickEvent, *, crash: str | None = None) -> None:
        d = to_delta(event)
        if event.customer_id is not None:
            self._customer(event.customer_id).click(d, self.limit)
        anon = event.anonymous_id
        if anon is None or (event.customer_id is not None and event.type != "identify"):
            return
        link, transfer = self.links.get(anon), None
        if event.customer_id is not None:  # identify
            if link is None:
                self.links[anon] = link = event.customer_id
                transfer = Transfer(link, anon, self.visitors.pop(anon, Bag()))
            elif link != event.customer_id:
                self.conflicts += 1
        elif link is not None:
            bag = Bag()
            bag.add(d)
            transfer = Transfer(link, anon, bag)
        else:
            self.visitors.setdefault(anon, Bag()).add(d)
        if transfer is not None:
            self.outbox.append(transfer)
            if crash is None:
                self.drain()
            elif crash == "before_delete":
                self._customer(transfer.customer_id).merge(transfer, self.limit)

    def drain(self) -> None:
        """Merge every transfer in the outbox (at-least-once: merging twice is harmless)."""
        for transfer in self.outbox:
            self._customer(transfer.customer_id).merge(transfer, self.limit)
        self.outbox.clear()

    def _customer(self, customer_id: str) -> _Customer:
        return self.customers.setdefault(customer_id, _Customer())

    def behaviour(self) -> dict[str, Behaviour]:
        """Customer -> :data:`IDENTITY_FIELDS`, for every customer with any state."""
        return {
            cid: c.behaviour() for cid, c in self.customers.items() if c.last_seen_ms is not None
        }
