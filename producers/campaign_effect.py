"""Simulated truth for campaign impact: the orders of a campaign window with a known effect.

After a synthetic history (:func:`producers.synthetic.generate`), :func:`window_orders` draws
what the assigned customers order during a campaign window, with a known **effect**: a treated
customer orders ``1 + effect`` times as often as they would have (``effect = 0.3``: 30 % more
often); a holdout customer orders as usual. The arm is the campaign's own
(:func:`worker.campaigns.model.arm_of`), so the simulated arms are the ones segstream assigns.

Same logic as the generator, per customer: their order rate is their placed orders over their
active window in the history (first to last order, at least :data:`MIN_ACTIVE_DAYS`), so a
frequent buyer stays frequent and a lapsed one rarely orders; orders in the window are a Poisson
process at that rate (times ``1 + effect`` when treated); basket values are lognormal around the
customer's own mean basket with the generator's per-order spread (0.4). A measured lift in
orders (or revenue) per customer should then recover ``effect`` (tests/unit/test_impact.py).

``span_ms`` may be shorter than ``days``: the demo plays a ``days``-long response compressed
into a few seconds of wall-clock time, so its orders carry current times (the schema refuses
future ones). Deterministic: the same data, campaign, customers and seed give the same orders.
This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from producers.synthetic import SyntheticData
from schemas import LineItem, OrderEvent
from worker.campaigns.model import TREATMENT, arm_of

__all__ = ["CampaignEffect", "customer_rates", "order_events", "window_orders"]

MS_PER_DAY = 86_400_000
#: The shortest active window a rate is computed over (a one-order customer is not "daily").
MIN_ACTIVE_DAYS = 14.0
#: Per-order lognormal spread of basket values (the generator's).
BASKET_SIGMA = 0.4


@dataclass(frozen=True)
class CampaignEffect:
    """A campaign window to simulate: who is treated (by ``campaign``'s arms) and how much more
    often they order (``effect``), over ``days`` of campaign time starting at ``start_ms``
    (played over ``span_ms`` of event time; 0 = ``days``)."""

    campaign: str
    holdout: float
    effect: float
    start_ms: int
    days: float = 30.0
    span_ms: int = 0

    def __post_init__(self) -> None:
        if self.effect <= -1.0:
            raise ValueError(f"effect must be above -1 (-100 %), got {self.effect}")
        if not 0.0 < self.holdout < 1.0:
            raise ValueError(f"holdout must be between 0 and 1, got {self.holdout}")
        if self.days <= 0:
            raise ValueError(f"days must be positive, got {self.days}")


def customer_rates(data: SyntheticData) -> tuple[np.ndarray, np.ndarray]:
    """Per customer (in ``data.customer_ids`` order): orders per day over their active window,
    and their mean placed basket (0 without orders)."""
    n = len(data.customer_ids)
    placed = data.o_status == 0
    cust = data.o_customer[placed]
    times = data.o_time[placed].astype(float)
    counts = np.bincount(cust, minlength=n).astype(float)
    first = np.full(n, np.inf)
    last = np.full(n, -np.inf)
    np.minimum.at(first, cust, times)
    np.maximum.at(last, cust, times)
    active = np.where(counts > 0, (last - first) / MS_PER_DAY, 0.0)
    rates = counts / np.maximum(active, MIN_ACTIVE_DAYS)
    totals = np.zeros(n)
    item_value = data.i_qty * data.i_price
    lo, hi = data.o_item_lo[placed], data.o_item_hi[placed]
    cum = np.concatenate([[0.0], np.cumsum(item_value)])
    np.add.at(totals, cust, cum[hi] - cum[lo])
    basket = np.where(counts > 0, totals / np.maximum(counts, 1), 0.0)
    return rates, basket


def window_orders(
    data: SyntheticData,
    effect: CampaignEffect,
    customers: Sequence[str],
    seed: int,
) -> pd.DataFrame:
    """The placed orders of ``customers`` in the campaign window: one row per order with
    customer_id, order_id, event_id, status, time_ms, total (the columns
    :func:`analytics.impact.outcomes` reads)."""
    rates, basket = customer_rates(data)
    index = {cid: i for i, cid in enumerate(data.customer_ids)}
    rows = np.array([index[c] for c in customers], dtype=np.int64)
    treated = np.array(
        [arm_of(effect.campaign, c, effect.holdout) == TREATMENT for c in customers], dtype=bool
    )
    rng = np.random.default_rng([seed, 2])
    mean = rates[rows] * effect.days * np.where(treated, 1.0 + effect.effect, 1.0)
    n_orders = rng.poisson(mean)
    who = np.repeat(np.arange(len(customers)), n_orders)
    span = effect.span_ms or int(effect.days * MS_PER_DAY)
    times = effect.start_ms + np.floor(rng.random(len(who)) * span).astype(np.int64)
    level = np.log(np.maximum(basket[rows[who]], 1.0))
    totals = np.round(np.exp(level + rng.normal(0.0, BASKET_SIGMA, len(who))), 2)
    totals = np.maximum(totals, 0.5)
    tag = f"{effect.campaign}-{seed}"
    ids = [f"{tag}-W{k}" for k in range(len(who))]
    return pd.DataFrame(
        {
            "customer_id": [customers[w] for w in who.tolist()],
            "order_id": ids,
            "event_id": [f"{i}-p" for i in ids],
            "status": "placed",
            "time_ms": times,
            "total": totals,
        }
    ).sort_values("time_ms", kind="stable", ignore_index=True)


def order_events(orders: pd.DataFrame, currency: str = "EUR") -> Iterator[OrderEvent]:
    """The rows of :func:`window_orders` as order events (one line each, for a topic)."""
    for row in orders.itertuples(index=False):
        yield OrderEvent(
            event_id=str(row.event_id),
            schema_version=1,
            customer_id=str(row.customer_id),
            order_id=str(row.order_id),
            event_time=datetime.fromtimestamp(int(row.time_ms) / 1000, UTC),
            status="placed",
            items=[LineItem(sku="SKU-CAMPAIGN", quantity=1, unit_price=float(row.total))],
            total=float(row.total),
            currency=currency,
        )
