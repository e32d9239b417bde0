"""Ordered publication behind the rounds, and the outbox replay, on fakes (no broker, no sleep)."""

from __future__ import annotations

import asyncio

import msgspec

from tests.support.fakes import FakeClock, FakePublisher, FakeScoringStore
from worker.scoring.metrics import ScoringMetrics
from worker.scoring.plan import OutgoingChange
from worker.scoring.publishing import Publications


def change(cid: str, seq: int) -> OutgoingChange:
    return OutgoingChange(cid, seq, "km-1", msgspec.json.encode({"model_version": "km-1"}))


def parts() -> tuple[FakeClock, FakePublisher, FakeScoringStore, ScoringMetrics]:
    return FakeClock(), FakePublisher(), FakeScoringStore(), ScoringMetrics()


def test_a_customers_changes_reach_the_publisher_in_seq_order_when_a_publication_is_retried() -> (
    None
):
    clock, publisher, store, metrics = parts()
    publishing = Publications(publisher, store, metrics, clock)
    publisher.fail_next(2)  # round 1's first two attempts fail; it is retried after a backoff

    async def scenario() -> None:
        await publishing.publish_behind([change("X", 1), change("Y", 1)], "r1")
        await publishing.publish_behind([change("X", 2)], "r2")  # waits for r1, retries included
        await publishing.publish_behind([change("Z", 1)], "r3")
        await publishing.settled()

    asyncio.run(clock.run(scenario()))
    seqs = [c.segment_seq for c in publisher.published if c.customer_id == "X"]
    assert seqs == [1, 2]
    assert [len(call) for call in publisher.calls] == [2, 2, 2, 1, 1]  # r1 x3, then r2, r3
    assert store.done == ["r1", "r2", "r3"]
    assert metrics.failures == 2 and metrics.published == 4
    assert metrics.last_error and "broker unavailable" in metrics.last_error


def test_no_more_rounds_than_the_depth_are_in_flight_even_when_disjoint() -> None:
    clock, publisher, store, metrics = parts()
    publishing = Publications(publisher, store, metrics, clock, depth=2)

    async def scenario() -> None:
        gates = [publisher.hold_next() for _ in range(3)]
        await publishing.publish_behind([change("A", 1)], "r1")
        await publishing.publish_behind([change("B", 1)], "r2")
        third = asyncio.ensure_future(publishing.publish_behind([change("C", 1)], "r3"))
        await clock.settle()
        assert len(publishing) == 2 and not third.done() and len(publisher.calls) == 2
        gates[1].set()  # the newer one is acknowledged: the oldest still holds its place
        await clock.settle()
        assert not third.done()
        gates[0].set()
        await clock.settle()
        assert third.done() and len(publishing) == 2 and len(publisher.calls) == 3
        gates[2].set()
        await publishing.settled()

    asyncio.run(scenario())
    assert store.done == ["r2", "r1", "r3"] and len(publishing) == 0


def test_a_round_without_changes_still_clears_its_outbox_entry_and_none_is_sent() -> None:
    clock, publisher, store, metrics = parts()
    publishing = Publications(publisher, store, metrics, clock)

    async def scenario() -> None:
        await publishing.publish_behind([], "r1")
        await publishing.publish_behind([], "")  # no write at all: nothing in flight
        assert len(publishing) == 1
        await publishing.settled()

    asyncio.run(scenario())
    assert publisher.calls == [] and store.done == ["r1"]


def test_the_outbox_of_an_earlier_run_is_published_in_seq_order_without_conflicts() -> None:
    clock, publisher, store, metrics = parts()
    store.outboxes = {
        "t2": [("X", 2, change("X", 2).payload), ("Y", 1, change("Y", 1).payload)],
        "t1": [("X", 1, change("X", 1).payload)],
    }
    store.skips = {"t2": ["Y"]}  # Y conflicted in that round: its event is not to go out
    publishing = Publications(publisher, store, metrics, clock)
    assert asyncio.run(publishing.replay_outbox()) == 2
    assert publisher.published == [change("X", 1), change("X", 2)]
    assert sorted(store.done) == ["t1", "t2"] and store.outboxes == {} and store.skips == {}
    assert asyncio.run(publishing.replay_outbox()) == 0
