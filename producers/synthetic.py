"""Synthetic customers with known personas: orders and clickstream in event-time order.

Over 400 lines: one seeded generator for orders and clicks, kept whole so each persona reads as one.

``generate(SyntheticConfig(...))`` draws the whole history with vectorised numpy from one seeded
``Generator`` and returns a :class:`SyntheticData` holding columns; events are built lazily, in
event-time order, by :meth:`SyntheticData.events` (model objects) or :meth:`SyntheticData.records`
(encoded bytes, what the Kafka and file sinks take). The ground truth is
:attr:`SyntheticData.labels` (customer id -> persona).

Shapes: order times follow a renewal process with gamma gaps in *warped* time, where the warp is
the cumulative intensity of a daily cycle (quiet nights, lunch and evening peaks) times a weekly
one (busier weekends), so gaps are skewed and the cycles show. Basket values are lognormal around
the persona's median (a per-customer level plus per-order noise). Every placed order is preceded
by a session (page view, maybe a search, product views, one add-to-cart per line, checkout start);
browsing sessions without an order add views and abandoned carts. 2-8 % of orders are cancelled
(within hours) or partly returned (days later). Every sku belongs to one category of a fixed
catalogue (:func:`catalogue`); each customer has a favourite category drawn from their persona's
preferences and half their lines and product views fall in it, the rest follow the persona's
weights; each customer mostly clicks from one device of the persona's mix (80 % of sessions).
Categories and devices are drawn from a second generator, so every other value is what it was
before they existed.

Determinism: the same config (seed, customers, days, start, personas) gives the same events,
the same ids and the same bytes. Nothing reads the wall clock except :func:`default_start`, which
the CLI calls only when ``--start`` is not given. Ids carry a short tag of the config, so two
different runs never share an event or order id.

This module does no I/O except :meth:`SyntheticData.write_labels`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from producers.ids import short_tag
from producers.personas import CATEGORIES, DEVICES, PERSONAS, Persona
from schemas import ClickEvent, LineItem, OrderEvent, encode

MS_PER_HOUR = 3_600_000
MS_PER_DAY = 86_400_000
N_SKUS = 2000
#: The catalogue: skus ``[k * SKUS_PER_CATEGORY, (k + 1) * SKUS_PER_CATEGORY)`` are in
#: ``CATEGORIES[k]``; within a category, low numbers are the popular ones, and each persona has
#: a shelf of favourites of its own (``SHELF_SHARE``).
SKUS_PER_CATEGORY = N_SKUS // len(CATEGORIES)
#: Share of a customer's lines and product views in their favourite category; of their
#: sessions on their main device.
FAVOURITE_SHARE = 0.5
MAIN_DEVICE_SHARE = 0.8
#: Share of a customer's lines and product views taken from their persona's shelf: the
#: ``SHELF_SKUS`` skus from ``Persona.shelf`` on, in the chosen category (low ranks favoured).
SHELF_SHARE = 0.5
SHELF_SKUS = 20
#: Relative intensity per hour of day (UTC): quiet nights, a lunch bump, an evening peak.
HOUR_WEIGHTS = np.array(
    [0.25, 0.15, 0.1, 0.08, 0.08, 0.12, 0.3, 0.55, 0.8, 0.9, 1.0, 1.1,
     1.3, 1.2, 1.0, 0.95, 1.0, 1.1, 1.3, 1.6, 1.8, 1.6, 1.1, 0.6]
)  # fmt: skip
#: Relative intensity per weekday, Monday first: weekends are busier.
WEEKDAY_WEIGHTS = np.array([1.0, 0.95, 0.95, 1.0, 1.05, 1.25, 1.35])
SEARCH_WORDS = ("shoes", "jacket", "gift", "sale", "lamp", "mug", "bag", "dress", "toy", "tea")
#: Click type codes (column ``c_type``), in the order they happen within a session.
CLICK_TYPES = ("page_view", "search", "product_view", "add_to_cart", "checkout_start")
PV, SEARCH, PRODUCT_VIEW, ADD_TO_CART, CHECKOUT = range(5)
STATUS = ("placed", "cancelled", "returned")


def default_start(days: int, now: datetime | None = None) -> datetime:
    """Today's midnight (UTC) minus ``days``: the generated period then ends at today's midnight."""
    now = now or datetime.now(UTC)
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - timedelta(days=days)


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate. ``start`` must be timezone-aware (it is converted to UTC)."""

    customers: int
    days: int
    seed: int
    start: datetime
    personas: tuple[Persona, ...] = PERSONAS
    currency: str = "EUR"

    def __post_init__(self) -> None:
        if self.customers < 1:
            raise ValueError(f"customers must be at least 1, got {self.customers}")
        if self.days < 1:
            raise ValueError(f"days must be at least 1, got {self.days}")
        if self.start.tzinfo is None:
            raise ValueError("start must carry a timezone (e.g. 2024-01-01T00:00:00+00:00)")
        total = sum(p.share for p in self.personas)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"persona shares must sum to 1, got {total}")

    @property
    def start_ms(self) -> int:
        return int(self.start.astimezone(UTC).timestamp() * 1000)

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.days * MS_PER_DAY

    @property
    def tag(self) -> str:
        """A short stable tag of this config, put into every id."""
        personas = [(p.name, p.share) for p in self.personas]
        return short_tag(self.seed, self.customers, self.days, self.start_ms, personas)


@dataclass
class SyntheticData:
    """Generated columns; events are materialised lazily in event-time order."""

    config: SyntheticConfig
    customer_ids: list[str]
    personas: list[str]
    # orders (placed, cancelled, returned), one row per order event
    o_customer: np.ndarray
    o_time: np.ndarray
    o_status: np.ndarray
    o_order: np.ndarray  # index of the placed order this event is about
    o_item_lo: np.ndarray  # items of this event: item rows [lo, hi)
    o_item_hi: np.ndarray
    # order lines
    i_sku: np.ndarray
    i_qty: np.ndarray
    i_price: np.ndarray
    # clicks
    c_customer: np.ndarray
    c_time: np.ndarray
    c_type: np.ndarray
    c_session: np.ndarray
    c_sku: np.ndarray
    c_word: np.ndarray
    c_device: np.ndarray  # index into DEVICES
    _order: np.ndarray | None = field(default=None, repr=False)

    @property
    def labels(self) -> dict[str, str]:
        """Ground truth: customer id -> persona name."""
        return dict(zip(self.customer_ids, self.personas, strict=True))

    @property
    def n_orders(self) -> int:
        """Order events (placed + cancelled + returned)."""
        return len(self.o_time)

    @property
    def n_clicks(self) -> int:
        return len(self.c_time)

    def __len__(self) -> int:
        return self.n_orders + self.n_clicks

    def _merged_order(self) -> np.ndarray:
        """Indices into orders (>= 0) and clicks (encoded as -1 - i), sorted by event time.

        Ties are broken by kind (orders after the clicks that led to them) and generation index,
        so the order is total and reproducible.
        """
        if self._order is None:
            times = np.concatenate([self.c_time, self.o_time])
            kind = np.concatenate(
                [np.zeros(self.n_clicks, np.int8), np.ones(self.n_orders, np.int8)]
            )
            idx = np.concatenate([-1 - np.arange(self.n_clicks), np.arange(self.n_orders)]).astype(
                np.int64
            )
            position = np.concatenate([np.arange(self.n_clicks), np.arange(self.n_orders)])
            self._order = idx[np.lexsort((position, kind, times))]
        return self._order

    def events(self) -> Iterator[OrderEvent | ClickEvent]:
        """Every event, in event-time order."""
        tag = self.config.tag
        currency = self.config.currency
        cust = self.customer_ids
        o_customer, o_time = self.o_customer.tolist(), self.o_time.tolist()
        o_status, o_order = self.o_status.tolist(), self.o_order.tolist()
        o_lo, o_hi = self.o_item_lo.tolist(), self.o_item_hi.tolist()
        i_sku, i_qty, i_price = self.i_sku.tolist(), self.i_qty.tolist(), self.i_price.tolist()
        c_customer, c_time, c_type = (
            self.c_customer.tolist(),
            self.c_time.tolist(),
            self.c_type.tolist(),
        )
        c_session, c_sku, c_word = (
            self.c_session.tolist(),
            self.c_sku.tolist(),
            self.c_word.tolist(),
        )
        c_device = self.c_device.tolist()
        fromts = datetime.fromtimestamp
        for j in self._merged_order().tolist():
            if j >= 0:
                items = [
                    LineItem(
                        sku=_sku(i_sku[k]),
                        quantity=i_qty[k],
                        unit_price=i_price[k],
                        category=category_of_sku(i_sku[k]),
                    )
                    for k in range(o_lo[j], o_hi[j])
                ]
                total_cents = sum(
                    round(i_qty[k] * i_price[k] * 100) for k in range(o_lo[j], o_hi[j])
                )
                yield OrderEvent(
                    event_id=f"{tag}-o{j}",
                    schema_version=1,
                    customer_id=cust[o_customer[j]],
                    order_id=f"{tag}-O{o_order[j]}",
                    event_time=fromts(o_time[j] / 1000, UTC),
                    status=STATUS[o_status[j]],  # type: ignore[arg-type]
                    items=items,
                    total=total_cents / 100,
                    currency=currency,
                )
            else:
                j = -1 - j
                kind = c_type[j]
                product = kind in (PRODUCT_VIEW, ADD_TO_CART)
                yield ClickEvent(
                    event_id=f"{tag}-c{j}",
                    schema_version=1,
                    session_id=f"{tag}-s{c_session[j]}",
                    event_time=fromts(c_time[j] / 1000, UTC),
                    type=CLICK_TYPES[kind],  # type: ignore[arg-type]
                    customer_id=cust[c_customer[j]],
                    sku=_sku(c_sku[j]) if product else None,
                    query=SEARCH_WORDS[c_word[j]] if kind == SEARCH else None,
                    category=category_of_sku(c_sku[j]) if product else None,
                    device=DEVICES[c_device[j]],
                )

    def records(self) -> Iterator[tuple[str, bytes, bytes]]:
        """``(kind, key, value)`` per event in event-time order; kind is "order" or "click"."""
        for event in self.events():
            key = (event.customer_id or "").encode()
            yield event.kind, key, encode(event)

    def write_labels(self, path: str | Path) -> Path:
        """The ground truth as CSV: ``customer_id,persona``."""
        path = Path(path)
        with path.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(("customer_id", "persona"))
            writer.writerows(zip(self.customer_ids, self.personas, strict=True))
        return path


def _sku(index: int) -> str:
    return f"SKU-{index:05d}"


def category_of_sku(index: int) -> str:
    """The category of sku number ``index`` (``SKU-<index>``)."""
    return CATEGORIES[index // SKUS_PER_CATEGORY]


def catalogue() -> dict[str, tuple[str, ...]]:
    """Category -> its skus, the fixed catalogue every synthetic run draws from."""
    return {
        name: tuple(_sku(k * SKUS_PER_CATEGORY + i) for i in range(SKUS_PER_CATEGORY))
        for k, name in enumerate(CATEGORIES)
    }


def generate(config: SyntheticConfig) -> SyntheticData:
    """Draw the whole synthetic history for ``config`` (vectorised; seconds for 20k x 180 days)."""
    rng = np.random.default_rng(config.seed)
    n = config.customers
    personas = config.personas

    # -- who is who: exact shares, shuffled over customer ids --------------------------------
    counts = np.floor(np.array([p.share for p in personas]) * n).astype(np.int64)
    remainder = n - counts.sum()
    order_by_fraction = np.argsort(-(np.array([p.share for p in personas]) * n - counts))
    counts[order_by_fraction[:remainder]] += 1
    persona_of = rng.permutation(np.repeat(np.arange(len(personas)), counts))
    width = max(6, len(str(n)))
    customer_ids = [f"C{i:0{width}d}" for i in range(1, n + 1)]

    warp = _Warp(config)
    p_attr = _persona_arrays(personas)

    # -- placed orders: count, window, times ---------------------------------------------------
    pa = {k: v[persona_of] for k, v in p_attr.items()}
    n_orders = pa["orders_min"] + rng.poisson(pa["orders_extra"])
    n_orders = np.minimum(n_orders, pa["orders_max"]).astype(np.int64)
    first_ago = rng.uniform(pa["first_lo"], pa["first_hi"])
    last_ago = np.minimum(rng.uniform(pa["last_lo"], pa["last_hi"]), first_ago)
    w_first = warp.at_days_ago(first_ago)
    w_last = warp.at_days_ago(last_ago)

    order_cust = np.repeat(np.arange(n), n_orders)
    total_orders = len(order_cust)
    starts = np.cumsum(n_orders) - n_orders
    k = np.arange(total_orders) - np.repeat(starts, n_orders)
    gaps = rng.gamma(1.5, size=total_orders)
    gaps[k == 0] = 0.0
    cum = np.cumsum(gaps)
    cum -= np.repeat(cum[starts[n_orders > 0]] - gaps[starts[n_orders > 0]], n_orders[n_orders > 0])
    last_of = starts + n_orders - 1
    span = np.zeros(n)
    span[n_orders > 0] = cum[last_of[n_orders > 0]]
    span_o = span[order_cust]
    single = span_o <= 0
    frac = np.where(single, rng.random(total_orders), cum / np.where(single, 1.0, span_o))
    w_o = w_first[order_cust] + frac * (w_last[order_cust] - w_first[order_cust])
    o_time = warp.to_ms(w_o)

    # -- baskets -------------------------------------------------------------------------------
    level = np.log(np.maximum(pa["aov"], 1e-9)) + rng.normal(0.0, 0.2, n)
    value = np.exp(level[order_cust] + rng.normal(0.0, 0.4, total_orders))
    lines = 1 + rng.poisson(np.maximum(pa["lines"][order_cust] - 1.0, 0.0))
    item_order = np.repeat(np.arange(total_orders), lines)
    n_items = len(item_order)
    qty = 1 + rng.poisson(0.25, n_items)
    weight = rng.gamma(2.0, size=n_items)
    weight /= np.bincount(item_order, weight, total_orders)[item_order]
    price = np.maximum(np.round(value[item_order] * weight / qty, 2), 0.5)
    sku_rank = rng.random(n_items)  # popularity within the category, chosen at the end
    item_lo = np.cumsum(lines) - lines

    # -- cancellations (within hours) and partial returns (days later) -------------------------
    cancel = rng.random(total_orders) < pa["cancel_rate"][order_cust]
    returned = ~cancel & (rng.random(total_orders) < pa["return_rate"][order_cust])
    cancel_time = o_time + rng.integers(5 * 60_000, 3 * MS_PER_HOUR, total_orders)
    return_time = o_time + rng.integers(2 * MS_PER_DAY, 20 * MS_PER_DAY, total_orders)
    cancel &= cancel_time < config.end_ms
    returned &= return_time < config.end_ms
    ci, ri = np.flatnonzero(cancel), np.flatnonzero(returned)
    o_all_order = np.concatenate([np.arange(total_orders), ci, ri])
    o_all = dict(
        customer=order_cust[o_all_order],
        time=np.concatenate([o_time, cancel_time[ci], return_time[ri]]),
        status=np.concatenate(
            [
                np.zeros(total_orders, np.int8),
                np.full(len(ci), 1, np.int8),
                np.full(len(ri), 2, np.int8),
            ]
        ),
        lo=np.concatenate([item_lo, item_lo[ci], item_lo[ri]]),
        # a cancellation undoes the whole order, a return sends back the first line
        hi=np.concatenate([item_lo + lines, item_lo[ci] + lines[ci], item_lo[ri] + 1]),
    )

    # -- sessions: one before each placed order, plus browsing sessions ------------------------
    browse_n = rng.poisson(pa["browse_sessions"])
    browse_cust = np.repeat(np.arange(n), browse_n)
    # browsing happens over the active window, stretched to "now" for customers still active
    b_first = w_first[browse_cust]
    still_active = pa["last_hi"][browse_cust] <= 0.3
    b_last = np.where(
        still_active, warp.at_days_ago(np.zeros(len(browse_cust))), w_last[browse_cust]
    )
    b_time = warp.to_ms(b_first + rng.random(len(browse_cust)) * (b_last - b_first))
    n_sess = total_orders + len(browse_cust)
    s_cust = np.concatenate([order_cust, browse_cust])
    s_is_order = np.concatenate([np.ones(total_orders, bool), np.zeros(len(browse_cust), bool)])
    s_end = np.concatenate([o_time - 1000, b_time])
    s_len = np.where(
        s_is_order,
        rng.integers(4 * 60_000, 30 * 60_000, n_sess),
        rng.integers(2 * 60_000, 20 * 60_000, n_sess),
    )
    s_start = np.maximum(s_end - s_len, config.start_ms)
    s_lines = np.concatenate([lines, np.zeros(len(browse_cust), np.int64)])
    s_search = rng.random(n_sess) < 0.3
    extra = np.concatenate([pa["extra_views"][order_cust], pa["extra_views"][browse_cust]])
    s_views = s_lines + rng.poisson(extra) + (~s_is_order)  # a browse session views >= 1 product
    b_cart = rng.random(len(browse_cust)) < pa["cart_rate"][browse_cust]
    s_carts = np.concatenate([lines, b_cart * (1 + (rng.random(len(browse_cust)) < 0.3))])
    s_checkout = s_is_order.astype(np.int64)
    per_type = np.stack(
        [np.ones(n_sess, np.int64), s_search.astype(np.int64), s_views, s_carts, s_checkout],
        axis=1,
    )
    c_session = np.repeat(np.arange(n_sess), per_type.sum(axis=1))
    c_type = np.repeat(np.tile(np.arange(5, dtype=np.int8), n_sess), per_type.ravel())
    n_clicks = len(c_session)
    sess_first = np.cumsum(per_type.sum(axis=1)) - per_type.sum(axis=1)
    # rank of each click within its (session, type) run
    type_first = np.cumsum(per_type.ravel()) - per_type.ravel()
    rank = np.arange(n_clicks) - np.repeat(type_first, per_type.ravel())
    # times: sorted uniform offsets within the session, assigned in canonical type order
    u = rng.random(n_clicks)
    u = u[np.lexsort((u, c_session))]
    c_time = (s_start[c_session] + u * (s_end - s_start)[c_session]).astype(np.int64)
    del sess_first
    c_sku_rank = rng.random(n_clicks)
    c_word = rng.integers(0, len(SEARCH_WORDS), n_clicks).astype(np.int8)

    # -- categories and devices: a second generator, so every draw above stays as it was -------
    crng = np.random.default_rng([config.seed, 1])
    cat_w = _mix(personas, "categories", len(CATEGORIES))
    dev_w = _mix(personas, "devices", len(DEVICES))
    favourite = _draw(crng, cat_w[persona_of])
    main_device = _draw(crng, dev_w[persona_of])

    def categories(cust: np.ndarray) -> np.ndarray:
        mine = crng.random(len(cust)) < FAVOURITE_SHARE
        return np.where(mine, favourite[cust], _draw(crng, cat_w[persona_of[cust]]))

    # each persona's own favourites: a third generator, so the draws above stay as they were
    srng = np.random.default_rng([config.seed, 2])
    shelf_start = (np.array([p.shelf for p in personas]) * SKUS_PER_CATEGORY).astype(np.int64)

    def skus(category: np.ndarray, rank_u: np.ndarray, cust: np.ndarray) -> np.ndarray:
        within = np.floor(SKUS_PER_CATEGORY * rank_u**2).astype(np.int64)
        shelf = srng.random(len(cust)) < SHELF_SHARE
        own = shelf_start[persona_of[cust]] + np.floor(SHELF_SKUS * rank_u**2).astype(np.int64)
        within = np.where(shelf, own % SKUS_PER_CATEGORY, within)
        out: np.ndarray = category * SKUS_PER_CATEGORY + within
        return out

    sku = skus(categories(order_cust[item_order]), sku_rank, order_cust[item_order])
    c_cust = s_cust[c_session]
    c_sku = skus(categories(c_cust), c_sku_rank, c_cust)
    # an order session views and carts exactly its order's lines first
    in_order = s_is_order[c_session] & ((c_type == PRODUCT_VIEW) | (c_type == ADD_TO_CART))
    in_order &= rank < s_lines[c_session]
    session_order_lo = np.concatenate([item_lo, np.zeros(len(browse_cust), np.int64)])
    c_sku[in_order] = sku[session_order_lo[c_session[in_order]] + rank[in_order]]
    main = crng.random(n_sess) < MAIN_DEVICE_SHARE
    s_device = np.where(main, main_device[s_cust], _draw(crng, dev_w[persona_of[s_cust]]))

    return SyntheticData(
        config=config,
        customer_ids=customer_ids,
        personas=[personas[i].name for i in persona_of],
        o_customer=o_all["customer"],
        o_time=o_all["time"].astype(np.int64),
        o_status=o_all["status"],
        o_order=o_all_order,
        o_item_lo=o_all["lo"],
        o_item_hi=o_all["hi"],
        i_sku=sku,
        i_qty=qty,
        i_price=price,
        c_customer=c_cust,
        c_time=c_time,
        c_type=c_type,
        c_session=c_session,
        c_sku=c_sku,
        c_word=c_word,
        c_device=s_device[c_session].astype(np.int8),
    )


def _mix(personas: tuple[Persona, ...], attr: str, size: int) -> np.ndarray:
    """Per persona, its weights over ``size`` names (``attr``), normalised; empty = uniform."""
    rows = [getattr(p, attr) or (1.0,) * size for p in personas]
    for p, row in zip(personas, rows, strict=True):
        if len(row) != size:
            raise ValueError(f"persona {p.name}: {attr} needs {size} weights, got {len(row)}")
    weights = np.array(rows, dtype=float)
    out: np.ndarray = weights / weights.sum(axis=1, keepdims=True)
    return out


def _draw(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One index per row of ``probs`` (rows sum to 1), vectorised."""
    if len(probs) == 0:
        return np.zeros(0, np.int64)
    u = rng.random((len(probs), 1))
    picked: np.ndarray = (probs.cumsum(axis=1) < u).sum(axis=1)
    out: np.ndarray = np.minimum(picked, probs.shape[1] - 1).astype(np.int64)
    return out


def _persona_arrays(personas: tuple[Persona, ...]) -> dict[str, np.ndarray]:
    def col(get: object) -> np.ndarray:
        return np.array([get(p) for p in personas], dtype=float)  # type: ignore[operator]

    return {
        "orders_min": col(lambda p: p.orders_min).astype(np.int64),
        "orders_extra": col(lambda p: p.orders_extra),
        "orders_max": col(lambda p: p.orders_max).astype(np.int64),
        "first_lo": col(lambda p: p.first_ago[0]),
        "first_hi": col(lambda p: p.first_ago[1]),
        "last_lo": col(lambda p: p.last_ago[0]),
        "last_hi": col(lambda p: p.last_ago[1]),
        "aov": col(lambda p: p.aov),
        "lines": col(lambda p: p.lines),
        "browse_sessions": col(lambda p: p.browse_sessions),
        "cart_rate": col(lambda p: p.cart_rate),
        "extra_views": col(lambda p: p.extra_views),
        "cancel_rate": col(lambda p: p.cancel_rate),
        "return_rate": col(lambda p: p.return_rate),
    }


class _Warp:
    """Maps real time to cumulative intensity ("warped time") and back, on an hourly grid."""

    def __init__(self, config: SyntheticConfig) -> None:
        self.config = config
        hours = config.days * 24
        start = config.start.astimezone(UTC)
        hour_of_day = (start.hour + np.arange(hours)) % 24
        day_index = (start.hour + np.arange(hours)) // 24
        weekday = (start.weekday() + day_index) % 7
        intensity = HOUR_WEIGHTS[hour_of_day] * WEEKDAY_WEIGHTS[weekday]
        self.grid = np.concatenate([[0.0], np.cumsum(intensity)])
        self.hours = np.arange(hours + 1, dtype=float)

    def at_days_ago(self, days_ago_fraction: np.ndarray) -> np.ndarray:
        """Warped time at ``fraction * days`` before the period's end."""
        hours = (1.0 - np.asarray(days_ago_fraction)) * self.config.days * 24
        warped: np.ndarray = np.interp(hours, self.hours, self.grid)
        return warped

    def to_ms(self, warped: np.ndarray) -> np.ndarray:
        hours = np.interp(warped, self.grid, self.hours)
        ms = self.config.start_ms + np.round(hours * MS_PER_HOUR).astype(np.int64)
        clipped: np.ndarray = np.minimum(ms, self.config.end_ms - 1)
        return clipped
