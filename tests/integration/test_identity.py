"""Identity merge against the real Redis (single and cluster) and, end to end, a real worker.

The state store with its identity stage (``IdentityStateStore``) applies the clicks as ingestion
does, batch by batch; the customers read back from Redis must equal the oracle
(:func:`worker.identity.model.expected`) whatever the order the link and the anonymous clicks
arrive in, after a replay with new offsets, after a crash between ``anon.lua`` and the merge
(and between the merge and the outbox ``HDEL``), and with a conflicting identify. Forgetting a
customer removes the links that point to them.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from schemas import ClickEvent, encode
from segstream.settings import RedisSettings, Settings
from tests.support.modes import MODES, on_redis
from tests.support.producing import produce
from tests.support.state_checks import wait_received
from tests.support.waiting import wait_for
from tests.support.worker_process import WorkerProcess
from worker.connect import keyspace, sync_redis
from worker.core.batch import Batch, Record
from worker.erase.store import ForgetStore
from worker.identity import keys
from worker.identity.model import behaviour, expected
from worker.identity.records import Limits, anon_calls
from worker.identity.store import IdentityStateStore
from worker.state import keys as state_keys
from worker.state.reader import StateReader

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


@pytest.fixture(autouse=True)
def _remove_keys_afterwards(redis_client: object) -> None:
    """``redis_client`` deletes every key under this test's prefix when the test ends."""


@pytest.fixture(params=MODES)
def redis(request: pytest.FixtureRequest, redis_url: str) -> RedisSettings:
    """The session's single Redis, or its 3-primary cluster (16 shards)."""
    if request.param == "single":
        return RedisSettings(url=redis_url)
    cluster = request.getfixturevalue("redis_cluster")
    return RedisSettings(url=cluster.url, cluster=True)


# -- events --------------------------------------------------------------------------------------
def click(
    eid: str,
    kind: str = "page_view",
    *,
    anon: str | None = None,
    cid: str | None = None,
    session: str = "s1",
    minute: int = 0,
) -> ClickEvent:
    return ClickEvent(
        event_id=eid, schema_version=1, session_id=session,
        event_time=NOW - timedelta(minutes=60 - minute), type=kind,  # type: ignore[arg-type]
        customer_id=cid, anonymous_id=anon,
        sku="sku-1" if kind in ("product_view", "add_to_cart") else None,
    )  # fmt: skip


def identify(eid: str, anon: str, cid: str, session: str = "s1", minute: int = 0) -> ClickEvent:
    return click(eid, "identify", anon=anon, cid=cid, session=session, minute=minute)


#: A visitor (A1) browsing in two sessions, a cart in s1 that reaches checkout as the customer,
#: a later anonymous click on the same device, a second visitor of the same customer (A3), and
#: a visitor (A2) never identified.
STREAM: tuple[ClickEvent, ...] = (
    click("a1", anon="A1", session="s1", minute=1),
    click("a2", "product_view", anon="A1", session="s1", minute=2),
    click("a3", "add_to_cart", anon="A1", session="s1", minute=3),
    click("a4", anon="A1", session="s2", minute=4),
    identify("i1", "A1", "C1", session="s1", minute=5),
    click("c1", "checkout_start", cid="C1", session="s1", minute=6),
    click("a5", "search", anon="A1", session="s3", minute=7),
    click("a6", anon="A2", session="s9", minute=8),
    click("a7", "add_to_cart", anon="A3", session="s7", minute=9),
    identify("i2", "A3", "C1", session="s7", minute=10),
    click("c2", cid="C2", session="s5", minute=11),
)


def batches(events: Sequence[ClickEvent], first_offset: int, size: int) -> list[Batch]:
    """``events`` on partition 0 of topic ``clicks`` from ``first_offset``, ``size`` a batch."""
    records = [Record("clicks", 0, first_offset + i, e) for i, e in enumerate(events)]
    out = []
    for i in range(0, len(records), size):
        part = records[i : i + size]
        out.append(Batch(part, {("clicks", 0): part[-1].offset}))
    return out


def apply(redis: RedisSettings, prefix: str, bs: Sequence[Batch]) -> list[object]:
    async def run() -> list[object]:
        store = IdentityStateStore(redis, prefix)
        try:
            return [await store.apply(b) for b in bs]
        finally:
            await store.close()

    return asyncio.run(run())


async def state_only(store: IdentityStateStore, batch: Batch) -> None:
    """The state script's part of an apply alone (the process dies right after it)."""
    await store.state.apply(batch)


def got(redis: RedisSettings, prefix: str) -> dict[str, tuple[int | None, ...]]:
    with StateReader(redis, prefix) as reader:
        return {s.customer_id: behaviour(s) for s in reader.customers()}


def want(events: Sequence[ClickEvent]) -> dict[str, tuple[int | None, ...]]:
    return {cid: behaviour(s) for cid, s in expected(events).items()}


def identity_counters(redis: RedisSettings, prefix: str) -> dict[str, int]:
    client = sync_redis(redis)
    names = list(keys.COUNTER_NAMES)
    total = dict.fromkeys(names, 0)
    try:
        for space in keyspace(redis, prefix).spaces:
            values = client.hmget(state_keys.counters(space), names)
            for name, v in zip(names, values, strict=True):
                total[name] += int(v or 0)
    finally:
        client.close()
    return total


def outbox_size(redis: RedisSettings, prefix: str) -> int:
    client = sync_redis(redis)
    try:
        return sum(int(client.hlen(keys.outbox(s))) for s in keyspace(redis, prefix).spaces)
    finally:
        client.close()


# -- tests ---------------------------------------------------------------------------------------
def test_every_arrival_order_of_link_and_anonymous_clicks_gives_the_oracles_customers(
    redis: RedisSettings, redis_prefix: str
) -> None:
    expect = want(STREAM)
    assert set(expect) == {"C1", "C2"}
    c1 = expect["C1"]
    # sessions s1, s2, s3, s7 (s1 seen under both ids counts once), 1+1+1 page/product views,
    # carts in s1 and s7, of which s1 reached checkout
    assert c1[:7] == (4, 2, 1, 2, 1, 2, 1), c1
    ids = [e.event_id for e in STREAM]
    links = {"i1", "i2"}
    orders: list[list[ClickEvent]] = [
        sorted(STREAM, key=lambda e: e.event_id not in links),  # links first
        sorted(STREAM, key=lambda e: e.event_id in links),  # links last
        list(STREAM),  # links between
        list(reversed(STREAM)),
    ]
    rng = random.Random(7)
    for _ in range(4):
        shuffled = list(STREAM)
        rng.shuffle(shuffled)
        orders.append(shuffled)
    for n, order in enumerate(orders):
        prefix = f"{redis_prefix}-o{n}"
        apply(redis, prefix, batches(order, 0, size=1 + n % 4))
        assert got(redis, prefix) == expect, [e.event_id for e in order]
        assert outbox_size(redis, prefix) == 0
        assert sorted(ids) == sorted(e.event_id for e in order)


def test_a_replay_of_the_whole_stream_with_new_offsets_changes_nothing(
    redis: RedisSettings, redis_prefix: str
) -> None:
    apply(redis, redis_prefix, batches(STREAM, 0, size=3))
    before = got(redis, redis_prefix)
    assert before == want(STREAM)
    again = list(STREAM)
    random.Random(3).shuffle(again)
    apply(redis, redis_prefix, batches(again, 100, size=2))  # new offsets, same events
    apply(redis, redis_prefix, batches(STREAM, 0, size=5))  # redelivery: fenced
    assert got(redis, redis_prefix) == before
    counted = identity_counters(redis, redis_prefix)
    assert counted["identity_links"] == 2 and counted["identify_conflicts"] == 0
    assert counted["identity_fenced"] == 9  # the 9 anonymous and identify clicks, redelivered


def test_a_worker_killed_between_transfer_and_merge_ends_exact_after_the_drain(
    redis: RedisSettings, redis_prefix: str
) -> None:
    bs = batches(STREAM, 0, size=4)

    async def crash_then_restart() -> None:
        store = IdentityStateStore(redis, redis_prefix)
        try:
            for b in bs:  # the state applied and anon.lua run, the process dies before merging
                await state_only(store, b)
                await store.identity.take(anon_calls(b, store.identity.keyspace, Limits()))
            assert outbox_size(redis, redis_prefix) > 0
            assert got(redis, redis_prefix)["C1"] != want(STREAM)["C1"]
            for b in bs:  # the restarted worker is given the same batches: all fenced
                await store.apply(b)
            await store.identity.drain()  # what OutboxDrain does at start
        finally:
            await store.close()

    asyncio.run(crash_then_restart())
    assert got(redis, redis_prefix) == want(STREAM)
    assert outbox_size(redis, redis_prefix) == 0


def test_a_merge_whose_outbox_delete_was_lost_is_not_counted_twice(
    redis: RedisSettings, redis_prefix: str
) -> None:
    async def run() -> None:
        store = IdentityStateStore(redis, redis_prefix)
        client = sync_redis(redis)
        try:
            for b in batches(STREAM, 0, size=4):
                await state_only(store, b)
                _, transfers = await store.identity.take(
                    anon_calls(b, store.identity.keyspace, Limits())
                )
                await store.identity.merge(transfers)  # merged and deleted from the outbox...
                for t in transfers:  # ...but the delete is undone: as if it never happened
                    client.hset(keys.outbox(t.space), t.id, t.value)
            assert outbox_size(redis, redis_prefix) > 0
            done = await store.identity.drain()
            assert done.transfers > 0 and not done.changed  # merged again: nothing changed
        finally:
            client.close()
            await store.close()

    asyncio.run(run())
    assert got(redis, redis_prefix) == want(STREAM)
    counted = identity_counters(redis, redis_prefix)
    assert counted["identity_merge_duplicates"] > 0


def test_later_clicks_of_a_linked_visitor_count_for_the_customer(
    redis: RedisSettings, redis_prefix: str
) -> None:
    first = [click("a1", anon="A1", session="s1"), identify("i1", "A1", "C1", session="s1")]
    apply(redis, redis_prefix, batches(first, 0, size=2))
    later = [
        click("a2", "add_to_cart", anon="A1", session="s2", minute=20),
        click("a3", "checkout_start", anon="A1", session="s2", minute=21),
    ]
    apply(redis, redis_prefix, batches(later, 2, size=1))
    assert got(redis, redis_prefix) == want(first + later)
    assert got(redis, redis_prefix)["C1"][:7] == (2, 1, 0, 1, 1, 1, 1)
    counted = identity_counters(redis, redis_prefix)
    assert counted["anonymous_forwarded"] == 2 and counted["anonymous_kept"] == 1


def test_an_identify_naming_another_customer_is_counted_and_not_applied(
    redis: RedisSettings, redis_prefix: str
) -> None:
    events = [
        click("a1", "add_to_cart", anon="A1", session="s1"),
        identify("i1", "A1", "C1", session="s1", minute=1),
        identify("i2", "A1", "C2", session="s2", minute=2),  # the first link wins
        click("a2", anon="A1", session="s3", minute=3),
    ]
    apply(redis, redis_prefix, batches(events, 0, size=1))
    assert got(redis, redis_prefix) == want(events)
    assert got(redis, redis_prefix)["C2"][:7] == (1, 0, 0, 0, 0, 0, 0)  # its identify only
    assert identity_counters(redis, redis_prefix)["identify_conflicts"] == 1


def test_an_unlinked_visitor_is_kept_with_a_ttl_and_bounded(
    redis: RedisSettings, redis_prefix: str
) -> None:
    events = [click(f"a{i}", anon="A9", session=f"s{i % 2}", minute=i) for i in range(5)]

    async def run() -> None:
        limits = Limits(max_events=3, anonymous_ttl_ms=60_000, link_ttl_ms=120_000)
        store = IdentityStateStore(redis, redis_prefix, limits)
        try:
            for b in batches(events, 0, size=2):
                await store.apply(b)
        finally:
            await store.close()

    asyncio.run(run())
    client = sync_redis(redis)
    try:
        key = keys.anonymous(keyspace(redis, redis_prefix).space_of("A9"), "A9")
        assert 0 < client.pttl(key) <= 60_000
        assert len(client.hget(key, "e") or b"") == 3 * 8  # the bound: 3 events kept
        assert int(client.hget(key, "s") or 0) == 2
    finally:
        client.close()
    counted = identity_counters(redis, redis_prefix)
    assert (counted["anonymous_kept"], counted["anonymous_dropped"]) == (3, 2)
    assert got(redis, redis_prefix) == {}  # nobody: the visitor is not linked


def test_forgetting_a_customer_removes_the_links_to_them_and_an_old_identify_replayed_does_not_link_again(  # noqa: E501
    redis: RedisSettings, redis_prefix: str
) -> None:
    apply(redis, redis_prefix, batches(STREAM, 0, size=3))
    ks = keyspace(redis, redis_prefix)
    client = sync_redis(redis)

    def linked(anon: str) -> bytes | None:
        return client.get(keys.link(ks.space_of(anon), anon))  # type: ignore[return-value]

    async def forget() -> None:
        store = ForgetStore(redis, redis_prefix, suppress_days=1)
        try:
            await store.forget("C1")
        finally:
            await store.close()

    try:
        assert linked("A1") == b"C1" and linked("A3") == b"C1"
        asyncio.run(forget())
        assert linked("A1") is None and linked("A3") is None
        assert not client.exists(keys.linked(ks.space_of("C1"), "C1"))
        apply(redis, redis_prefix, batches(STREAM, 100, size=4))  # the old stream replayed
        assert "C1" not in got(redis, redis_prefix)
        assert linked("A1") is None and linked("A3") is None  # dropped and unlinked again
        assert outbox_size(redis, redis_prefix) == 0
        assert identity_counters(redis, redis_prefix)["identity_suppressed"] >= 2
    finally:
        client.close()


# -- end to end ----------------------------------------------------------------------------------
@pytest.fixture(params=MODES)
def settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    return on_redis(request, settings)


def test_a_worker_merges_visitors_into_customers_whatever_the_partitions_deliver(
    settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    # keyed as producers key them: the anonymous clicks by visitor, the rest by customer, so the
    # link and the clicks travel on different partitions and arrive in any order
    records = [
        (settings.kafka.clicks_topic, (e.customer_id or e.anonymous_id or "").encode(), encode(e))
        for e in STREAM
    ]
    worker = workers(settings)
    produce(settings.kafka.bootstrap, records)
    worker.wait_assigned()
    wait_received(settings, len(STREAM))
    wait_for(lambda: got(settings.redis, settings.redis.prefix) == want(STREAM), 60, "the merges")
    assert outbox_size(settings.redis, settings.redis.prefix) == 0
    assert worker.alive
