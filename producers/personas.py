"""Customer personas of the synthetic generator: who buys how often, how much, and when.

Each persona is a row of parameters, chosen so that the personas are *separable* in RFM and
behaviour terms (frequency, monetary, AOV, recency, tenure, sessions, views per order, abandoned
carts): the segmentation team scores its clusters against these labels (adjusted Rand index).

Activity windows are fractions of the generated period (``--days``), counted back from its end:
with the default 180 days, ``at_risk`` last ordered 90-140 days ago, ``new_customers`` first
ordered 7-25 days ago. A customer's first order falls on the window's start and the last on its
end (when it has two or more), so tenure and recency follow these bounds directly.

This module is pure data: no I/O, no randomness.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

#: The product categories of the synthetic catalogue (every sku belongs to one:
#: ``producers.synthetic.category_of_sku``), and the devices customers click from.
CATEGORIES: tuple[str, ...] = (
    "electronics", "fashion", "home", "beauty", "sports", "books", "toys", "grocery",
)  # fmt: skip
DEVICES: tuple[str, ...] = ("mobile", "desktop", "tablet", "app")


@dataclass(frozen=True)
class Persona:
    """Parameters of one kind of customer (all counts are per customer over the whole period)."""

    name: str
    #: Fraction of the customers that get this persona.
    share: float
    #: Placed orders: ``orders_min + Poisson(orders_extra)``, capped at ``orders_max``.
    orders_min: int
    orders_extra: float
    orders_max: int
    #: Start of the active window (first order), as fractions of the period, counted back.
    first_ago: tuple[float, float]
    #: End of the active window (last order), as fractions of the period, counted back.
    last_ago: tuple[float, float]
    #: Median order value (currency units); per-customer and per-order spread is lognormal.
    aov: float
    #: Mean number of order lines (at least 1).
    lines: float
    #: Mean number of sessions without an order (browsing) over the active window.
    browse_sessions: float
    #: Probability that a browsing session puts something in the cart (an abandoned cart).
    cart_rate: float
    #: Mean product views per session beyond the products that end up in an order.
    extra_views: float
    #: Probability that a placed order is cancelled (within hours) / partly returned (days later).
    cancel_rate: float = 0.025
    return_rate: float = 0.035
    #: Weights over :data:`CATEGORIES` (what the persona buys and views; normalised when used;
    #: empty = uniform) and over :data:`DEVICES` (which device a customer mostly clicks from).
    categories: tuple[float, ...] = ()
    devices: tuple[float, ...] = ()
    #: Where this persona's own favourite skus start in every category, as a fraction of the
    #: category's range: a share of its lines and product views come from the few skus there
    #: (``producers.synthetic.SHELF_SHARE``), so what a segment buys differs from the shop's.
    shelf: float = 0.0

    @property
    def buys(self) -> bool:
        return self.orders_min + self.orders_extra > 0


#: The default population. Shares sum to 1. Orderings the tests check (medians per persona):
#: frequency champions > loyal > at_risk > churned, bargain_hunters > loyal;
#: AOV big_spenders > champions > loyal > bargain_hunters;
#: recency champions < loyal < at_risk < churned, new_customers < at_risk;
#: tenure new_customers < every other buyer; window_shoppers never order and browse the most.
PERSONAS: tuple[Persona, ...] = (
    Persona("champions", 0.10, 12, 6.0, 40, (0.75, 1.0), (0.0, 0.04), 150.0, 2.5, 5, 0.15, 2.0),
    Persona("loyal_regulars", 0.15, 6, 3.0, 20, (0.7, 1.0), (0.05, 0.16), 50.0, 1.6, 4, 0.15, 2.0),
    Persona("big_spenders", 0.08, 1, 1.5, 5, (0.4, 1.0), (0.0, 0.3), 800.0, 4.0, 3, 0.2, 4.0),
    Persona("bargain_hunters", 0.15, 8, 5.0, 30, (0.6, 1.0), (0.0, 0.1), 12.0, 1.2, 8, 0.25, 5.0),
    Persona("new_customers", 0.10, 1, 0.5, 2, (0.04, 0.14), (0.0, 0.04), 45.0, 1.3, 2, 0.2, 3.0),
    Persona("at_risk", 0.14, 4, 3.0, 15, (0.85, 1.0), (0.5, 0.78), 70.0, 1.5, 3, 0.15, 2.0),
    Persona("churned", 0.13, 1, 0.5, 2, (0.9, 1.0), (0.8, 0.9), 30.0, 1.1, 1, 0.1, 1.5),
    Persona("window_shoppers", 0.15, 0, 0.0, 0, (1.0, 1.0), (0.0, 0.0), 0.0, 0.0, 12, 0.5, 5.0),
)

#: Category preferences (weights over CATEGORIES) and device mix (over DEVICES) per persona.
_CATEGORY_WEIGHTS: dict[str, tuple[float, ...]] = {
    "champions": (3, 3, 2, 2, 1, 1, 1, 2),
    "loyal_regulars": (1, 2, 2, 2, 1, 2, 1, 4),
    "big_spenders": (6, 3, 3, 1, 1, 0.5, 0.5, 0.5),
    "bargain_hunters": (1, 3, 1, 2, 1, 2, 3, 4),
    "new_customers": (2, 3, 2, 2, 2, 1, 1, 1),
    "at_risk": (2, 2, 3, 1, 2, 2, 1, 1),
    "churned": (2, 2, 2, 2, 2, 2, 2, 2),
    "window_shoppers": (4, 4, 2, 3, 2, 1, 1, 0.5),
}
_DEVICE_WEIGHTS: dict[str, tuple[float, ...]] = {
    "champions": (4, 3, 1, 4),
    "loyal_regulars": (4, 3, 1, 3),
    "big_spenders": (2, 6, 2, 1),
    "bargain_hunters": (6, 2, 1, 3),
    "new_customers": (6, 2, 1, 1),
    "at_risk": (4, 4, 2, 1),
    "churned": (4, 5, 2, 0.5),
    "window_shoppers": (7, 2, 2, 1),
}
PERSONAS = tuple(
    replace(
        p,
        categories=_CATEGORY_WEIGHTS[p.name],
        devices=_DEVICE_WEIGHTS[p.name],
        shelf=(i + 0.5) / len(PERSONAS),  # each persona's shelf in a part of its own
    )
    for i, p in enumerate(PERSONAS)
)

PERSONA_NAMES: tuple[str, ...] = tuple(p.name for p in PERSONAS)


def persona_by_name(name: str) -> Persona:
    for persona in PERSONAS:
        if persona.name == name:
            return persona
    raise KeyError(name)
