"""The Redis state store against a real Redis: exactness, idempotence, order-independence.

Each test writes under its own key prefix (``redis_prefix`` fixture) on the session's Redis and
compares with the pandas group-by and with the in-memory oracle of :mod:`worker.core`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

import pytest

from tests.support.synthetic import T0, batches, clicks, orders, pandas_rfm
from worker.core import Batch, CustomerState, InMemoryStateStore, Record
from worker.core.attributes import NO_ATTRIBUTES, SUMMARY_SLOTS
from worker.core.rfm import MS_PER_DAY
from worker.state import StateReader, StateStore, keys

pytestmark = pytest.mark.integration


def apply_all(url: str, prefix: str, bs: Sequence[Batch], **kw: int) -> list[object]:
    async def run() -> list[object]:
        store = StateStore(url, prefix, **kw)
        try:
            return [await store.apply(b) for b in bs]
        finally:
            await store.close()

    return asyncio.run(run())


def snapshot(url: str, prefix: str) -> dict[str, CustomerState]:
    with StateReader(url, prefix) as reader:
        return {s.customer_id: s for s in reader.customers(page=100)}


def oracle(bs: Sequence[Batch], **kw: int) -> InMemoryStateStore:
    mem = InMemoryStateStore(**kw)
    for b in bs:
        mem.apply(b)
    return mem


def states(mem: InMemoryStateStore) -> dict[str, CustomerState]:
    return {s.customer_id: s for s in mem.customers()}


def without_summaries(got: dict[str, CustomerState]) -> dict[str, CustomerState]:
    return {cid: replace(s, attributes=NO_ATTRIBUTES) for cid, s in got.items()}


def test_export_equals_pandas_group_by(redis_url: str, redis_prefix: str, redis_client: object):
    events = orders(n_customers=300, n_orders=4000)
    rng = random.Random(3)
    rng.shuffle(events)  # arrival order is not event-time order
    apply_all(redis_url, redis_prefix, batches(events, "orders", size=700))
    got = snapshot(redis_url, redis_prefix)
    want = pandas_rfm(events)
    assert sorted(got) == sorted(want.index)
    for cid, row in want.iterrows():
        s = got[str(cid)]
        assert s.frequency == row["frequency"], cid
        assert s.monetary_cents == row["monetary_cents"], cid
        assert s.first_order_ms == row["first_ms"], cid
        assert s.last_order_ms == row["last_ms"], cid
        assert s.aov == pytest.approx(row["aov"], abs=1e-9), cid
    assert (want["frequency"] < want["placed"]).any()  # the data do contain cancellations


def test_state_equals_oracle_including_clicks(
    redis_url: str, redis_prefix: str, redis_client: object
):
    events = [*orders(200, 1500), *clicks(260, 800)]
    random.Random(5).shuffle(events)
    bs = batches(events, "in", size=400)
    results = apply_all(redis_url, redis_prefix, bs)
    mem = oracle(bs)
    got = snapshot(redis_url, redis_prefix)
    want = {s.customer_id: s for s in mem.customers()}
    assert got == want
    assert sum(r.applied for r in results) == mem.counters()["applied"]  # type: ignore[attr-defined]
    with StateReader(redis_url, redis_prefix) as reader:
        assert reader.counters() == mem.counters()
        assert reader.dirty() == mem.dirty
        assert reader.fences("in") == mem.fences("in")
    # the data exercise every path: clicks-only customers, abandoned carts, fingerprints in keys
    assert any(s.frequency == 0 and s.sessions > 0 for s in got.values())
    assert any(s.abandoned_carts > 0 for s in got.values())
    assert any(s.cart_checkout_sessions > 0 for s in got.values())
    assert mem.counters()["anonymous"] > 0
    fp_keys = list(redis_client.scan_iter(match=f"{redis_prefix}:f:*"))  # type: ignore[attr-defined]
    assert 0 < len(fp_keys) < len(got)  # some customers outgrew the in-hash fingerprints
    # and every summary rule: full summaries, a name of 32 characters, one not ASCII, pairs
    # dropped to stay within 64 bytes, devices
    summaries = [s.attributes.spend_by_category for s in got.values()]
    summaries += [s.attributes.views_by_category for s in got.values()]
    assert any(len(p) == SUMMARY_SLOTS for p in summaries)
    names = {name for p in summaries for name, _ in p}
    assert {"garden-and-outdoor-living-supply", "épicerie", "Home", "home"} <= names
    assert any(len(p) < SUMMARY_SLOTS and any(len(n) == 32 for n, _ in p) for p in summaries)
    assert any(s.attributes.clicks_by_device for s in got.values())


def test_same_batches_twice_leave_state_unchanged(
    redis_url: str, redis_prefix: str, redis_client: object
):
    bs = batches([*orders(100, 1000), *clicks(100, 300)], "in", size=300)
    apply_all(redis_url, redis_prefix, bs)
    before = snapshot(redis_url, redis_prefix)
    with StateReader(redis_url, redis_prefix) as reader:
        counters_before = reader.counters()
    again = apply_all(redis_url, redis_prefix, bs)  # redelivery: same offsets
    assert all(r.applied == 0 and not r.changed for r in again)  # type: ignore[attr-defined]
    assert snapshot(redis_url, redis_prefix) == before
    with StateReader(redis_url, redis_prefix) as reader:
        after = reader.counters()
    n = sum(len(b.records) for b in bs)
    assert after["fenced"] - counters_before["fenced"] == n
    assert after["applied"] == counters_before["applied"]
    assert after["received"] == counters_before["received"]


def test_replay_with_new_offsets_leaves_state_unchanged(
    redis_url: str, redis_prefix: str, redis_client: object
):
    events = [*orders(100, 1000), *clicks(100, 300)]
    apply_all(redis_url, redis_prefix, batches(events, "in", size=300))
    before = snapshot(redis_url, redis_prefix)
    # ops replay the same file: same event ids, new offsets past the fence, other batch cuts
    replay = batches(events, "in", size=170, first_offset=100_000)
    results = apply_all(redis_url, redis_prefix, replay)
    assert sum(r.applied for r in results) == 0  # type: ignore[attr-defined]
    known = [e for e in events if e.customer_id is not None]  # anonymous clicks have no state
    assert sum(r.duplicates for r in results) == len(known)  # type: ignore[attr-defined]
    assert snapshot(redis_url, redis_prefix) == before


def test_shuffled_order_gives_in_order_state(
    redis_url: str, redis_prefix: str, redis_client: object
):
    events = sorted([*orders(150, 1500), *clicks(150, 500)], key=lambda e: e.event_time)
    shuffled = list(events)
    random.Random(9).shuffle(shuffled)
    apply_all(redis_url, f"{redis_prefix}:a", batches(events, "in", size=250))
    apply_all(redis_url, f"{redis_prefix}:b", batches(shuffled, "in", size=333))
    a = snapshot(redis_url, f"{redis_prefix}:a")
    b = snapshot(redis_url, f"{redis_prefix}:b")
    assert a and without_summaries(a) == without_summaries(b)
    # the summaries depend on arrival order (Space-Saving; a cancellation before its order
    # takes nothing): each order gives the oracle's, whatever the batch cuts
    assert a == states(oracle(batches(events, "in", size=10**6)))
    assert b == states(oracle(batches(shuffled, "in", size=10**6)))
    assert a != b  # the data are rich enough for the order to matter


def test_cancellations_and_returns_net_out(redis_url: str, redis_prefix: str, redis_client: object):
    from schemas import LineItem, OrderEvent

    items = [LineItem(sku="A", quantity=2, unit_price=10.05)]
    one = [LineItem(sku="A", quantity=1, unit_price=10.05)]

    def ev(eid: str, oid: str, status: str, its: list[LineItem], total: float, h: int):
        return OrderEvent(event_id=eid, schema_version=1, customer_id="X", order_id=oid,
                          event_time=T0 + timedelta(hours=h), status=status,  # type: ignore[arg-type]
                          items=its, total=total)  # fmt: skip

    events = [
        ev("1", "o1", "placed", items, 20.10, 0),
        ev("2", "o2", "placed", items, 20.10, 5),
        ev("3", "o2", "cancelled", items, 20.10, 6),
        ev("4", "o1", "returned", one, 10.05, 30),
        ev("5", "o3", "cancelled", items, 20.10, 50),  # cancel arrives before its order
        ev("6", "o3", "placed", items, 20.10, 40),
        ev("7", "o1", "placed", items, 20.10, 0),  # same order placed twice: counts once
    ]
    apply_all(redis_url, redis_prefix, batches(events, "o", size=3))
    with StateReader(redis_url, redis_prefix) as reader:
        s = reader.get("X")
        assert reader.get("nobody") is None
    assert s is not None
    assert (s.frequency, s.monetary_cents, s.items) == (1, 1005, 1)
    assert s.aov == pytest.approx(10.05)
    assert s.first_order_ms == int(T0.timestamp() * 1000)
    assert s.last_order_ms == int((T0 + timedelta(hours=40)).timestamp() * 1000)
    assert s.last_seen_ms == int((T0 + timedelta(hours=50)).timestamp() * 1000)


def test_counters_add_up_with_dead_letters_and_a_straddling_redelivery(
    redis_url: str, redis_prefix: str, redis_client: object
):
    events = [*orders(50, 300), *clicks(50, 100)]
    recs = [r for b in batches(events, "in", size=10_000, partitions=1) for r in b.records]
    # every 10th offset is a rejected record: it has an offset, no event
    dead = [r.offset for r in recs if r.offset % 10 == 0]
    valid = [r for r in recs if r.offset % 10 != 0]

    def batch(lo: int, hi: int) -> Batch:
        return Batch(
            [r for r in valid if lo <= r.offset < hi],
            {("in", 0): hi - 1},
            {("in", 0): sum(1 for o in dead if lo <= o < hi)},
            {("in", 0): [o for o in dead if lo <= o < hi]},
        )

    n = len(recs)
    first = [batch(0, n // 2)]
    # crash after the first write; the redelivery starts earlier and cuts batches elsewhere
    second = [batch(n // 4, 3 * n // 4), batch(3 * n // 4, n)]
    apply_all(redis_url, redis_prefix, [*first, *second])
    mem = oracle([*first, *second])
    with StateReader(redis_url, redis_prefix) as reader:
        c = reader.counters()
        assert c == mem.counters()
        assert reader.fences("in") == {0: n - 1}
    assert c["received"] == c["valid"] + c["dead_lettered"] == n
    assert c["dead_lettered"] == len(dead)
    assert c["valid"] == c["applied"] + c["deduped"] + c["anonymous"]
    assert c["duplicates"] == c["fenced"] + c["deduped"]
    assert c["fenced"] == n // 2 - n // 4


def test_sweep_finds_exactly_the_customers_crossing(
    redis_url: str, redis_prefix: str, redis_client: object
):
    events = orders(300, 2000, seed=21)
    apply_all(redis_url, redis_prefix, batches(events, "o"))
    want = pandas_rfm(events)
    last = want["last_ms"].astype(int)
    since = int(last.median()) + 30 * MS_PER_DAY
    until = since + 7 * MS_PER_DAY
    expected = {str(cid) for cid, ms in last.items() if since < ms + 30 * MS_PER_DAY <= until}
    with StateReader(redis_url, redis_prefix) as reader:
        found = reader.customers_crossing(30, since, until)
    assert len(found) == len(set(found))
    assert set(found) == expected and len(expected) > 3
    mem = oracle(batches(events, "o"))
    assert found == mem.customers_crossing(30, since, until)
    # a customer whose last order moved to a later hour left its old bucket: no stale entries
    buckets = list(redis_client.scan_iter(match=keys.last_order_pattern(redis_prefix)))  # type: ignore[attr-defined]
    assert sum(redis_client.zcard(b) for b in buckets) == len(want) < len(events)  # type: ignore[attr-defined]
    # a window before any order, and an empty window, find nobody
    with StateReader(redis_url, redis_prefix) as reader:
        assert reader.customers_crossing(30, 0, 10**9) == []
        assert reader.customers_crossing(30, until, until) == []


def test_bounded_fingerprints_match_the_oracle(
    redis_url: str, redis_prefix: str, redis_client: object
):
    events = [*orders(20, 600), *clicks(20, 200)]
    bs = batches(events, "in", size=100)
    apply_all(redis_url, redis_prefix, bs, max_fingerprints=16)
    mem = oracle(bs, max_fingerprints=16)
    assert snapshot(redis_url, redis_prefix) == {s.customer_id: s for s in mem.customers()}
    fp = redis_client.get(keys.fingerprints(redis_prefix, "C00000"))  # type: ignore[attr-defined]
    assert fp is not None and len(fp) == 16 * 8


def test_apply_is_atomic_per_batch_and_reports_changed_in_first_seen_order(
    redis_url: str, redis_prefix: str, redis_client: object
):
    events = orders(30, 60)
    (b,) = batches(events, "o", size=1000, partitions=1)
    (result,) = apply_all(redis_url, redis_prefix, [b])
    first_seen = list(dict.fromkeys(e.customer_id for e in events))
    assert result.changed == first_seen  # type: ignore[attr-defined]
    # a batch that carries only a dead letter still moves the fence and counts it
    only_dead = Batch([], {("o", 0): 500}, {("o", 0): 1})
    apply_all(redis_url, redis_prefix, [only_dead, only_dead])
    with StateReader(redis_url, redis_prefix) as reader:
        assert reader.fences("o") == {0: 500}
        assert reader.counters()["dead_lettered"] == 1
    # Record/Batch are the frozen contract types
    with pytest.raises(AttributeError):
        replace(b.records[0], offset=1).offset = 2  # type: ignore[misc]
    assert isinstance(b.records[0], Record)


def test_summaries_are_written_exactly_once_with_the_oracles_rule(
    redis_url: str, redis_prefix: str, redis_client: object
):
    from schemas import ClickEvent, LineItem, OrderEvent

    def order(eid: str, oid: str, status: str, lines: list[tuple[str, float]], h: int):
        items = [LineItem(sku=f"S{k}", quantity=1, unit_price=p, category=c)
                 for k, (c, p) in enumerate(lines)]  # fmt: skip
        return OrderEvent(event_id=eid, schema_version=1, customer_id="X", order_id=oid,
                          event_time=T0 + timedelta(hours=h), status=status,  # type: ignore[arg-type]
                          items=items, total=round(sum(p for _, p in lines), 2))  # fmt: skip

    def view(eid: str, category: str | None, device: str | None) -> ClickEvent:
        return ClickEvent(event_id=eid, schema_version=1, session_id="s", event_time=T0,
                          type="product_view", customer_id="X", sku="S", category=category,
                          device=device)  # fmt: skip

    events = [
        order("1", "o1", "cancelled", [("books", 4.0)], 1),  # before its order: takes nothing
        order("2", "o1", "placed", [("books", 4.0), ("toys", 1.5)], 0),
        order("3", "o2", "placed", [("home", 2.0), ("Home", 2.0), ("épicerie", 9.0)], 2),
        order("4", "o3", "placed", [("zz", 1.0)], 3),  # slots full: Home/home tie at 200
        order("5", "o2", "returned", [("épicerie", 20.0)], 4),  # more than it holds
        view("v1", "home", "app"),
        view("v2", "home", None),
        view("v3", None, "mobile"),
        view("v4", "x" * 32, "app"),
    ]
    bs = batches(events, "in", size=3, partitions=1)
    apply_all(redis_url, redis_prefix, bs)
    # the same events again: fenced, then replayed with new offsets (deduplicated)
    apply_all(redis_url, redis_prefix, bs)
    apply_all(redis_url, redis_prefix, batches(events, "in", size=4, partitions=1, first_offset=99))
    raw = redis_client.hmget(keys.customer(redis_prefix, "X"), "ks", "kv", "kd")  # type: ignore[attr-defined]
    # books 400, toys 150, home 200, Home 200 fill the slots; épicerie replaces toys (150 + 900);
    # zz replaces home (the Home/home tie: 'home' sorts last byte by byte) at 200 + 100; the
    # return takes all of épicerie's 1050; views and devices count one per click
    mem = oracle(bs)
    state = mem.get("X")
    assert state is not None
    want = tuple(
        ",".join(f"{n}={c}" for n, c in pairs)
        for pairs in (
            state.attributes.spend_by_category,
            state.attributes.views_by_category,
            state.attributes.clicks_by_device,
        )
    )
    assert tuple(v.decode() for v in raw) == want
    assert want == ("books=400,zz=300,Home=200", "home=2," + "x" * 32 + "=1", "app=2,mobile=1")
