"""Random customer states and the Redis replies they give, for the scoring tests.

``random_state`` covers the awkward corners a scoring round must handle: net-negative revenue,
negative counts from returns, no orders, an event a little after the as-of time, missing
``last_seen``; ``hmget_reply`` is what the scoring read script returns for such a state.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

from worker.core.rfm import HASH_FIELDS, CustomerState
from worker.scoring.vectors import READ_FIELDS

AS_OF = datetime(2026, 6, 1, 12, 30, tzinfo=UTC)
AS_OF_MS = int(AS_OF.timestamp() * 1000)


def random_state(rng: random.Random, i: int) -> CustomerState:
    buyer = rng.random() < 0.8
    freq = rng.choice([-1, 0, 1, 2, 3, 7, 40]) if buyer else 0
    last = AS_OF_MS - rng.randrange(0, 900 * 86_400_000) if buyer else None
    first = None if last is None else last - rng.randrange(0, 400 * 86_400_000)
    if rng.random() < 0.05:
        last = AS_OF_MS + 5000  # an event a little after the as-of time
    pv = rng.randrange(0, 300)
    return CustomerState(
        customer_id=f"C{i}", frequency=freq, monetary_cents=rng.randrange(-5000, 900_000),
        items=rng.randrange(-2, 50), first_order_ms=first, last_order_ms=last,
        last_seen_ms=None if rng.random() < 0.05 else AS_OF_MS - rng.randrange(10**10),
        sessions=rng.randrange(0, 80), page_views=pv, product_views=rng.randrange(0, 200),
        add_to_carts=rng.randrange(0, 30), checkout_starts=rng.randrange(0, 20),
        cart_sessions=rng.randrange(0, 10), cart_checkout_sessions=rng.randrange(0, 12),
        segment=rng.choice([None, "low", "high"]), segment_seq=rng.choice([None, 1, 5]),
    )  # fmt: skip


def hmget_reply(state: CustomerState) -> list[bytes | None]:
    """What ``HMGET key READ_FIELDS`` returns for this state (absent zero counters too)."""
    values: dict[str, object] = {}
    for attr, name in HASH_FIELDS.items():
        v = getattr(state, attr)
        if v is not None and not (v == 0 and name in ("pv", "iv", "ac")):
            values[name] = v
    for name in ("segment", "model_version", "segment_seq"):
        if getattr(state, name) is not None:
            values[name] = getattr(state, name)
    return [None if values.get(f) is None else str(values[f]).encode() for f in READ_FIELDS]
