"""The segmentation seam: ``on_changed`` after each applied batch, ``on_recency_crossed`` per sweep.

The ingest service runs in-process here (a mode Service, as the faust app starts it) against the
real broker and Redis, so what its change listener hears can be observed directly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from schemas import ClickEvent, LineItem, OrderEvent
from segstream.settings import Settings
from tests.support.producing import produce, records_for
from tests.support.synthetic import Event
from worker.core.batch import PackedSnapshot
from worker.ingest.listener import ChangeListener, NullListener
from worker.ingest.service import IngestService
from worker.ingest.sweep import RecencySweep
from worker.state.store import StateStore

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(autouse=True)
def _remove_keys_afterwards(redis_client: object) -> None:
    """``redis_client`` deletes every key under this test's prefix when the test ends."""


def _order(
    i: int, customer: str, status: str = "placed", days_ago: float = 1, now: datetime = NOW
) -> OrderEvent:
    return OrderEvent(
        event_id=f"e-{i}-{status}", schema_version=1, customer_id=customer, order_id=f"O{i}",
        event_time=now - timedelta(days=days_ago), status=status,  # type: ignore[arg-type]
        items=[LineItem(sku="S", quantity=1, unit_price=20.0)], total=20.0,
    )  # fmt: skip


def _click(i: int, customer: str) -> ClickEvent:
    return ClickEvent(
        event_id=f"k-{i}", schema_version=1, session_id=f"s-{i}", event_time=NOW,
        type="page_view", customer_id=customer,
    )  # fmt: skip


class _Recorder(NullListener):
    """A listener that hands what it hears to the test's callbacks (the others ignore it)."""

    def __init__(
        self,
        on_changed: Callable[..., Awaitable[None]] | None = None,
        on_recency_crossed: Callable[[Sequence[str]], Awaitable[None]] | None = None,
    ) -> None:
        self._changed, self._crossed = on_changed, on_recency_crossed

    async def on_changed(
        self,
        customer_ids: Sequence[str],
        reasons: Mapping[str, str] | None,
        snapshot: PackedSnapshot | None,
    ) -> None:
        if self._changed is not None:
            await self._changed(customer_ids, reasons, snapshot)

    async def on_recency_crossed(self, customer_ids: Sequence[str]) -> None:
        if self._crossed is not None:
            await self._crossed(customer_ids)


def _ingest(settings: Settings, listener: ChangeListener) -> IngestService:
    store = StateStore(settings.redis.url, settings.redis.prefix)
    return IngestService(settings, store=store, listener=listener)


async def _until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_on_changed_gets_every_changed_customer_once_with_its_reason(settings: Settings) -> None:
    events: list[Event] = [
        _order(1, "buyer"),
        _order(2, "refunded"),
        _order(2, "refunded", "returned"),
        _click(1, "browser"),
        _click(2, "buyer"),
    ]
    calls: list[tuple[list[str], dict[str, str]]] = []

    async def on_changed(
        ids: Sequence[str], reasons: Mapping[str, str], snapshot: PackedSnapshot | None
    ) -> None:
        assert snapshot is None  # nobody asked for one
        calls.append((list(ids), dict(reasons)))

    async def scenario() -> None:
        service = _ingest(settings, _Recorder(on_changed=on_changed))
        await service.start()
        try:
            produce(settings.kafka.bootstrap, records_for(settings, events))
            await _until(lambda: service.metrics.valid >= len(events), 60, "all events applied")
            # The same events again change nothing, so the listener hears nothing new.
            produce(settings.kafka.bootstrap, records_for(settings, events))
            await _until(lambda: service.metrics.duplicates >= len(events), 60, "replay skipped")
        finally:
            await service.stop()

    asyncio.run(scenario())
    seen: dict[str, set[str]] = {}
    for ids, reasons in calls:
        assert set(ids) == set(reasons)
        for cid in ids:
            seen.setdefault(cid, set()).add(reasons[cid])
    assert set(seen) == {"buyer", "refunded", "browser"}
    assert seen["browser"] == {"clicks"}
    assert "order" in seen["buyer"]
    assert seen["refunded"] <= {"order", "return"} and seen["refunded"]


def test_sweep_hands_over_customers_whose_recency_crossed_a_threshold_once(
    settings: Settings,
) -> None:
    minute = 1 / 1440
    now = datetime.now(UTC)
    # "fresh" crossed 30 days a minute ago, "soon" crosses in a minute, the others are far off.
    events = [
        _order(1, "fresh", days_ago=30 + minute, now=now),
        _order(2, "soon", days_ago=30 - minute, now=now),
        _order(3, "old", days_ago=45, now=now),
        _order(4, "recent", days_ago=5, now=now),
    ]
    crossed: list[list[str]] = []

    async def record(ids: Sequence[str]) -> None:
        crossed.append(list(ids))

    async def scenario() -> None:
        from worker.app import sweep_once

        service = _ingest(settings, NullListener())
        await service.start()
        sweep = RecencySweep(settings.redis.url, settings.redis.prefix, (30, 60), 10.0)
        store = StateStore(settings.redis.url, settings.redis.prefix)
        try:
            produce(settings.kafka.bootstrap, records_for(settings, events))
            await _until(lambda: service.metrics.valid >= len(events), 60, "orders applied")
            now_ms = int(now.timestamp() * 1000)
            await sweep.claim_window(now_ms - 120_000)  # as if the last sweep ran 2 min ago
            # The app's timer body: window (2 min ago, wall clock now] -> only "fresh".
            await sweep_once(service, sweep, _Recorder(on_recency_crossed=record))
            assert crossed == [["fresh"]]
            assert service.metrics.sweeps == 1 and service.metrics.recency_crossed == 1
            # Two minutes on, "soon" has crossed too; the window starts where the last ended.
            assert await sweep.run_once(store, now_ms + 120_000) == ["soon"]
            # A consumed window is never handed over twice.
            assert await sweep.run_once(store, now_ms + 120_000) == []
        finally:
            await sweep.close()
            await store.close()
            await service.stop()

    asyncio.run(scenario())


def test_behind_is_the_backlog_still_to_fetch_and_falls_to_zero(settings: Settings) -> None:
    """What the scoring service reads to know it is catching up (``scoring.catch_up_lag``)."""
    events = [_click(i, f"c{i % 50}") for i in range(3000)]
    seen: list[int] = []

    async def scenario() -> None:
        service = _ingest(
            settings.with_(batch_max_records=100),
            _Recorder(on_changed=lambda *_: record(service)),
        )
        produce(settings.kafka.bootstrap, records_for(settings, events))  # a backlog first
        await service.start()
        try:
            await _until(lambda: service.metrics.valid >= len(events), 60, "all events applied")
            assert service.behind() == 0
        finally:
            await service.stop()

    async def record(service: IngestService) -> None:
        seen.append(service.behind())

    asyncio.run(scenario())
    assert max(seen) >= 2000  # early batches: most of the 3000 still on the broker
    assert seen[-1] < 200
