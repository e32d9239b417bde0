"""Live traffic for customers who already have a history, stamped with the wall clock.

The synthetic generator draws a finished history; the demo then needs the present: shoppers
browsing now, lapsed customers coming back, regulars buying again, the odd return. Each call to
:meth:`LiveTraffic.sessions` draws whole sessions (page view, product views, add-to-cart,
checkout start, then maybe the order) for customers picked with persona-specific activity, so
segment changes follow from realistic behaviour rather than from scripted moves.

Seeded: the same seed and the same sequence of ``now`` values give the same events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from producers.personas import PERSONAS, Persona
from schemas import ClickEvent, LineItem, OrderEvent

#: Relative chance that a session belongs to a customer of this persona (per customer).
ACTIVITY: Mapping[str, float] = {
    "champions": 6.0,
    "loyal_regulars": 4.0,
    "big_spenders": 1.5,
    "bargain_hunters": 4.0,
    "new_customers": 3.0,
    "at_risk": 1.5,
    "churned": 0.8,
    "window_shoppers": 3.0,
}
#: Probability that a session of this persona ends in an order.
BUY_RATE: Mapping[str, float] = {
    "champions": 0.6,
    "loyal_regulars": 0.5,
    "big_spenders": 0.4,
    "bargain_hunters": 0.55,
    "new_customers": 0.5,
    "at_risk": 0.6,  # the ones who do show up mostly come back to buy
    "churned": 0.5,
    "window_shoppers": 0.05,
}
RETURN_RATE = 0.06
N_SKUS = 2000


@dataclass
class LiveTraffic:
    """Endless sessions for known customers (``labels``: customer id -> persona name)."""

    labels: Mapping[str, str]
    seed: int
    run_tag: str = "live"
    currency: str = "EUR"
    #: The personas' parameters and activity (tests and benchmarks change them: a shift).
    personas: tuple[Persona, ...] = PERSONAS
    activity: Mapping[str, float] = field(default_factory=lambda: dict(ACTIVITY))
    _rng: np.random.Generator = field(init=False, repr=False)
    _customers: list[str] = field(init=False, repr=False)
    _personas: dict[str, Persona] = field(init=False, repr=False)
    _weights: np.ndarray = field(init=False, repr=False)
    _counter: int = field(default=0, init=False, repr=False)
    _placed: list[tuple[str, str, LineItem]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.labels:
            raise ValueError("live traffic needs at least one known customer")
        self._rng = np.random.default_rng(self.seed)
        self._customers = sorted(self.labels)
        self._personas = {p.name: p for p in self.personas}
        weights = np.array([self.activity.get(self.labels[c], 1.0) for c in self._customers])
        self._weights = weights / weights.sum()

    def _id(self, kind: str) -> str:
        self._counter += 1
        return f"{self.run_tag}-{kind}-{self._counter}"

    def sessions(self, count: int, now: datetime) -> list[OrderEvent | ClickEvent]:
        """``count`` sessions ending at ``now``, their events in time order within each session."""
        events: list[OrderEvent | ClickEvent] = []
        picks = self._rng.choice(len(self._customers), size=count, p=self._weights)
        for index in picks:
            customer = self._customers[int(index)]
            events.extend(self._session(customer, now))
        if self._placed and self._rng.random() < RETURN_RATE * count:
            events.append(self._return(now))
        return events

    def _session(self, customer: str, now: datetime) -> list[OrderEvent | ClickEvent]:
        persona_name = self.labels[customer]
        persona = self._personas.get(persona_name)
        session = self._id("s")
        steps = 3 + int(self._rng.poisson(persona.extra_views if persona else 2.0))
        t = now - timedelta(seconds=2 * (steps + 3))
        tick = timedelta(seconds=2)

        def click(kind: str, sku: str | None = None) -> ClickEvent:
            nonlocal t
            t += tick
            return ClickEvent(
                event_id=self._id("c"), schema_version=1, session_id=session, event_time=t,
                type=kind, customer_id=customer, sku=sku,  # type: ignore[arg-type]
            )  # fmt: skip

        out: list[OrderEvent | ClickEvent] = [click("page_view")]
        skus = [f"SKU-{int(s):05d}" for s in self._rng.integers(0, N_SKUS, size=steps)]
        out += [click("product_view", sku) for sku in skus]
        if self._rng.random() >= BUY_RATE.get(persona_name, 0.3):
            if self._rng.random() < (persona.cart_rate if persona else 0.2):
                out.append(click("add_to_cart", skus[0]))  # an abandoned cart
            return out
        n_lines = max(
            1, int(self._rng.poisson(max((persona.lines if persona else 1.2) - 1, 0))) + 1
        )
        median = persona.aov if persona and persona.aov > 0 else 40.0
        line_value = median / n_lines * float(self._rng.lognormal(0.0, 0.35))
        items = [
            LineItem(sku=skus[i % len(skus)], quantity=1, unit_price=round(line_value, 2))
            for i in range(n_lines)
        ]
        out += [click("add_to_cart", item.sku) for item in items]
        out.append(click("checkout_start"))
        order_id = self._id("o")
        t += tick
        order = OrderEvent(
            event_id=self._id("e"), schema_version=1, customer_id=customer, order_id=order_id,
            event_time=t, status="placed", items=items,
            total=round(sum(i.unit_price * i.quantity for i in items), 2), currency=self.currency,
        )  # fmt: skip
        self._placed.append((customer, order_id, items[0]))
        out.append(order)
        return out

    def _return(self, now: datetime) -> OrderEvent:
        """A return of one line of an order this stream placed earlier."""
        customer, order_id, item = self._placed.pop(int(self._rng.integers(len(self._placed))))
        return OrderEvent(
            event_id=self._id("e"), schema_version=1, customer_id=customer, order_id=order_id,
            event_time=now, status="returned", items=[item], total=item.unit_price,
            currency=self.currency,
        )  # fmt: skip
