"""An in-memory state store with exactly the Redis store's semantics: unit tests and the oracle.

It applies a :class:`~worker.core.batch.Batch` the way ``worker/state/apply.lua`` does, record by
record, so a test can compare the Redis state with this one customer by customer. It is not
thread-safe and keeps everything in dictionaries.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from typing import Any

from worker.core.attributes import SUMMARY_FIELDS, SUMMARY_SLOTS, Summary
from worker.core.batch import ApplyResult, Batch, TopicPartition
from worker.core.rfm import (
    ADD_TO_CART,
    CHECKOUT_START,
    DEVICES,
    MS_PER_DAY,
    PAGE_VIEW,
    PRODUCT_VIEW,
    SPEND,
    VIEWS,
    CustomerState,
    EventDelta,
    Kind,
    to_delta,
)

#: Fingerprints remembered per customer (8 bytes each, so at most 32 KiB per customer). Beyond
#: this the oldest are forgotten: only a replay of a customer's events older than their newest
#: 4096 could then count twice (the offset fence still covers every redelivery).
MAX_FINGERPRINTS = 4096

COUNTER_NAMES: tuple[str, ...] = (
    "received",
    "valid",
    "dead_lettered",
    "applied",
    "duplicates",
    "fenced",
    "deduped",
    "anonymous",
    # sweep-index buckets the state script found holding the wrong type (state still exact)
    "index_errors",
)


#: A summary field is at most this many bytes, so the customer hash stays a compact listpack
#: (Redis's ``hash-max-listpack-value``; docs/state.md).
SUMMARY_BYTES = 64
#: Summary code -> CustomerState.attributes field.
_SUMMARY_ATTR: dict[int, str] = {
    SPEND: "spend_by_category",
    VIEWS: "views_by_category",
    DEVICES: "clicks_by_device",
}
assert set(_SUMMARY_ATTR.values()) == set(SUMMARY_FIELDS)


def canonical(summary: dict[str, int]) -> Summary:
    """Pairs largest count first, ties by name (code point order = UTF-8 byte order)."""
    return tuple(sorted(summary.items(), key=lambda p: (-p[1], p[0])))


def encode_summary(summary: dict[str, int]) -> str:
    """The stored text: ``name=count`` pairs in canonical order joined by ``,``."""
    return ",".join(f"{name}={count}" for name, count in canonical(summary))


def bump_summary(summary: dict[str, int], name: str, amount: int) -> None:
    """Apply one label to a summary, in place: the rule apply.lua implements too.

    ``amount > 0``: add to the name's pair; a new name takes a free slot, or, when all
    ``SUMMARY_SLOTS`` are taken, replaces the smallest pair (ties: the name that sorts last) and
    starts from its count (Space-Saving). ``amount < 0`` (a cancellation or return): take from
    the name's pair, never below 0 (a pair reaching 0 is removed), and never create one. Then,
    while the encoded summary is over ``SUMMARY_BYTES``, the smallest pair is dropped.
    """
    if name in summary:
        left = summary[name] + amount
        if left > 0:
            summary[name] = left
        else:
            del summary[name]
    elif amount > 0:
        if len(summary) < SUMMARY_SLOTS:
            summary[name] = amount
        else:
            victim = canonical(summary)[-1][0]
            summary[name] = summary.pop(victim) + amount
    while len(encode_summary(summary).encode()) > SUMMARY_BYTES:
        del summary[canonical(summary)[-1][0]]


@dataclass
class _Fingerprints:
    order: list[bytes] = field(default_factory=list)
    members: set[bytes] = field(default_factory=set)

    def add(self, fp: bytes) -> None:
        self.order.append(fp)
        self.members.add(fp)

    def trim(self, limit: int) -> None:
        excess = len(self.order) - limit
        if excess > 0:
            for fp in self.order[:excess]:
                self.members.discard(fp)
            del self.order[:excess]


class InMemoryStateStore:
    """The oracle: same fences, dedup, counters, unscored customers and sweep index as Redis."""

    def __init__(self, max_fingerprints: int = MAX_FINGERPRINTS) -> None:
        self.max_fingerprints = max_fingerprints
        self._states: dict[str, CustomerState] = {}
        self._fps: dict[str, _Fingerprints] = {}
        self._fences: dict[TopicPartition, int] = {}
        self._counters: Counter[str] = Counter()
        self.dirty: set[str] = set()

    # -- writes --------------------------------------------------------------------------------
    def apply(self, batch: Batch) -> ApplyResult:
        """Apply a batch; records at or below their partition's fence are skipped."""
        high = batch.partitions()
        old = {tp: self._fences.get(tp, -1) for tp in high}
        count: Counter[str] = Counter()
        for tp, offsets in batch.dead_letter_offsets.items():
            above = sum(1 for off in offsets if off > old[tp])
            count["dead_lettered"] += above
            count["fenced"] += len(offsets) - above
        for tp, n in batch.dead_lettered.items():
            if tp not in batch.dead_letter_offsets and high[tp] > old[tp]:
                count["dead_lettered"] += n
        groups: dict[str, list[EventDelta]] = {}
        for rec in batch.records:
            if rec.offset <= old[(rec.topic, rec.partition)]:
                count["fenced"] += 1
                continue
            count["valid"] += 1
            delta = to_delta(rec.event)
            if delta.customer_id is None:
                count["anonymous"] += 1
                continue
            groups.setdefault(delta.customer_id, []).append(delta)
        changed: list[str] = []
        for cid, deltas in groups.items():
            applied, deduped = self._apply_customer(cid, deltas)
            count["applied"] += applied
            count["deduped"] += deduped
            if applied:
                changed.append(cid)
        for tp, top in high.items():
            if top > old[tp]:
                self._fences[tp] = top
        count["duplicates"] = count["fenced"] + count["deduped"]
        count["received"] = count["valid"] + count["dead_lettered"]
        self._counters.update(count)
        self.dirty.update(changed)
        return ApplyResult(count["applied"], count["duplicates"], changed)

    def _apply_customer(self, cid: str, deltas: list[EventDelta]) -> tuple[int, int]:
        fps = self._fps.setdefault(cid, _Fingerprints())
        old = self._states.get(cid, CustomerState(cid))
        s = {f.name: getattr(old, f.name) for f in fields(CustomerState)}
        applied = deduped = 0
        summaries: dict[int, dict[str, int]] = {}

        def bump(name: str, by: int = 1) -> None:
            s[name] += by

        for d in deltas:
            if d.fp in fps.members:
                deduped += 1
                continue
            fps.add(d.fp)
            applied += 1
            for code, name, amount in d.labels:
                if code not in summaries:
                    summaries[code] = dict(getattr(old.attributes, _SUMMARY_ATTR[code]))
                bump_summary(summaries[code], name, amount)
            s["last_seen_ms"] = _max(s["last_seen_ms"], d.time_ms)
            if d.kind is Kind.PLACED:
                bump("frequency")
                bump("monetary_cents", d.amount_cents)
                bump("items", d.items)
                s["first_order_ms"] = _min(s["first_order_ms"], d.time_ms)
                s["last_order_ms"] = _max(s["last_order_ms"], d.time_ms)
            elif d.kind is Kind.CANCELLED:
                bump("frequency", -1)
                bump("monetary_cents", -d.amount_cents)
                bump("items", -d.items)
            elif d.kind is Kind.RETURNED:
                bump("monetary_cents", -d.amount_cents)
                bump("items", -d.items)
            else:
                if d.session_fp not in fps.members:
                    fps.add(d.session_fp)
                    bump("sessions")
                if d.click == PAGE_VIEW:
                    bump("page_views")
                elif d.click == PRODUCT_VIEW:
                    bump("product_views")
                elif d.click in (ADD_TO_CART, CHECKOUT_START):
                    bump("add_to_carts" if d.click == ADD_TO_CART else "checkout_starts")
                    if d.marker_fp not in fps.members:
                        fps.add(d.marker_fp)
                        if d.click == ADD_TO_CART:
                            bump("cart_sessions")
                        if d.partner_fp in fps.members:
                            bump("cart_checkout_sessions")
        fps.trim(self.max_fingerprints)
        if summaries:
            changes: dict[str, Any] = {
                _SUMMARY_ATTR[code]: canonical(pairs) for code, pairs in summaries.items()
            }
            s["attributes"] = replace(old.attributes, **changes)
        if applied:
            self._states[cid] = replace(old, **s)
        return applied, deduped

    # -- reads ---------------------------------------------------------------------------------
    def get(self, customer_id: str) -> CustomerState | None:
        return self._states.get(customer_id)

    def customers(self) -> Iterator[CustomerState]:
        yield from self._states.values()

    def fences(self, topic: str) -> dict[int, int]:
        return {p: off for (t, p), off in self._fences.items() if t == topic}

    def counters(self) -> dict[str, int]:
        return {name: self._counters.get(name, 0) for name in COUNTER_NAMES}

    def customers_crossing(self, threshold_days: float, since_ms: int, until_ms: int) -> list[str]:
        """Customers whose recency passed ``threshold_days`` in the window (since, until]."""
        shift = round(threshold_days * MS_PER_DAY)
        hits = [
            (st.last_order_ms, cid)
            for cid, st in self._states.items()
            if st.last_order_ms is not None
            and since_ms - shift < st.last_order_ms <= until_ms - shift
        ]
        return [cid for _, cid in sorted(hits)]


def _max(current: int | None, value: int) -> int:
    return value if current is None or value > current else current


def _min(current: int | None, value: int) -> int:
    return value if current is None or value < current else current
