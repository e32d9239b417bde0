"""Synthetic generator: same seed same bytes, event-time order, valid events, distinct personas."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from producers.personas import PERSONA_NAMES, PERSONAS
from producers.synthetic import SyntheticConfig, default_start, generate
from schemas import ClickEvent, OrderEvent, decode_click, decode_order

START = datetime(2025, 6, 1, tzinfo=UTC)


def _config(**kw: object) -> SyntheticConfig:
    values: dict[str, object] = {"customers": 400, "days": 180, "seed": 11, "start": START}
    values.update(kw)
    return SyntheticConfig(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def population() -> tuple[SyntheticConfig, list[OrderEvent | ClickEvent], dict[str, str]]:
    config = _config(customers=3000, seed=5)
    data = generate(config)
    return config, list(data.events()), data.labels


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    first = list(generate(_config()).records())
    again = list(generate(_config()).records())
    assert first == again
    assert list(generate(_config(seed=12)).records()) != first
    later = list(generate(_config(start=START + timedelta(days=1))).records())
    assert later != first
    ids = {v.split(b'"event_id":"')[1].split(b'"')[0] for _, _, v in first}
    later_ids = {v.split(b'"event_id":"')[1].split(b'"')[0] for _, _, v in later}
    assert not ids & later_ids  # two different runs never share an event id


def test_events_are_valid_ordered_and_inside_the_period() -> None:
    config = _config()
    data = generate(config)
    events = list(data.events())
    assert len(events) == len(data) == data.n_orders + data.n_clicks
    times = [e.event_time_ms for e in events]
    assert times == sorted(times)
    assert config.start_ms - 60_000 <= times[0] and times[-1] < config.end_ms
    for kind, key, value in data.records():
        event = decode_order(value) if kind == "order" else decode_click(value)
        assert key == event.customer_id.encode()  # type: ignore[union-attr]
    assert len({e.event_id for e in events}) == len(events)
    assert set(data.labels) == {e.customer_id for e in events if e.customer_id} | {
        c for c, p in data.labels.items() if p == "window_shoppers"
    }


def test_labels_file_and_persona_shares(tmp_path: Path) -> None:
    data = generate(_config(customers=1000))
    path = data.write_labels(tmp_path / "labels.csv")
    labels = pd.read_csv(path)
    assert list(labels.columns) == ["customer_id", "persona"]
    assert len(labels) == 1000 and labels.customer_id.is_unique
    counts = labels.persona.value_counts()
    for persona in PERSONAS:
        assert abs(counts[persona.name] - persona.share * 1000) <= 1


def test_cancellations_and_returns_are_two_to_eight_percent(
    population: tuple[SyntheticConfig, list[OrderEvent | ClickEvent], dict[str, str]],
) -> None:
    _, events, _ = population
    orders = [e for e in events if isinstance(e, OrderEvent)]
    placed = {e.order_id: e for e in orders if e.status == "placed"}
    undo = [e for e in orders if e.status != "placed"]
    assert 0.02 <= len(undo) / len(placed) <= 0.08
    for event in undo:
        original = placed[event.order_id]  # undoes an order that exists
        assert event.customer_id == original.customer_id
        assert event.event_time > original.event_time
        assert event.total <= original.total + 0.005


def test_every_order_follows_a_checkout_session(
    population: tuple[SyntheticConfig, list[OrderEvent | ClickEvent], dict[str, str]],
) -> None:
    _, events, _ = population
    last_checkout: dict[str, int] = {}
    carts: dict[str, set[str]] = defaultdict(set)
    session_of: dict[str, str] = {}
    for event in events:
        if isinstance(event, ClickEvent):
            assert event.customer_id is not None
            if event.type == "checkout_start":
                last_checkout[event.customer_id] = event.event_time_ms
                session_of[event.customer_id] = event.session_id
            if event.type == "add_to_cart":
                carts[event.session_id].add(event.sku or "")
        elif event.status == "placed":
            started = last_checkout.get(event.customer_id)
            assert started is not None and 0 < event.event_time_ms - started < 3_600_000
            skus = {item.sku for item in event.items}
            assert skus <= carts[session_of[event.customer_id]]


def _features(
    config: SyntheticConfig, events: list[OrderEvent | ClickEvent], labels: dict[str, str]
) -> pd.DataFrame:
    """The export contract's main features, by pandas, as of the period's end."""
    orders = pd.DataFrame(
        [(e.customer_id, e.order_id, e.status, e.event_time_ms, e.total)
         for e in events if isinstance(e, OrderEvent)],
        columns=["customer_id", "order_id", "status", "t", "total"],
    )  # fmt: skip
    clicks = pd.DataFrame(
        [(e.customer_id, e.session_id, e.type) for e in events if isinstance(e, ClickEvent)],
        columns=["customer_id", "session_id", "type"],
    )
    placed = orders[orders.status == "placed"]
    cancelled = orders[orders.status == "cancelled"]
    frame = pd.DataFrame(index=pd.Index(sorted(labels), name="customer_id"))
    frame["persona"] = pd.Series(labels)
    frame["frequency"] = (
        placed.groupby("customer_id").order_id.nunique()
        .sub(cancelled.groupby("customer_id").order_id.nunique(), fill_value=0)
    )  # fmt: skip
    sign = np.where(orders.status == "placed", 1.0, -1.0)
    frame["monetary"] = (orders.total * sign).groupby(orders.customer_id).sum()
    frame = frame.fillna({"frequency": 0, "monetary": 0.0})
    frame["aov"] = np.where(frame.frequency > 0, frame.monetary / frame.frequency.clip(lower=1), 0)
    day = 86_400_000
    frame["recency"] = (config.end_ms - placed.groupby("customer_id").t.max()) / day
    frame["tenure"] = (config.end_ms - placed.groupby("customer_id").t.min()) / day
    frame["sessions"] = clicks.groupby("customer_id").session_id.nunique()
    views = clicks[clicks.type.isin(["page_view", "product_view"])].groupby("customer_id").size()
    frame["views_per_order"] = views / frame.frequency.clip(lower=1)
    cart = set(
        map(tuple, clicks[clicks.type == "add_to_cart"][["customer_id", "session_id"]].values)
    )
    chk = set(
        map(tuple, clicks[clicks.type == "checkout_start"][["customer_id", "session_id"]].values)
    )
    abandoned = pd.Series([c for c, _ in cart - chk], dtype=object).value_counts()
    frame["abandoned_carts"] = abandoned.reindex(frame.index).fillna(0)
    return frame


def test_persona_medians_are_ordered_as_their_definitions_say(
    population: tuple[SyntheticConfig, list[OrderEvent | ClickEvent], dict[str, str]],
) -> None:
    config, events, labels = population
    med = _features(config, events, labels).groupby("persona").median(numeric_only=True)
    f, aov, rec, ten = med.frequency, med.aov, med.recency, med.tenure
    # frequency: champions buy most often, then loyal regulars, then at-risk, then churned
    assert f.champions > f.loyal_regulars > f.at_risk > f.churned >= 1
    assert f.bargain_hunters > f.loyal_regulars
    assert f.big_spenders <= 3 and f.new_customers <= 2 and f.window_shoppers == 0
    # basket value
    assert aov.big_spenders > aov.champions > aov.loyal_regulars > aov.bargain_hunters
    assert aov.big_spenders > 4 * aov.champions and aov.bargain_hunters < 20
    # recency (days since the last order)
    assert rec.champions < rec.loyal_regulars < rec.at_risk < rec.churned
    assert rec.new_customers < 14 and 90 <= rec.at_risk <= 150 and rec.churned > 140
    # tenure: new customers are new
    buyers = [p for p in PERSONA_NAMES if p not in ("new_customers", "window_shoppers")]
    assert all(ten.new_customers * 3 < ten[p] for p in buyers)
    # behaviour: window shoppers browse and abandon carts the most, per order
    assert (
        med.views_per_order.window_shoppers > 3 * med.views_per_order.drop("window_shoppers").max()
    )
    assert med.abandoned_carts.window_shoppers == med.abandoned_carts.max()
    assert med.monetary.champions == med.monetary.max()


@pytest.mark.slow
def test_personas_are_separable_by_kmeans(
    population: tuple[SyntheticConfig, list[OrderEvent | ClickEvent], dict[str, str]],
) -> None:
    """The segmentation team's target: ARI >= 0.8 on log-standardised contract features."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score
    from sklearn.preprocessing import StandardScaler

    config, events, labels = population
    frame = _features(config, events, labels).fillna({"recency": 365.0, "tenure": 0.0})
    columns = ["frequency", "monetary", "aov", "recency", "tenure", "sessions",
               "views_per_order", "abandoned_carts"]  # fmt: skip
    x = StandardScaler().fit_transform(np.log1p(frame[columns].clip(lower=0).fillna(0)))
    found = KMeans(n_clusters=len(PERSONAS), n_init=4, random_state=0).fit_predict(x)
    assert adjusted_rand_score(frame.persona, found) >= 0.8


def test_generation_is_fast_and_scales() -> None:
    import time

    started = time.perf_counter()
    data = generate(_config(customers=20_000, days=180, seed=1))
    elapsed = time.perf_counter() - started
    assert elapsed < 15, f"20k customers x 180 days took {elapsed:.1f}s to draw"
    assert data.n_orders > 20_000 * 3


def test_config_checks_and_default_start() -> None:
    with pytest.raises(ValueError, match="timezone"):
        _config(start=datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="customers"):
        _config(customers=0)
    now = datetime(2026, 3, 10, 15, 45, tzinfo=UTC)
    assert default_start(30, now) == datetime(2026, 2, 8, tzinfo=UTC)


def test_short_periods_still_generate_valid_events() -> None:
    data = generate(_config(customers=300, days=7))
    events = list(data.events())
    assert events and all(e.event_time_ms < data.config.end_ms for e in events)


def test_skus_keep_one_category_and_personas_their_category_and_device_preferences(
    population: tuple[SyntheticConfig, list[OrderEvent | ClickEvent], dict[str, str]],
) -> None:
    from producers.personas import CATEGORIES, DEVICES
    from producers.synthetic import catalogue

    _, events, labels = population
    owner = {sku: name for name, skus in catalogue().items() for sku in skus}
    assert set(catalogue()) == set(CATEGORIES) and len(owner) == 2000
    spend: dict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
    devices: dict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
    for e in events:
        if isinstance(e, OrderEvent):
            for item in e.items:
                assert item.category == owner[item.sku]  # one category per sku, always
                if e.status == "placed":
                    spend[labels[e.customer_id]][item.category] += item.quantity * item.unit_price
        else:
            assert e.device in DEVICES
            product = e.type in ("product_view", "add_to_cart")
            assert (e.category is not None) == product
            if product:
                assert e.category == owner[e.sku or ""]
            devices[labels[e.customer_id or ""]][e.device or ""] += 1
    # the personas' weights show: big spenders buy electronics most, bargain hunters groceries;
    # window shoppers click from mobiles most, big spenders from desktops
    assert max(spend["big_spenders"], key=spend["big_spenders"].__getitem__) == "electronics"
    assert max(spend["bargain_hunters"], key=spend["bargain_hunters"].__getitem__) == "grocery"
    assert max(devices["window_shoppers"], key=devices["window_shoppers"].__getitem__) == "mobile"
    assert max(devices["big_spenders"], key=devices["big_spenders"].__getitem__) == "desktop"
