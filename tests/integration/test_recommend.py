"""Recommendations end to end: ingestion's recommendation stage against the real broker and Redis.

Ingestion with the worker's stages (:class:`worker.recommend.stage.RecommendStage`) and the
merge (:class:`worker.recommend.service.RecommendMerger`) run in the test's own event loop, as
``build_worker`` composes them, on the session's single Redis and on its Redis Cluster. Orders
update the counts and the merged lists exactly as the Python rule (worker/recommend/decay.py)
computes; a redelivery changes nothing; a customer's list changes after orders of their
segment; the read is one command and the storefront's read-only user may send it; forget
removes the customer's recently bought skus and keeps their old orders out; a replay at new
offsets counts nothing twice; a record that does not decode and one of a customer whose hash is
of the wrong type are dead-lettered once each and never counted, and a shared key of the wrong
type is waited out like an outage; lines the state script handed over and no drain took yet (a
worker that died in between) are counted once, by the next drain.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as settings_
from hypothesis import strategies as st

from schemas import LineItem, OrderEvent, encode
from segstream.acl import storefront_acl
from segstream.settings import Settings
from tests.support.kafka_reads import read_dead_letters
from tests.support.modes import MODES, on_redis
from tests.support.producing import produce
from tests.support.state_checks import counts_by_rule
from worker.connect import keyspace, sync_redis
from worker.core.batch import Batch, Record
from worker.erase.store import ForgetStore
from worker.ingest.applier import FailureReport
from worker.ingest.metrics import applier_metrics
from worker.ingest.service import IngestService
from worker.recommend.batch import purchase_lines
from worker.recommend.decay import SHOP
from worker.recommend.metrics import RecommendMetrics
from worker.recommend.rank import BOOST, bought_after, bought_hashes, rank, sku_hash
from worker.recommend.read import READ, Recommendations, read_call, recommend
from worker.recommend.service import RecommendMerger
from worker.recommend.store import RecommendStore
from worker.state.reader import StateReader
from worker.state.store import StateStore
from worker.wiring import build_worker

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _remove_keys_afterwards(redis_client: object) -> None:
    """``redis_client`` deletes every key under this test's prefix when the test ends."""


@pytest.fixture(params=MODES)
def rec_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """This test's settings, a fast merge, on a single Redis and on a cluster."""
    return on_redis(request, settings.with_(recommend_merge_interval_s=0.2, poison_retries=2))


# -- helpers -------------------------------------------------------------------------------------
def order(
    n: int, customer: str, when: datetime, lines: Sequence[tuple[str, str, int]]
) -> OrderEvent:
    items = [LineItem(sku=sku, quantity=q, unit_price=2.5, category=cat) for cat, sku, q in lines]
    return OrderEvent(event_id=f"e{n}", schema_version=1, customer_id=customer,
                      order_id=f"o{n}", event_time=when, status="placed", items=items,
                      total=sum(i.quantity * 2.5 for i in items))  # fmt: skip


def records(s: Settings, orders: Sequence[OrderEvent]) -> list[tuple[str, bytes, bytes]]:
    return [(s.kafka.orders_topic, o.customer_id.encode(), encode(o)) for o in orders]


def set_segments(s: Settings, segments: dict[str, str]) -> None:
    space = keyspace(s.redis, s.redis.prefix)
    with sync_redis(s.redis) as r:
        for cid, seg in segments.items():
            r.hset(space.customer(cid), "segment", seg)


def read(s: Settings, cid: str, n: int = 10) -> Recommendations:
    with sync_redis(s.redis) as r:
        return recommend(r, keyspace(s.redis, s.redis.prefix), cid, n)


async def until(check: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)


@dataclass(frozen=True)
class Ran:
    """What one run counted: the recommendation stage's counts and ingestion's."""

    metrics: RecommendMetrics
    ingest: IngestService

    def failing(self) -> FailureReport | None:
        """The batch ingestion is failing on now (what ``/health`` shows)."""
        return applier_metrics(self.ingest.applier).failing


def consume(s: Settings, done: Callable[[Ran], bool], what: str) -> Ran:
    """Run ingestion (with the worker's stages, scoring off) and the merge until ``done``."""

    async def run() -> Ran:
        worker = build_worker(s.with_(scoring=False))
        merger = next(x for x in worker.services if isinstance(x, RecommendMerger))
        ran = Ran(merger.metrics, worker.ingest)
        services = (worker.ingest, merger)
        for service in services:
            await service.start()
        try:
            await until(lambda: done(ran), 90, what)
        finally:
            for service in reversed(services):
                await service.stop()
        return ran

    return asyncio.run(run())


def state_counter(s: Settings, name: str) -> int:
    """Ingestion's counter ``name`` (``fenced``, ``deduped``, ``suppressed``...), every space."""
    with StateReader(s.redis, s.redis.prefix) as reader:
        return {**reader.counters(), **reader.erasure_counters()}[name]


def merged_list(s: Settings, segment: str) -> list[tuple[str, float]]:
    """The merged list as a customer's space holds it (every space holds the same)."""
    space = keyspace(s.redis, s.redis.prefix).spaces[-1]
    key = f"{space}:rtop" + (f":{segment}" if segment else "")
    with sync_redis(s.redis, decode_responses=True) as r:
        return [(m, float(v)) for m, v in r.zrange(key, 0, -1, desc=True, withscores=True)]


def assert_lists_match(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> None:
    assert [m for m, _ in got] == [m for m, _ in want]
    for (_, a), (_, b) in zip(got, want, strict=True):
        assert a == pytest.approx(b, rel=1e-9)


# -- tests ---------------------------------------------------------------------------------------
def test_orders_update_the_lists_exactly_once_and_a_segments_new_favourite_reaches_its_members(
    rec_settings: Settings,
) -> None:
    s = rec_settings
    segments = {f"A{i}": "alpha" for i in range(12)} | {f"B{i}": "beta" for i in range(12)}
    segments |= {"XA": "alpha", "XB": "beta"}  # in a segment, no orders yet
    set_segments(s, segments)
    orders = []
    for i in range(12):
        when = T0 + timedelta(hours=i)
        orders.append(order(len(orders), f"A{i}", when, [("toys", f"a{i % 4}", 1 + i % 2)]))
        orders.append(order(len(orders), f"B{i}", when, [("books", f"b{i % 3}", 1),
                                                         ("toys", "a0", 1)]))  # fmt: skip
    produce(s.kafka.bootstrap, records(s, orders))
    n = len(orders)
    want = counts_by_rule(s, orders, segments)

    def merged() -> bool:
        return len(merged_list(s, "alpha")) == 4 and len(merged_list(s, "")) == 7

    consume(s, lambda svc: svc.metrics.applied >= n and merged(), "the orders counted and merged")
    latest = max(o.event_time_ms for o in orders)
    for segment in ("alpha", "beta", SHOP):
        assert_lists_match(merged_list(s, segment), want.top(segment, 100, latest))

    # a member with no orders gets the segment's list; someone unknown gets the shop's
    xa = read(s, "XA")
    assert xa.segment == "alpha" and [p.sku for p in xa.picks[:4]] == ["a3", "a1", "a2", "a0"]
    assert xa.rows()[0]["reason"] == "popular in alpha"
    assert {p.source for p in xa.picks[4:]} == {"shop"}
    stranger = read(s, "NOBODY", 3)
    assert stranger.segment is None and [p.source for p in stranger.picks] == ["shop"] * 3
    assert stranger.rows()[0]["reason"] == "popular in the shop"
    # what a customer bought is never listed
    assert not {"b1", "a0"} & {p.sku for p in read(s, "B1").picks}

    # Redelivery: the same records at the same offsets, read by a new consumer group.
    again = s.with_(group_id=f"{s.kafka.group_id}-again")
    fenced = state_counter(s, "fenced")
    svc = consume(again, lambda _: state_counter(s, "fenced") >= fenced + n, "every record fenced")
    assert svc.metrics.applied == 0
    for segment in ("alpha", "beta", SHOP):
        assert_lists_match(merged_list(s, segment), want.top(segment, 100, latest))

    # Replay: the same orders again at new offsets (a file replayed twice) count nothing more.
    produce(s.kafka.bootstrap, records(s, orders))
    deduped = state_counter(s, "deduped")
    svc = consume(s, lambda _: state_counter(s, "deduped") >= deduped + n, "every replay deduped")
    assert svc.metrics.applied == 0
    for segment in ("alpha", "beta", SHOP):
        assert_lists_match(merged_list(s, segment), want.top(segment, 100, latest))

    # beta's members start buying "b9" a week later: XB's list changes, its first item is b9
    before = [p.sku for p in read(s, "XB").picks]
    later = T0 + timedelta(days=7)
    more = [order(n + i, f"B{i}", later + timedelta(minutes=i), [("books", "b9", 2)])
            for i in range(12)]  # fmt: skip
    produce(s.kafka.bootstrap, records(s, more))
    consume(s, lambda svc: svc.metrics.applied >= 12 and read(s, "XB").picks[0].sku == "b9",
            "b9 at the top of beta's list")  # fmt: skip
    after = [p.sku for p in read(s, "XB").picks]
    assert after != before and after[0] == "b9" and "b9" not in before
    assert read(s, "XA").picks[0].sku == "a3"  # alpha's list did not take b9 first
    with sync_redis(s.redis) as r:
        space = keyspace(s.redis, s.redis.prefix)
        stored = r.hget(space.customer("B1"), "rb")
        assert not any(r.llen(f"{sp}:rbox") for sp in space.spaces)  # every line drained
    bought = bought_after(bought_after(None, ["b1", "a0"]), ["b9"])
    assert stored == bought and len(stored) == 9  # 3 raw bytes per sku


def test_the_read_is_one_command_on_one_node_and_matches_the_python_rule(
    rec_settings: Settings,
) -> None:
    s = rec_settings
    set_segments(s, {"C1": "gamma", "C2": "gamma", "C3": "gamma"})
    space = keyspace(s.redis, s.redis.prefix)
    # fields not of the binary layout: C1's rb is 4 bytes (taken as empty); C3's rb holds its
    # skus' hashes as 6 hex digits each, as a draft stored them
    old_rb = b"".join(hashlib.sha1(sku.encode()).hexdigest()[:6].encode() for sku in ("k2", "g2"))
    with sync_redis(s.redis) as r:
        r.hset(space.customer("C1"), "ks", "garden=900,books=1200,toys=1200")  # favourite: books
        r.hset(space.customer("C1"), "rb", b"abcd")
        r.hset(space.customer("C3"), "rb", old_rb)
    orders = [
        order(0, "C2", T0, [("garden", "g1", 5), ("books", "k1", 2), ("toys", "t1", 3)]),
        order(1, "C2", T0 + timedelta(hours=1), [("books", "k2", 2), ("garden", "g2", 4)]),
        order(2, "C1", T0 + timedelta(hours=2), [("garden", "g1", 1)]),
    ]
    produce(s.kafka.bootstrap, records(s, orders))
    consume(s, lambda svc: svc.metrics.applied >= 3 and len(merged_list(s, "gamma")) == 5,
            "counted and merged")  # fmt: skip

    calls: list[tuple[Any, ...]] = []
    with sync_redis(s.redis) as client:
        recommend(client, space, "C1", 4)  # loads the script if Redis does not hold it yet

        class Counting:
            def execute_command(self, *args: Any, **options: Any) -> Any:
                calls.append(args)
                return client.execute_command(*args, **options)

        got = recommend(Counting(), space, "C1", 4)
    assert len(calls) == 1 and calls[0][0] == "EVALSHA"
    assert calls[0][3] == space.customer("C1")  # the key that routes it: the customer's slot
    want = rank(merged_list(s, "gamma"), merged_list(s, ""), [sku_hash("g1")],
                "books", 4, BOOST)  # fmt: skip
    assert got.picks == want
    assert [p.sku for p in got.picks] == ["k2", "k1", "g2", "t1"]  # books x4, g1 bought
    assert got.rows()[0]["reason"] == "popular in gamma, in your favourite category books"
    with sync_redis(s.redis) as r:
        rb = r.hget(space.customer("C1"), "rb")
    assert rb == sku_hash("g1")  # the 4-byte field started afresh
    # the old hex field reads without error, as the Python rule reads it (it matches no sku)
    old = read(s, "C3", 4)
    assert old.picks == rank(merged_list(s, "gamma"), merged_list(s, ""), bought_hashes(old_rb),
                             None, 4, BOOST)  # fmt: skip
    assert [p.sku for p in old.picks] == ["g1", "g2", "t1", "k2"]  # k2, g2 not taken as bought


def test_the_storefront_user_reads_recommendations_read_only(
    settings: Settings, redis_url: str
) -> None:
    s = settings.with_(recommend_merge_interval_s=0.2)
    set_segments(s, {"S1": "delta"})
    produce(s.kafka.bootstrap, records(s, [order(0, "S2", T0, [("toys", "t1", 1)])]))
    consume(s, lambda svc: len(merged_list(s, "")) == 1, "counted and merged")
    user, password = f"storefront-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    admin = redis.Redis.from_url(redis_url)
    admin.execute_command("ACL", "SETUSER", user, "on", f">{password}",
                          *storefront_acl(s.redis.prefix))  # fmt: skip
    try:
        shop = redis.Redis.from_url(redis_url, username=user, password=password)
        space = keyspace(s.redis, s.redis.prefix)
        args = read_call(space, "S1", 5)
        by_text = shop.execute_command("EVAL_RO", READ.text, *args)  # loads it, read-only
        by_sha = shop.execute_command("EVALSHA_RO", READ.sha, *args)
        assert by_text == by_sha and by_sha[0] == b"delta" and by_sha[2][0][0] == b"t1"
        assert recommend(shop, space, "S1", 5, read_only=True).picks[0].source == "shop"
        with pytest.raises(redis.exceptions.NoPermissionError):
            shop.execute_command("EVALSHA", READ.sha, *args)
        with pytest.raises(redis.exceptions.NoPermissionError):
            shop.hset(space.customer("S1"), "segment", "vip")
    finally:
        admin.execute_command("ACL", "DELUSER", user)


def test_forget_removes_the_bought_skus_and_keeps_old_orders_out(rec_settings: Settings) -> None:
    s = rec_settings
    space = keyspace(s.redis, s.redis.prefix)
    set_segments(s, {"F1": "eps"})
    first = [order(0, "F1", T0, [("toys", "t1", 1)]), order(1, "F2", T0, [("toys", "t2", 1)])]
    produce(s.kafka.bootstrap, records(s, first))
    consume(s, lambda svc: svc.metrics.applied >= 2, "counted")
    with sync_redis(s.redis) as r:
        assert r.hget(space.customer("F1"), "rb") == sku_hash("t1")

    async def forget() -> None:
        store = ForgetStore(s.redis, s.redis.prefix, 1.0)
        try:
            await store.forget("F1")
        finally:
            await store.close()

    asyncio.run(forget())
    with sync_redis(s.redis) as r:
        assert not r.exists(space.customer("F1"))
    # the same old order again (a replay, new offset): suppressed, nothing of F1 comes back
    produce(s.kafka.bootstrap, records(s, [order(0, "F1", T0, [("toys", "t1", 1)])]))
    suppressed = state_counter(s, "suppressed")
    svc = consume(
        s, lambda _: state_counter(s, "suppressed") > suppressed, "the replayed order suppressed"
    )
    assert svc.metrics.applied == 0
    with sync_redis(s.redis) as r:
        assert not r.exists(space.customer("F1"))


def test_bad_records_are_dead_lettered_once_and_a_jammed_shared_key_is_waited_out_then_all_counts(
    rec_settings: Settings,
) -> None:
    s = rec_settings
    space = keyspace(s.redis, s.redis.prefix)
    jammed = f"{space.space_of('BROKEN')}:rpop:jammed"
    with sync_redis(s.redis) as r:
        # BROKEN's segment list is of the wrong type: a shared key, so an outage for ingestion
        r.hset(space.customer("BROKEN"), "segment", "jammed")
        r.set(jammed, "not a sorted set")
        # a customer hash of the wrong type: the state script refuses it, so it is dead-lettered
        r.set(space.customer("GARBLED"), "not a hash")
    good = [order(0, "OK1", T0, [("toys", "t1", 1)]), order(2, "OK2", T0, [("toys", "t2", 1)])]
    broken = order(1, "BROKEN", T0, [("toys", "t3", 1)])
    garbled = order(3, "GARBLED", T0, [("toys", "t4", 1)])
    topic = s.kafka.orders_topic
    items = [*records(s, [good[0]]), (topic, b"X", b"{not json"),
             *records(s, [broken, garbled, good[1]])]  # fmt: skip
    # one partition, so the bad ones sit between the good ones
    produce(s.kafka.bootstrap, [(t, b"same-key", v) for t, _, v in items])
    jam = f"segstream state key {jammed} holds a string"

    def waiting(svc: Ran) -> bool:
        failing = svc.failing()
        return failing is not None and jam in failing.error and failing.attempts >= 3

    consume(s, waiting, "the jammed key waited out as an outage")
    with sync_redis(s.redis) as r:
        # BROKEN's order is applied (its state took it) and waits in the list, uncounted
        assert r.llen(f"{space.space_of('BROKEN')}:rbox") > 0
        assert r.zscore(f"{space.space_of('BROKEN')}:rpop", "toys,t3") is None

    with sync_redis(s.redis) as r:
        r.delete(jammed)
    with sync_redis(s.redis) as r:
        ok2 = f"{space.space_of('OK2')}:rpop"
        counted = lambda: r.zscore(ok2, "toys,t2") is not None  # noqa: E731
        # the whole batch in Redis again (the state of a shard that took OK2 in the first run
        # may have had its lines counted then): X and GARBLED dead-lettered, all counted
        consume(
            s,
            lambda svc: counted() and svc.ingest.metrics.dead_lettered >= 2,
            "counted, unjammed",
        )
    # ingestion dead-letters the record that does not decode once per delivery (the first run
    # stopped with its batch uncommitted: two), GARBLED's order (its hash is of the wrong type)
    # once, and nothing else; the counts never took either
    letters = read_dead_letters(s, at_least=3)
    assert sorted(x.letter.offset for x in letters) == [1, 1, 3]
    with sync_redis(s.redis) as r:
        assert r.get(space.customer("GARBLED")) == b"not a hash"
        # the counts take only what the state script applied: neither t3's jam nor t4
        shop = {m for sp in space.spaces for m in r.zrange(f"{sp}:rpop", 0, -1)}
        assert shop == {b"toys,t1", b"toys,t2", b"toys,t3"}
        assert r.hget(space.customer("OK2"), "rb") == bought_after(None, ["t2"])
        assert r.hget(space.customer("BROKEN"), "rb") == bought_after(None, ["t3"])


def test_the_counts_add_a_batch_as_one_increment_after_another_and_an_undrained_one_once(
    rec_settings: Settings,
) -> None:
    """The state script and count.lua on their own, as the stage calls them: many lines of few
    skus in one batch land as the Python rule adds them one by one. The batch is applied twice
    (the second time every record is fenced, as after a worker died between its apply and its
    drain) and drained once: each line counts once, and a second drain finds nothing."""
    s = rec_settings
    segments = {f"C{i}": "alpha" if i % 2 else "beta" for i in range(40)}
    set_segments(s, segments)
    space = keyspace(s.redis, s.redis.prefix)
    orders = [
        order(n, f"C{n % 40}", T0 + timedelta(minutes=7 * n),
              [("toys", f"t{n % 3}", 1 + n % 4), ("books", f"b{n % 2}", 2)])
        for n in range(120)
    ]  # fmt: skip
    topic = s.kafka.orders_topic
    batch = Batch([Record(topic, 0, n, o) for n, o in enumerate(orders)], {(topic, 0): 119})
    state = StateStore(s.redis, s.redis.prefix, lines_of=purchase_lines)
    store = RecommendStore(s.redis, s.redis.prefix, s.recommend)

    async def apply_twice_then_drain() -> tuple[int, int, int]:
        try:
            first = await state.apply(batch)
            again = await state.apply(batch)
            assert (first.applied, again.applied) == (120, 0)
            return (
                await store.drain(space.spaces),
                await store.drain(space.spaces),
                first.applied,
            )
        finally:
            await state.close()
            await store.close()

    assert asyncio.run(apply_twice_then_drain()) == (120, 0, 120)
    want = counts_by_rule(s, orders, segments)
    with sync_redis(s.redis, decode_responses=True) as r:
        for segment in (SHOP, "alpha", "beta"):
            # every space's counts summed (each space counts its own customers)
            summed: dict[str, float] = {}
            for sp in space.spaces:
                key = f"{sp}:rpop" + (f":{segment}" if segment != SHOP else "")
                for m, v in r.zrange(key, 0, -1, withscores=True):
                    summed[m] = summed.get(m, 0.0) + v
            wanted = dict(want.counts.get(segment, {}))
            assert summed.keys() == wanted.keys()
            for m, v in summed.items():
                assert v == pytest.approx(wanted[m], rel=1e-12)


def test_a_drain_counts_the_state_scripts_lines_and_skips_whatever_else_is_in_the_list(
    rec_settings: Settings,
) -> None:
    """Entries in ``rbox`` that the state script did not write (a blob that is not msgpack, one
    of another shape) are skipped, logged and counted (recommend_bad_lines); they neither fail
    the drain nor stop the real lines from counting, and the list is emptied."""
    s = rec_settings
    space = keyspace(s.redis, s.redis.prefix)
    topic = s.kafka.orders_topic
    placed = order(0, "J1", T0, [("toys", "t1", 2)])
    sp = space.space_of("J1")
    state = StateStore(s.redis, s.redis.prefix, lines_of=purchase_lines)
    store = RecommendStore(s.redis, s.redis.prefix, s.recommend)
    with sync_redis(s.redis) as r:
        r.rpush(f"{sp}:rbox", b"\xc1 not msgpack", msgspec.msgpack.encode([1, "", "x"]))

    async def apply_then_drain() -> int:
        try:
            await state.apply(Batch([Record(topic, 0, 0, placed)], {(topic, 0): 0}))
            return await store.drain(space.spaces)
        finally:
            await state.close()
            await store.close()

    assert asyncio.run(apply_then_drain()) == 1
    with sync_redis(s.redis) as r:
        assert r.llen(f"{sp}:rbox") == 0
        assert int(r.hget(f"{sp}:counters", "recommend_bad_lines") or 0) == 2
        want = counts_by_rule(s, [placed], {})
        assert r.zscore(f"{sp}:rpop", "toys,t1") == pytest.approx(want.counts[SHOP]["toys,t1"])


_NUMBER = st.one_of(st.integers(-(2**63), 2**63 - 1), st.floats())
#: Lines shaped like the state script's (number, text, number, text, number), any values.
_LINE_SHAPED = st.lists(
    st.tuples(_NUMBER, st.text(max_size=8), _NUMBER, st.text(max_size=8), _NUMBER),
    min_size=1, max_size=4,
).map(lambda lines: msgspec.msgpack.encode([v for line in lines for v in line]))  # fmt: skip
_ANY = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(),
    st.text(max_size=12), st.binary(max_size=12),
)  # fmt: skip


@settings_(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    junk=st.lists(
        st.one_of(
            st.binary(max_size=64),
            st.lists(_ANY, max_size=12).map(msgspec.msgpack.encode),
            _LINE_SHAPED,
        ),
        max_size=4,
    )
)
def test_no_entry_in_the_list_fails_a_drain_or_changes_what_the_real_lines_count(
    settings: Settings, junk: list[bytes]
) -> None:
    """Fuzzed entries (random bytes, msgpack lists of anything, NaN and infinities included)
    beside one real line: the drain answers, counts the real line, and empties the list."""
    s = settings
    space = keyspace(s.redis, s.redis.prefix)
    sp = space.spaces[0]
    with sync_redis(s.redis) as r:
        for key in r.scan_iter(f"{sp}:r*"):
            r.delete(key)
        r.delete(f"{sp}:counters")
        if junk:
            r.rpush(f"{sp}:rbox", *junk)
    placed = order(0, "FZ", T0, [("toys", "t1", 2)])
    lines = purchase_lines(placed)
    assert lines is not None
    blob = msgspec.msgpack.encode([0, "", placed.event_time_ms, lines[0].member, 2])
    store = RecommendStore(s.redis, s.redis.prefix, s.recommend)

    async def drain() -> int:
        try:
            with sync_redis(s.redis) as r:
                r.rpush(f"{sp}:rbox", blob)
            return await store.drain([sp])
        finally:
            await store.close()

    assert asyncio.run(drain()) >= 1
    with sync_redis(s.redis) as r:
        assert r.llen(f"{sp}:rbox") == 0
        got = r.zscore(f"{sp}:rpop", "toys,t1")
    assert got is not None
