"""Scoring rounds end to end on the in-memory store and publisher, on manual time."""

from __future__ import annotations

import asyncio

import pytest

from segstream.settings import Settings
from tests.support.fakes import FakeClock, FakePublisher, FakeScoringStore
from worker.scoring import queue as queue_module
from worker.scoring.service import ScoringService
from worker.scoring.vectors import fields_for

DAY_MS = 86_400_000


def service() -> tuple[ScoringService, FakeScoringStore, FakePublisher, FakeClock]:
    store, publisher, clock = FakeScoringStore(), FakePublisher(), FakeClock()
    return ScoringService(Settings(), store, publisher, clock=clock), store, publisher, clock


def buyers(store: FakeScoringStore, clock: FakeClock, n: int) -> list[str]:
    """``n`` customers with a recent order each, owed a score (``unscored``)."""
    now = clock.time_ms()
    ids = [f"C{i}" for i in range(n)]
    for i, cid in enumerate(ids):
        store.apply(cid, f=1 + i % 3, m=5000 * (i + 1), t0=now - 90 * DAY_MS, t1=now - DAY_MS,
                    ts=now - DAY_MS)  # fmt: skip
    return ids


def published_ids(publisher: FakePublisher) -> list[str]:
    return sorted(c.customer_id for c in publisher.published)


def test_a_round_writes_first_segments_publishes_one_change_each_and_clears_unscored() -> None:
    svc, store, publisher, clock = service()
    ids = buyers(store, clock, 5)
    svc.enqueue(ids, None)

    async def body() -> int:
        changes = await svc.rounds.score(svc.queue.take())
        await svc.publish_settled()
        return changes

    assert asyncio.run(clock.run(body())) == 5
    assert store.unscored == {} and store.outboxes == {} and len(store.done) == 1
    assert published_ids(publisher) == ids
    assert all(store.hashes[c]["segment_seq"] == "1" for c in ids)
    m = svc.metrics
    assert (m.rounds, m.scored, m.changes, m.published, m.conflicts) == (1, 5, 5, 5, 0)


def test_a_customer_changed_after_its_read_conflicts_is_requeued_and_not_published() -> None:
    svc, store, publisher, clock = service()
    buyers(store, clock, 3)
    svc.enqueue(["C0", "C1", "C2"], None)

    async def body() -> None:
        items = svc.queue.take()
        fields = fields_for(svc.holder.model.feature_names)
        gathered = await svc.rounds.gather(items, fields)
        store.apply("C1", f=9)  # a newer state after the read: its stamp moved
        await svc.rounds.score(items, gathered)
        await svc.publish_settled()

    asyncio.run(clock.run(body()))
    assert svc.metrics.conflicts == 1 and svc.pending == {"C1": None}
    assert published_ids(publisher) == ["C0", "C2"]
    assert list(store.unscored) == ["C1"] and "segment" not in store.hashes["C1"]


def test_a_failed_write_behind_puts_its_round_back_in_the_queue() -> None:
    svc, store, publisher, clock = service()
    ids = buyers(store, clock, 3)
    svc.enqueue(ids, "order")
    store.failing_writes.append(ConnectionError("Redis went away"))
    assert svc.pacer.ingest_idle()  # so the write is behind: its reply comes in the pipeline

    async def body() -> int:
        changes = await svc.rounds.score(svc.queue.take())
        assert svc.metrics.rounds == 0 and len(svc.publications) == 1
        await svc.publish_settled()
        return changes

    assert asyncio.run(clock.run(body())) == 3  # planned; the failure is known later
    assert svc.pending == dict.fromkeys(ids, "order") and publisher.calls == []
    assert svc.metrics.failures == 1 and "Redis went away" in (svc.metrics.last_error or "")


def test_while_ingestion_is_busy_a_failed_write_fails_the_round_itself() -> None:
    svc, store, _, clock = service()
    ids = buyers(store, clock, 2)
    svc.enqueue(ids, None)
    store.failing_writes.append(ConnectionError("Redis went away"))
    svc.pacer.ingest_changed()

    async def body() -> None:
        with pytest.raises(ConnectionError):
            await svc.rounds.score(svc.queue.take())
        assert len(svc.publications) == 0 and not svc.rounds.lock.locked()

    asyncio.run(clock.run(body()))


def test_with_ingestion_idle_the_loop_sends_the_next_read_before_this_rounds_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(queue_module, "ROUND_MAX", 2)
    svc, store, publisher, clock = service()
    ids = buyers(store, clock, 5)
    svc.enqueue(ids, None)
    stopping = [False]

    async def body() -> None:
        loop = asyncio.ensure_future(svc.rounds.run(lambda: stopping[0]))
        assert await svc.idle(10.0)
        stopping[0] = True
        await loop

    asyncio.run(clock.run(body()))
    assert store.sent == [
        ("read", ["C2", "C3"]), ("read", ["C0", "C1"]), ("write", ["C0", "C1"]),
        ("read", ["C4"]), ("write", ["C2", "C3"]), ("write", ["C4"]),
    ]  # fmt: skip
    assert published_ids(publisher) == ids and store.unscored == {}
    assert svc.metrics.rounds == 3 and svc.metrics.scored == 5


def test_the_round_loop_keeps_no_more_than_the_depth_of_rounds_unpublished(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(queue_module, "ROUND_MAX", 1)
    svc, store, publisher, clock = service()
    ids = buyers(store, clock, 4)
    svc.enqueue(ids, None)
    gates = [publisher.hold_next() for _ in ids]
    stopping = [False]

    async def body() -> None:
        loop = asyncio.ensure_future(svc.rounds.run(lambda: stopping[0]))
        await clock.advance(1.0)
        assert svc.rounds.depth == 2 and len(svc.publications) == 2
        assert len(publisher.calls) == 2 and len(store.writes) == 3  # the third waits for a slot
        for gate in gates:
            gate.set()
        assert await svc.idle(10.0)
        stopping[0] = True
        await loop

    asyncio.run(clock.run(body()))
    assert published_ids(publisher) == ids


def test_a_rescored_customer_is_published_as_model_update_despite_its_own_event() -> None:
    svc, store, publisher, clock = service()
    buyers(store, clock, 2)

    async def body() -> None:
        assert await svc.rescore_all("t") == 2
        await svc.on_changed(["C0"], {"C0": "order"}, None)
        await svc.rounds.score(svc.queue.take())
        await svc.publish_settled()

    asyncio.run(clock.run(body()))
    reasons = {c.customer_id: c.payload for c in publisher.published}
    assert all(b'"reason":"model_update"' in payload for payload in reasons.values())
    assert sorted(reasons) == ["C0", "C1"] and svc.metrics.rescored == 2


def test_the_status_is_written_at_most_once_a_second_and_then_when_idle() -> None:
    svc, store, _, clock = service()
    ids = buyers(store, clock, 2)

    async def body() -> None:
        svc.enqueue(ids[:1], None)
        await svc.rounds.score(svc.queue.take())
        first = store.status["updated_ms"]
        await clock.advance(0.5)
        svc.enqueue(ids[1:], None)
        await svc.rounds.score(svc.queue.take())
        assert store.status["updated_ms"] == first and svc.status.stale
        await clock.advance(0.6)
        await svc.status.save()
        assert store.status["updated_ms"] == first + 1100 and not svc.status.stale

    asyncio.run(clock.run(body()))
