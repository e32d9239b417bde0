"""The state script's snapshot and the stamp protocol of the scoring write, on a real Redis.

The snapshot must be the state a read right after the apply would give, and a segment must only
be written for the state its stamp stands for: a stale snapshot (the customer changed again)
conflicts, and so does a second writer of the same stamp.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest
import redis

from segstream.settings import Settings
from tests.support.synthetic import batches, clicks, orders
from worker.core import Batch
from worker.core.batch import SnapshotSpec
from worker.core.rfm import HASH_FIELDS
from worker.scoring.plan import WritePlan
from worker.scoring.publisher import ChangePublisher
from worker.scoring.service import ScoringService
from worker.scoring.snapshot import REASONS, SnapshotBatch, SnapshotIndex
from worker.scoring.store import ScoringStore
from worker.scoring.vectors import ABSENT_VALUES, STATE_FIELDS, fields_for
from worker.state import StateReader, StateStore, keys

pytestmark = pytest.mark.integration

#: How a Round holds an absent time field.
MISSING = ABSENT_VALUES[STATE_FIELDS.index("t1")]
SPEC = SnapshotSpec(fields_for(("recency_days", "frequency", "aov", "sessions")), "km-test")


def apply_with_snapshot(url: str, prefix: str, bs: list[Batch]) -> list[Any]:
    async def run() -> list[Any]:
        store = StateStore(url, prefix)
        try:
            return [await store.apply(b, store.prepare(b, SPEC)) for b in bs]
        finally:
            await store.close()

    return asyncio.run(run())


def test_each_snapshot_is_the_state_a_read_right_after_its_apply_gives(
    redis_url: str, redis_prefix: str
) -> None:
    events = [*orders(n_customers=120, n_orders=900), *clicks(n_customers=120, n_sessions=300)]
    random.Random(2).shuffle(events)
    bs = batches(events, "mixed", size=150)
    client = redis.Redis.from_url(redis_url)
    index = SnapshotIndex()
    results = apply_with_snapshot(redis_url, redis_prefix, bs)
    for result in results:
        assert result.snapshot is not None and result.stamp > 0
        index.add(SnapshotBatch(result.changed, result.snapshot))
    stamps = client.hgetall(keys.unscored(redis_prefix))
    # every changed customer is owed a scoring, at the stamp of the last batch that changed it
    last_stamp = {cid: r.stamp for r in results for cid in r.changed}
    assert {k.decode(): int(v) for k, v in stamps.items()} == last_stamp
    # the latest snapshot of each customer equals its stored state now
    ids = sorted(last_stamp)
    rnd, without = index.take(ids, SPEC.fields)
    assert rnd is not None and without == []
    with StateReader(redis_url, redis_prefix) as reader:
        for row, cid in enumerate(rnd.customer_ids):
            state = reader.get(cid)
            assert state is not None
            for attr, f in HASH_FIELDS.items():
                if f in SPEC.fields:
                    want = getattr(state, attr)
                    got = int(rnd.raw[row, STATE_FIELDS.index(f)])
                    assert got == (MISSING if want is None else want), (cid, f)
            assert rnd.stamps[row] == last_stamp[cid]
            assert rnd.segments[row] is None and rnd.seqs[row] is None
            assert rnd.reasons is not None and rnd.reasons[row] in REASONS
    client.close()


def test_a_stale_snapshot_or_a_second_writer_of_a_stamp_conflicts(
    redis_url: str, redis_prefix: str
) -> None:
    events = orders(n_customers=1, n_orders=6)
    half = len(events) // 2
    *_, r1 = apply_with_snapshot(redis_url, redis_prefix, batches(events[:half], "o", size=100))
    later = batches(events[half:], "o", size=100, first_offset=half)
    *_, r2 = apply_with_snapshot(redis_url, redis_prefix, later)
    (cid,) = r1.changed
    assert r2.changed == [cid] and r2.stamp > r1.stamp

    async def write(stamp: int, segment: str, seq: int) -> tuple[list[str], str]:
        store = ScoringStore(redis_url, redis_prefix)
        try:
            plan = WritePlan([cid], [stamp], changes=[0, segment, seq])
            return await store.write("km-test", 1, plan, [(cid, seq, b"{}")])
        finally:
            await store.close()

    client = redis.Redis.from_url(redis_url)
    key = keys.customer(redis_prefix, cid)
    # the first batch's snapshot is stale: a newer state exists
    conflicts, token = asyncio.run(write(r1.stamp, "old-news", 1))
    assert conflicts == [cid] and client.hget(key, "segment") is None
    assert client.hexists(f"{redis_prefix}:outbox", f"{token}:skip")
    # the latest one writes, and the customer is no longer owed a scoring
    conflicts, _ = asyncio.run(write(r2.stamp, "loyal", 1))
    assert conflicts == [] and client.hget(key, "segment") == b"loyal"
    assert client.hget(key, "segment_seq") == b"1"
    assert not client.hexists(keys.unscored(redis_prefix), cid)
    # a second writer holding the same stamp loses: its segment_seq would repeat
    conflicts, _ = asyncio.run(write(r2.stamp, "champions", 1))
    assert conflicts == [cid] and client.hget(key, "segment") == b"loyal"
    client.close()


def test_rows_read_back_compare_segment_seq_and_a_vanished_hash_only_leaves_unscored(
    redis_url: str, redis_prefix: str
) -> None:
    events = orders(n_customers=3, n_orders=9)
    (result,) = apply_with_snapshot(redis_url, redis_prefix, batches(events, "o", size=100))
    a, b, c = sorted(result.changed)
    client = redis.Redis.from_url(redis_url)
    client.delete(keys.customer(redis_prefix, c))  # deleted by hand while owed a scoring

    async def run(plan: WritePlan) -> list[str]:
        store = ScoringStore(redis_url, redis_prefix)
        try:
            if not plan.ids:  # the read: stamps come with the state
                rnd = await store.read([a, b, c], SPEC.fields)
                assert rnd.customer_ids == [a, b] and rnd.stamps == [result.stamp] * 2
                assert rnd.missing == [c] and rnd.missing_stamps == [result.stamp]
                return []
            conflicts, _ = await store.write("km-test", 1, plan)
            return conflicts
        finally:
            await store.close()

    asyncio.run(run(WritePlan()))
    # a read segment_seq that no longer holds is a conflict (someone scored b meanwhile)
    client.hset(keys.customer(redis_prefix, b), "segment_seq", 4)
    s = result.stamp
    plan = WritePlan(
        [a, b, c], [s, s, s], checks=[0, -1, 1, -1, 2, -1], changes=[0, "loyal", 1, 1, "lost", 1]
    )
    assert asyncio.run(run(plan)) == [b]
    assert client.hget(keys.customer(redis_prefix, a), "segment") == b"loyal"
    assert client.hget(keys.customer(redis_prefix, b), "segment") is None
    assert not client.exists(keys.customer(redis_prefix, c))  # not recreated
    assert {k.decode() for k in client.hkeys(keys.unscored(redis_prefix))} == {b}
    # a customer read while owed nothing (stamp 0) and keeping its segment: nothing to do
    assert asyncio.run(run(WritePlan([a], [0]))) == []
    assert client.hget(keys.customer(redis_prefix, a), "segment_seq") == b"1"
    client.close()


@contextlib.asynccontextmanager
async def scoring_service(
    redis_url: str, prefix: str, bootstrap: str, make_topic: Callable[..., str]
) -> AsyncIterator[ScoringService]:
    """A scoring service on the real Redis and broker, its publisher started (no loop running)."""
    settings = Settings.of(
        redis_url=redis_url, redis_prefix=prefix, kafka_bootstrap=bootstrap,
        segment_changes_topic=make_topic("changes"),
    )  # fmt: skip
    publisher = ChangePublisher(
        bootstrap,
        settings.kafka.segment_changes_topic,
        settings.kafka.control_topic,
        "scoring-test",
    )
    svc = ScoringService(settings, ScoringStore(redis_url, prefix), publisher)
    await svc.publisher.start()
    try:
        yield svc
    finally:
        await svc.publisher.stop()
        await svc.store.close()


def test_a_round_with_a_customer_whose_hash_vanished_clears_it_instead_of_requeueing_it(
    redis_url: str, redis_prefix: str, kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    events = orders(n_customers=2, n_orders=4)
    (result,) = apply_with_snapshot(redis_url, redis_prefix, batches(events, "o", size=100))
    kept, gone = sorted(result.changed)
    client = redis.Redis.from_url(redis_url)
    client.delete(keys.customer(redis_prefix, gone))

    async def score() -> ScoringService:
        async with scoring_service(redis_url, redis_prefix, kafka_bootstrap, make_topic) as svc:
            await asyncio.wait_for(svc.rounds.score(dict.fromkeys([kept, gone])), 30)
            await asyncio.wait_for(svc.publish_settled(), 30)
        return svc

    svc = asyncio.run(score())
    assert svc.pending == {} and svc.metrics.conflicts == 0 and svc.metrics.missing == 1
    assert not client.exists(keys.unscored(redis_prefix), keys.customer(redis_prefix, gone))
    assert client.hget(keys.customer(redis_prefix, kept), "segment_seq") == b"1"
    client.close()


def rounds_of_ten(
    monkeypatch: pytest.MonkeyPatch, url: str, prefix: str, n_customers: int
) -> tuple[list[Any], list[str]]:
    """Rounds of 10 customers; ``n_customers`` customers' orders applied (the events, the ids)."""
    from worker.scoring import queue as queue_module

    monkeypatch.setattr(queue_module, "ROUND_MAX", 10)
    events = orders(n_customers=n_customers, n_orders=3 * n_customers)
    results = apply_with_snapshot(url, prefix, batches(events, "o", size=100))
    return events, sorted({cid for r in results for cid in r.changed})


def test_with_ingestion_idle_the_next_round_is_read_during_this_one_and_scored_from_that_read(
    redis_url: str,
    redis_prefix: str,
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events, ids = rounds_of_ten(monkeypatch, redis_url, redis_prefix, n_customers=30)
    assert len(ids) > 20
    client = redis.Redis.from_url(redis_url)

    async def run() -> ScoringService:
        async with scoring_service(redis_url, redis_prefix, kafka_bootstrap, make_topic) as svc:
            svc.enqueue(ids, None)
            first = svc.queue.take()
            svc.pacer.ingest_changed()  # ingestion busy: no read ahead
            await svc.rounds.read_ahead(first)
            assert svc.rounds.ahead is None
            svc.pacer.changed_at = 0.0
            await svc.rounds.read_ahead(first)  # returns once Redis has the read
            assert svc.rounds.ahead is not None
            ahead = svc.rounds.ahead
            second = ahead.items
            assert set(svc.rounds.in_round) == set(first) | set(second)
            assert len(svc.pending) == len(ids) - 20
            assert not set(first) & set(second)
            await svc.rounds.score(first)
            # an order of one of them after the read ahead: that read is stale for it now
            late = next(iter(second))
            fresh = msgspec.structs.replace(
                next(e for e in events if e.customer_id == late),
                event_id="E-late", order_id="O-late",
            )  # fmt: skip
            state = StateStore(redis_url, redis_prefix)
            (batch,) = batches([fresh], "o", first_offset=10_000)
            await state.apply(batch, state.prepare(batch))
            await state.close()
            await svc.rounds.score(second, await ahead.gathered())  # the stamp: re-queued
            await svc.publish_settled()
            assert svc.metrics.conflicts == 1 and late in svc.pending
        return svc

    svc = asyncio.run(run())
    assert svc.metrics.scored == 19
    left = {k.decode() for k in client.hkeys(keys.unscored(redis_prefix))}
    assert left == set(svc.pending) and len(left) == len(ids) - 19
    for cid in set(ids) - left:
        assert client.hget(keys.customer(redis_prefix, cid), "segment_seq") == b"1"
    client.close()


def test_a_write_behind_returns_once_redis_has_it_and_its_task_finishes_the_round(
    redis_url: str,
    redis_prefix: str,
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ingestion idle: the loop assigns the next round while Redis runs this one's write."""
    from tests.support.scripts import SLOW
    from worker.redis_io import Pending, Script, ScriptClient

    _, ids = rounds_of_ten(monkeypatch, redis_url, redis_prefix, n_customers=20)
    client = redis.Redis.from_url(redis_url)

    async def run() -> tuple[ScoringService, list[str]]:
        async with scoring_service(redis_url, redis_prefix, kafka_bootstrap, make_topic) as svc:
            svc.enqueue(ids, None)
            first, second = svc.queue.take(), svc.queue.take()
            fields = fields_for(svc.holder.model.feature_names)
            gathered = await svc.rounds.gather(first, fields)
            busy = ScriptClient(redis_url)  # Redis busy ~400 ms: the write waits behind it
            slow = Script.of(SLOW)
            await busy.call(slow, [0, "loaded"])
            svc.status.saved_at = time.monotonic()  # no status write at the round's end
            blocker = asyncio.ensure_future((await busy.send(slow, [400, "done"])).result())
            await asyncio.sleep(0.05)  # Redis is inside the busy script now
            assert await svc.rounds.score(first, gathered) > 0  # ingestion idle: write behind
            assert svc.metrics.rounds == 0 and len(svc.publications) == 1  # reply still owed
            assert not blocker.done()
            await svc.publish_settled()
            assert svc.metrics.rounds == 1 and svc.metrics.scored == 10
            await blocker
            await busy.close()

            # a write behind that fails puts its round back in the queue
            async def failing_write(*args: Any) -> Pending[tuple[list[str], str]]:
                async def went_away() -> tuple[list[str], str]:
                    raise ConnectionError("Redis went away")

                return Pending(went_away)  # sent ("Redis has it"), then the reply fails

            monkeypatch.setattr(svc.store, "send_write", failing_write)
            await svc.rounds.score(second)
            await svc.publish_settled()
            return svc, list(second)

    svc, second = asyncio.run(run())
    assert set(svc.pending) == set(second) and svc.metrics.failures == 1
    assert svc.metrics.last_error and "Redis went away" in svc.metrics.last_error
    left = {k.decode() for k in client.hkeys(keys.unscored(redis_prefix))}
    assert left == set(second)  # the first round is written, the second still owed
    client.close()
