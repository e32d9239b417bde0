"""The pure core: import purity, event deltas, features, and the in-memory oracle's semantics."""

from __future__ import annotations

import ast
import random
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import ClickEvent, LineItem, OrderEvent
from tests.support.synthetic import T0, batches, clicks, orders, pandas_rfm
from worker.core import (
    EXPORT_COLUMNS,
    Batch,
    CustomerState,
    InMemoryStateStore,
    Kind,
    Record,
    features,
    fingerprint,
    to_delta,
)
from worker.core.attributes import NO_ATTRIBUTES, SUMMARY_SLOTS
from worker.core.memory import SUMMARY_BYTES, bump_summary, canonical, encode_summary
from worker.core.rfm import DEVICES, HASH_FIELDS, MS_PER_DAY, NO_FINGERPRINT, SPEND, VIEWS

CORE = Path(__file__).resolve().parents[2] / "worker" / "core"
FORBIDDEN = {"kafka", "aiokafka", "confluent_kafka", "redis", "faust", "mode", "hiredis"}


def test_core_imports_neither_kafka_nor_redis_nor_faust():
    files = sorted(CORE.glob("*.py"))
    assert files
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
    # and nothing it imports transitively pulls them in either
    code = (
        "import sys, worker.core; "
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN)!r}); "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def _order(
    status: str, oid: str = "o1", total: float = 12.5, hours: int = 0, eid: str = ""
) -> OrderEvent:
    return OrderEvent(
        event_id=eid or f"{oid}-{status}", schema_version=1, customer_id="C1", order_id=oid,
        event_time=T0 + timedelta(hours=hours), status=status,  # type: ignore[arg-type]
        items=[LineItem(sku="S", quantity=1, unit_price=total)], total=total,
    )  # fmt: skip


def _click(
    kind: str, session: str = "s1", eid: str = "k1", customer: str | None = "C1"
) -> ClickEvent:
    return ClickEvent(
        event_id=eid, schema_version=1, session_id=session, event_time=T0, type=kind,  # type: ignore[arg-type]
        customer_id=customer, anonymous_id=None if customer else "anon",
        sku="S" if kind in ("product_view", "add_to_cart", "remove_from_cart") else None,
    )  # fmt: skip


def test_to_delta_maps_orders_by_order_id_and_others_by_event_id():
    placed = to_delta(_order("placed", eid="a"))
    again = to_delta(_order("placed", eid="b"))  # same order, another event id
    assert placed.kind is Kind.PLACED and placed.fp == again.fp
    assert (placed.amount_cents, placed.items) == (1250, 1)
    cancelled = to_delta(_order("cancelled"))
    assert cancelled.kind is Kind.CANCELLED and cancelled.fp != placed.fp
    r1, r2 = to_delta(_order("returned", eid="r1")), to_delta(_order("returned", eid="r2"))
    assert r1.kind is Kind.RETURNED and r1.fp != r2.fp  # two partial returns are two events
    atc, co = to_delta(_click("add_to_cart")), to_delta(_click("checkout_start", eid="k2"))
    assert atc.session_fp == co.session_fp == fingerprint(b"S", "s1")
    assert atc.marker_fp == co.partner_fp and co.marker_fp == atc.partner_fp
    assert to_delta(_click("page_view")).marker_fp == NO_FINGERPRINT
    assert to_delta(_click("search", customer=None)).customer_id is None
    assert len(fingerprint(b"E", "x")) == 8


def test_features_derive_recency_and_tenure_from_as_of():
    day = MS_PER_DAY
    first = int(T0.timestamp() * 1000)
    s = CustomerState("C1", frequency=2, monetary_cents=3001, items=3, first_order_ms=first,
                      last_order_ms=first + 10 * day, last_seen_ms=first + 11 * day,
                      page_views=3, product_views=1, cart_sessions=2,
                      cart_checkout_sessions=1)  # fmt: skip
    row = features(s, T0 + timedelta(days=40, hours=12))
    assert tuple(row) == EXPORT_COLUMNS
    assert row["recency_days"] == pytest.approx(30.5)
    assert row["tenure_days"] == pytest.approx(40.5)
    assert (row["monetary"], row["aov"]) == (30.01, pytest.approx(15.005))
    assert row["first_order_ts"] == "2024-01-01T00:00:00.000+00:00"
    assert row["abandoned_carts"] == 1 and row["views_per_order"] == 2.0
    # before the last order: clamped at 0, never negative
    assert features(s, T0)["recency_days"] == 0.0
    nobody = features(CustomerState("C2", page_views=4), T0)
    assert nobody["frequency"] == 0 and nobody["first_order_ts"] is None
    assert nobody["recency_days"] is None and nobody["aov"] == 0.0
    assert nobody["views_per_order"] == 4.0
    with pytest.raises(ValueError, match="UTC offset"):
        features(s, datetime(2024, 1, 1))


def test_from_hash_reads_redis_replies():
    raw = {b"f": b"3", b"m": b"-5", b"t0": b"17", b"segment": b"champions",
           b"segment_seq": b"4", b"fp": b"\x00" * 8}  # fmt: skip
    s = CustomerState.from_hash("C9", raw)
    assert (s.frequency, s.monetary_cents, s.first_order_ms, s.last_order_ms) == (3, -5, 17, None)
    assert (s.segment, s.segment_seq, s.model_version) == ("champions", 4, None)
    assert set(HASH_FIELDS.values()).isdisjoint({"segment", "model_version", "segment_seq", "fp"})


def test_oracle_equals_pandas_group_by():
    events = orders(n_customers=80, n_orders=1200, seed=2)
    random.Random(1).shuffle(events)
    mem = InMemoryStateStore()
    for b in batches(events, "o", size=97):
        mem.apply(b)
    want = pandas_rfm(events)
    got = {s.customer_id: s for s in mem.customers()}
    assert sorted(got) == sorted(want.index)
    for cid, row in want.iterrows():
        s = got[str(cid)]
        assert (s.frequency, s.monetary_cents) == (row["frequency"], row["monetary_cents"])
        assert (s.first_order_ms, s.last_order_ms) == (row["first_ms"], row["last_ms"])
        assert s.aov == pytest.approx(row["aov"])


def test_cart_abandonment_counts_sessions_whichever_event_comes_first():
    events = [
        _click("add_to_cart", "s1", "1"), _click("add_to_cart", "s1", "2"),
        _click("checkout_start", "s1", "3"),  # s1: cart reached checkout
        _click("checkout_start", "s2", "4"), _click("add_to_cart", "s2", "5"),  # s2: same, reversed
        _click("add_to_cart", "s3", "6"), _click("remove_from_cart", "s3", "7"),  # s3: abandoned
        _click("checkout_start", "s4", "8"),  # s4: checkout without cart: not a cart session
        _click("page_view", "s5", "9"),
    ]  # fmt: skip
    mem = InMemoryStateStore()
    mem.apply(batches(events, "c", size=100, partitions=1)[0])
    s = mem.get("C1")
    assert s is not None
    assert (s.sessions, s.add_to_carts, s.checkout_starts) == (5, 4, 3)
    assert (s.cart_sessions, s.cart_checkout_sessions, s.abandoned_carts) == (3, 2, 1)


def test_fence_skips_redelivery_and_dedup_skips_replay():
    events = [*orders(10, 50), *clicks(10, 20)]
    bs = batches(events, "t", size=30)
    mem = InMemoryStateStore()
    first = [mem.apply(b) for b in bs]
    state = {s.customer_id: s for s in mem.customers()}
    assert sum(r.applied for r in first) > 0
    assert all(mem.apply(b).applied == 0 for b in bs)  # same offsets: fenced
    assert all(mem.apply(b).applied == 0 for b in batches(events, "t", first_offset=10**6))
    assert {s.customer_id: s for s in mem.customers()} == state
    c = mem.counters()
    assert c["received"] == c["valid"] + c["dead_lettered"]
    assert c["fenced"] == len(events) and c["duplicates"] == c["fenced"] + c["deduped"]


def test_dead_letter_counts_are_fenced():
    mem = InMemoryStateStore()
    b = Batch([], {("t", 0): 9}, {("t", 0): 2})
    mem.apply(b)
    mem.apply(b)
    exact = Batch([], {("t", 0): 12}, {("t", 0): 2}, {("t", 0): [8, 11]})  # 8 is below the fence
    mem.apply(exact)
    assert mem.counters()["dead_lettered"] == 3
    assert mem.fences("t") == {0: 12}


def _states(store: InMemoryStateStore, summaries: bool = True) -> dict[str, CustomerState]:
    return {
        s.customer_id: s if summaries else replace(s, attributes=NO_ATTRIBUTES)
        for s in store.customers()
    }


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), size=st.integers(1, 60))
def test_state_is_independent_of_arrival_order_and_batch_cuts(seed: int, size: int):
    events = [*orders(6, 40, seed=seed), *clicks(6, 15, seed=seed + 1)]
    in_order = InMemoryStateStore()
    for b in batches(sorted(events, key=lambda e: e.event_time), "t", size=1000):
        in_order.apply(b)
    shuffled = list(events)
    random.Random(seed).shuffle(shuffled)
    other = InMemoryStateStore()
    for b in batches(shuffled, "t", size=size):
        other.apply(b)
    # the counters do not depend on arrival order; the summaries may (Space-Saving, and a
    # cancellation before its order takes nothing), but never on where batches are cut
    assert _states(other, summaries=False) == _states(in_order, summaries=False)
    whole = InMemoryStateStore()
    whole.apply(batches(shuffled, "t", size=10**6)[0])
    assert _states(other) == _states(whole)


def _labelled_order(
    status: str, oid: str, lines: list[tuple[str, float]], hours: int = 0, eid: str = ""
) -> OrderEvent:
    items = [LineItem(sku=f"S{k}", quantity=1, unit_price=p, category=c)
             for k, (c, p) in enumerate(lines)]  # fmt: skip
    return OrderEvent(
        event_id=eid or f"{oid}-{status}", schema_version=1, customer_id="C1", order_id=oid,
        event_time=T0 + timedelta(hours=hours), status=status,  # type: ignore[arg-type]
        items=items, total=round(sum(p for _, p in lines), 2),
    )  # fmt: skip


def test_to_delta_labels_spend_per_category_views_and_devices():
    placed = _labelled_order("placed", "o1", [("home", 10.0), ("toys", 2.5), ("home", 0.05)])
    assert to_delta(placed).labels == ((SPEND, "home", 1005), (SPEND, "toys", 250))
    back = _labelled_order("returned", "o1", [("toys", 2.5)], eid="r1")
    assert to_delta(back).labels == ((SPEND, "toys", -250),)
    view = ClickEvent(event_id="k", schema_version=1, session_id="s", event_time=T0,
                      type="product_view", customer_id="C1", sku="S", category="home",
                      device="app")  # fmt: skip
    assert to_delta(view).labels == ((VIEWS, "home", 1), (DEVICES, "app", 1))
    cart = ClickEvent(event_id="k", schema_version=1, session_id="s", event_time=T0,
                      type="add_to_cart", customer_id="C1", sku="S", category="home")  # fmt: skip
    assert to_delta(cart).labels == ()  # an add-to-cart's category is not summarised
    assert to_delta(_order("placed")).labels == () and to_delta(_click("page_view")).labels == ()


def test_summary_space_saving_replaces_the_smallest_pair_and_ties_go_by_name():
    summary: dict[str, int] = {}
    for name, n in [("a", 5), ("b", 3), ("c", 3), ("d", 9)]:
        bump_summary(summary, name, n)
    assert len(summary) == SUMMARY_SLOTS == 4
    bump_summary(summary, "e", 1)  # b and c tie at 3: c sorts last and gives its slot up
    assert canonical(summary) == (("d", 9), ("a", 5), ("e", 4), ("b", 3))
    bump_summary(summary, "b", 2)
    assert encode_summary(summary) == "d=9,a=5,b=5,e=4"


def test_summary_cancellations_take_from_a_pair_never_below_zero_and_never_create_one():
    summary = {"home": 500, "toys": 100}
    bump_summary(summary, "books", -300)  # nothing to take from
    bump_summary(summary, "home", -200)
    bump_summary(summary, "toys", -250)  # more than it holds: the pair goes
    assert summary == {"home": 300}


def test_summary_drops_its_smallest_pairs_until_it_fits_the_listpack_value_limit():
    summary: dict[str, int] = {}
    long = "x" * 32
    bump_summary(summary, long, 10**9)
    bump_summary(summary, "home", 10**8)
    bump_summary(summary, "toys", 10**7)  # 'x..=1000000000,home=100000000,toys=10000000': 72 bytes
    assert len(encode_summary(summary).encode()) <= SUMMARY_BYTES
    assert canonical(summary) == ((long, 10**9), ("home", 10**8))
    bump_summary(summary, "é" * 32, 1)  # 64 bytes of name alone never fits
    assert "é" * 32 not in summary


def test_oracle_summaries_ignore_duplicates_and_apply_cancellations():
    mem = InMemoryStateStore()
    placed = _labelled_order("placed", "o1", [("home", 10.0), ("toys", 2.5)])
    again = _labelled_order("placed", "o1", [("home", 10.0), ("toys", 2.5)], eid="again")
    cancel_first = _labelled_order("cancelled", "o2", [("books", 4.0)], hours=1)
    mem.apply(Batch([Record("t", 0, i, e) for i, e in enumerate([placed, again, cancel_first])]))
    mem.apply(Batch([Record("t", 0, 1, again)]))  # fenced
    state = mem.get("C1")
    assert state is not None
    assert state.attributes.spend_by_category == (("home", 1000), ("toys", 250))
    assert state.attributes.favourite_category == "home"


def test_records_and_batches_are_frozen():
    r = Record("t", 0, 1, _order("placed"))
    with pytest.raises(AttributeError):
        r.offset = 2  # type: ignore[misc]
    assert Batch([r]).partitions() == {("t", 0): 1}
    assert datetime.now(UTC) > T0


def test_the_state_script_uses_the_summary_bounds_and_codes_of_the_core():
    from worker.core.rfm import SUMMARY_BY_CODE

    text = (CORE.parent / "state" / "apply.lua").read_text()
    assert f"local SLOTS, SUMMARY_BYTES = {SUMMARY_SLOTS}, {SUMMARY_BYTES}\n" in text
    fields = ", ".join(f"'{SUMMARY_BY_CODE[code]}'" for code in sorted(SUMMARY_BY_CODE))
    assert f"local SUMMARY_FIELD = {{{fields}}}\n" in text
    assert sorted(SUMMARY_BY_CODE) == [1, 2, 3]
