"""The scoring queue: reasons, rescore labels, backpressure (manual time, no Redis)."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.fakes import FakeClock
from worker.scoring import queue as queue_module
from worker.scoring.queue import ScoringQueue


def test_a_queued_reason_is_not_overridden_by_a_later_enqueue_without_one() -> None:
    q = ScoringQueue(FakeClock())
    asyncio.run(q.on_changed(["A", "B"], {"A": "order", "B": "clicks"}))
    q.enqueue(["A", "C"], "recency_decay")
    q.enqueue(["B", "D"], None, urgent=False)
    assert q.pending == {"A": "order", "B": "clicks", "C": "recency_decay", "D": None}


def test_a_customer_queued_without_a_reason_takes_the_next_one_given() -> None:
    q = ScoringQueue(FakeClock())
    q.enqueue(["A"], None, urgent=False)
    q.enqueue(["A"], "recency_decay")
    assert q.pending == {"A": "recency_decay"}


def test_a_batch_without_reasons_for_everyone_queues_the_others_without_one() -> None:
    q = ScoringQueue(FakeClock())
    asyncio.run(q.on_changed(["A", "B"], {"B": "return"}))
    assert q.pending == {"A": None, "B": "return"}


def test_only_a_sweep_or_rescore_that_queues_someone_is_urgent() -> None:
    q = ScoringQueue(FakeClock())
    q.enqueue(["A"], None, urgent=False)
    q.enqueue([], "recency_decay")
    assert not q.urgent
    q.enqueue(["B"], "recency_decay")
    assert q.urgent


def test_rounds_take_the_oldest_customers_first_at_most_a_round_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(queue_module, "ROUND_MAX", 2)
    q = ScoringQueue(FakeClock())
    q.enqueue(["A", "B", "C"], None)
    assert list(q.take()) == ["A", "B"] and list(q.take()) == ["C"] and q.take() == {}


def test_a_rescored_customer_is_labelled_model_update_even_after_an_event_of_its_own() -> None:
    q = ScoringQueue(FakeClock())
    q.enqueue_rescore(["A", "B"])
    asyncio.run(q.on_changed(["A"], {"A": "order"}))  # its event arrives before its round
    items = q.take()
    assert items == {"A": "order", "B": "model_update"}
    assert q.relabel(items) == {"A": "model_update", "B": "model_update"}
    # once: a later round of A carries its own reason again
    assert q.relabel({"A": "clicks"}) == {"A": "clicks"}


def test_requeued_customers_keep_a_reason_queued_since() -> None:
    q = ScoringQueue(FakeClock())
    q.enqueue(["A"], "order")
    q.requeue({"A": None, "B": "clicks"})
    assert q.pending == {"A": "order", "B": "clicks"}


def test_ingestion_waits_while_too_many_are_queued_until_half_of_that_is_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(queue_module, "MAX_PENDING", 10)
    monkeypatch.setattr(queue_module, "ROUND_MAX", 3)
    clock = FakeClock()
    q = ScoringQueue(clock)

    async def scenario() -> None:
        waiting = asyncio.ensure_future(q.on_changed([f"C{i}" for i in range(11)], None))
        await clock.advance(1.0)
        assert not waiting.done()
        q.take()  # 8 left: still more than 5
        await clock.advance(1.0)
        assert not waiting.done()
        q.take()  # 5 left
        await clock.advance(queue_module.WAIT_STEP_S)
        assert waiting.done()

    asyncio.run(scenario())


def test_a_stopping_service_ends_the_backpressure_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue_module, "MAX_PENDING", 1)
    clock, stopping = FakeClock(), [False]
    q = ScoringQueue(clock, lambda: stopping[0])

    async def scenario() -> None:
        waiting = asyncio.ensure_future(q.on_changed(["A", "B"], None))
        await clock.advance(1.0)
        assert not waiting.done()
        stopping[0] = True
        await clock.advance(queue_module.WAIT_STEP_S)
        assert waiting.done() and len(q) == 2

    asyncio.run(scenario())


def test_waiting_for_work_ends_when_something_is_queued_or_at_the_timeout() -> None:
    clock = FakeClock()
    q = ScoringQueue(clock)

    async def scenario() -> None:
        started = clock.monotonic()
        await clock.run(q.wait_for_work(0.5))
        assert clock.monotonic() - started == 0.5
        waiting = asyncio.ensure_future(q.wait_for_work(0.5))
        await clock.advance(0.1)
        q.enqueue(["A"], None)
        await clock.settle()
        assert waiting.done() and clock.sleeping == 0

    asyncio.run(scenario())
