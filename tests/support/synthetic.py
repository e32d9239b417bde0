"""Seeded synthetic orders and clicks, plus the pandas RFM oracle.

Every test that needs realistic events builds them here, from a seed, so a failure replays:
the state-store and core tests, the worker subprocess tests and the fuzzer's seed corpus.
Orders: every customer places a few orders; some are cancelled, some partly returned, all with
event times scattered over two years. Clicks: sessions of page/product views, add-to-carts and
checkout starts, some anonymous. Order lines and product clicks carry a category (more names
than a summary has slots, one of 32 characters, one not ASCII, so the Space-Saving and the
64-byte rules of the summaries are exercised), clicks a device (a session in ten none).
Categories and devices come from the sku and session numbers, not from extra random draws, so
every other value is what it was before they existed. Nothing here talks to Kafka or Redis.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pandas as pd

from schemas import ClickEvent, LineItem, OrderEvent
from worker.core import Batch, Record

T0 = datetime(2024, 1, 1, tzinfo=UTC)
Event = OrderEvent | ClickEvent
CATEGORIES = ("electronics", "fashion", "home", "Home", "beauty", "books", "épicerie",
              "garden-and-outdoor-living-supply", "toys")  # fmt: skip
DEVICES = ("mobile", "desktop", "tablet", "app")


def category_of(sku: int) -> str:
    """Every sku belongs to one category."""
    return CATEGORIES[sku % len(CATEGORIES)]


def _item(rng: random.Random) -> LineItem:
    sku = rng.randrange(50)
    return LineItem(
        sku=f"SKU-{sku}",
        quantity=rng.randint(1, 3),
        unit_price=rng.randrange(100, 20000) / 100,
        category=category_of(sku),
    )


def orders(n_customers: int, n_orders: int, seed: int = 7) -> list[OrderEvent]:
    """``n_orders`` placed orders over ``n_customers``, plus cancellations and partial returns."""
    rng = random.Random(seed)
    out: list[OrderEvent] = []
    for k in range(n_orders):
        cid = f"C{rng.randrange(n_customers):05d}"
        items = [_item(rng) for _ in range(rng.randint(1, 3))]
        when = T0 + timedelta(
            seconds=rng.randrange(2 * 365 * 86400), milliseconds=rng.randrange(1000)
        )
        total = round(sum(i.quantity * i.unit_price for i in items), 2)
        oid = f"O{k:07d}"
        out.append(
            OrderEvent(event_id=f"E-{oid}-p", schema_version=1, customer_id=cid, order_id=oid,
                       event_time=when, status="placed", items=items, total=total)
        )  # fmt: skip
        roll = rng.random()
        if roll < 0.08:
            out.append(
                OrderEvent(event_id=f"E-{oid}-c", schema_version=1, customer_id=cid, order_id=oid,
                           event_time=when + timedelta(hours=2), status="cancelled", items=items,
                           total=total)
            )  # fmt: skip
        elif roll < 0.15:
            back = items[:1]
            out.append(
                OrderEvent(event_id=f"E-{oid}-r", schema_version=1, customer_id=cid, order_id=oid,
                           event_time=when + timedelta(days=10), status="returned", items=back,
                           total=round(back[0].quantity * back[0].unit_price, 2))
            )  # fmt: skip
    return out


def clicks(n_customers: int, n_sessions: int, seed: int = 11) -> list[ClickEvent]:
    """Sessions of clicks; one session in ten is anonymous."""
    rng = random.Random(seed)
    out: list[ClickEvent] = []
    kinds = ["page_view", "product_view", "add_to_cart", "remove_from_cart", "search",
             "checkout_start"]  # fmt: skip
    weights = [5, 4, 2, 1, 1, 1]
    for s in range(n_sessions):
        anonymous = rng.random() < 0.1
        cid = None if anonymous else f"C{rng.randrange(n_customers):05d}"
        start = T0 + timedelta(seconds=rng.randrange(2 * 365 * 86400))
        device = None if s % 10 == 9 else DEVICES[s % 7 % len(DEVICES)]
        for j in range(rng.randint(1, 8)):
            kind = rng.choices(kinds, weights)[0]
            product = kind in ("product_view", "add_to_cart", "remove_from_cart")
            sku = (s + j) % 50
            out.append(
                ClickEvent(event_id=f"K{s:06d}-{j}", schema_version=1, session_id=f"S{s:06d}",
                           event_time=start + timedelta(seconds=30 * j), type=kind,  # type: ignore[arg-type]
                           customer_id=cid, anonymous_id=f"A{s}" if anonymous else None,
                           sku=f"SKU-{sku}" if product else None,
                           category=category_of(sku) if product else None, device=device)
            )  # fmt: skip
    return out


def dataset(n_customers: int, n_orders: int, n_sessions: int, seed: int) -> list[Event]:
    """Orders (with cancellations and partial returns) and clicks, in event-time order."""
    events: list[Event] = [
        *orders(n_customers, n_orders, seed=seed),
        *clicks(n_customers, n_sessions, seed=seed + 1),
    ]
    events.sort(key=lambda e: (e.event_time, e.event_id))
    return events


def batches(
    events: Sequence[OrderEvent | ClickEvent],
    topic: str,
    size: int = 500,
    partitions: int = 4,
    first_offset: int = 0,
) -> list[Batch]:
    """Spread events over partitions by customer key (as a keyed producer does)."""
    next_offset = dict.fromkeys(range(partitions), first_offset)
    records: list[Record] = []
    for ev in events:
        key = ev.customer_id or getattr(ev, "anonymous_id", "") or ""
        p = sum(key.encode()) % partitions
        records.append(Record(topic, p, next_offset[p], ev))
        next_offset[p] += 1
    out = []
    for start in range(0, len(records), size):
        chunk = records[start : start + size]
        high: dict[tuple[str, int], int] = {}
        for r in chunk:
            high[(r.topic, r.partition)] = max(high.get((r.topic, r.partition), -1), r.offset)
        out.append(Batch(chunk, high, {}))
    return out


def pandas_rfm(events: Sequence[OrderEvent]) -> pd.DataFrame:
    """The oracle the issue asks for: a group-by over the raw orders, indexed by customer_id."""
    df = pd.DataFrame(
        {
            "customer_id": [e.customer_id for e in events],
            "order_id": [e.order_id for e in events],
            "status": [e.status for e in events],
            "cents": [e.total_cents for e in events],
            "ms": [e.event_time_ms for e in events],
        }
    )
    sign = df["status"].map({"placed": 1, "cancelled": -1, "returned": -1})
    df["net"] = df["cents"] * sign
    placed = df[df["status"] == "placed"].groupby("customer_id")
    cancelled = df[df["status"] == "cancelled"].groupby("customer_id")["order_id"].nunique()
    out = pd.DataFrame(
        {
            "placed": placed["order_id"].nunique(),
            "first_ms": placed["ms"].min(),
            "last_ms": placed["ms"].max(),
        }
    )
    out["frequency"] = out["placed"] - cancelled.reindex(out.index, fill_value=0)
    out["monetary_cents"] = df.groupby("customer_id")["net"].sum().reindex(out.index)
    out["aov"] = (out["monetary_cents"] / 100 / out["frequency"]).where(out["frequency"] > 0, 0.0)
    return out
