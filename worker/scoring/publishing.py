"""Ordered publication of the rounds' changes, behind the rounds that follow, and outbox replay.

Waiting for the broker's acknowledgements would take half of a round's time; the next round's
read, assignment and write do not need them. So up to ``depth`` rounds are in flight at once
(between their write and their acknowledgement), never two with a customer in common: a round
first waits for every earlier one (oldest first) while one of them holds one of its customers,
so a customer's changes reach the topic in ``segment_seq`` order even when a publication fails
and is retried. A round leaves the outbox only once acknowledged; the outbox covers a crash
meanwhile and is published again at start-up (:meth:`Publications.replay_outbox`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from worker.backoff import retry
from worker.clock import Clock
from worker.scoring.metrics import ScoringMetrics
from worker.scoring.plan import OutgoingChange, from_outbox
from worker.scoring.ports import ChangePublisherPort, ScoringStorePort

log = logging.getLogger(__name__)

#: Rounds whose publications may be in flight at once (they never share a customer).
PUBLISH_DEPTH = 2


class Publications:
    """The rounds in flight, oldest first, each with the customers it holds."""

    def __init__(
        self,
        publisher: ChangePublisherPort,
        store: ScoringStorePort,
        metrics: ScoringMetrics,
        clock: Clock,
        depth: int = PUBLISH_DEPTH,
    ) -> None:
        self.publisher = publisher
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.depth = depth
        self._flying: list[tuple[frozenset[str], asyncio.Future[Any]]] = []

    def __len__(self) -> int:
        return len(self._flying)

    def all_done(self) -> bool:
        """Every round in flight has finished (its entry may still await settling)."""
        return all(task.done() for _, task in self._flying)

    async def publish(self, items: Sequence[OutgoingChange], *fields: str) -> None:
        """Publish until acknowledged (the outbox keeps them meanwhile), then clear ``fields``."""
        if items:
            await self._retry(
                f"publish {len(items)} change(s)", lambda: self.publisher.publish(items)
            )
        done = [f for f in fields if f]
        if done or items:
            await self._retry("clear the outbox", lambda: self.store.published(done, items))
        self.metrics.published += len(items)

    async def _retry(self, what: str, op: Callable[[], Awaitable[Any]]) -> None:
        await retry(what, op, noted=self.metrics.note, sleep=self.clock.sleep)

    async def publish_behind(
        self,
        items: Sequence[OutgoingChange],
        field: str,
        then: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        """Publish a round's changes (outbox ``field``) while the next rounds are scored;
        ``then()`` once they are acknowledged (at once when there is nothing to publish)."""
        if not (items or field):
            if then is not None:
                await then()
            return

        async def run() -> None:
            await self.publish(items, field)
            if then is not None:
                await then()

        await self.start(frozenset(c.customer_id for c in items), run)

    async def start(self, ids: frozenset[str], run: Callable[[], Awaitable[Any]]) -> None:
        """Start a round (``run()``, holding customers ``ids``) once the order rules allow it.

        Returns once it is in flight: after every earlier round that holds one of ``ids``, and
        enough of the oldest to stay within ``depth``, have settled.
        """
        while self._flying and (
            len(self._flying) >= self.depth
            or any(not ids.isdisjoint(held) for held, _ in self._flying)
        ):
            await self.settle_oldest()
        self._flying.append((ids, asyncio.ensure_future(run())))

    async def settle_oldest(self) -> None:
        """Until the oldest round in flight has finished; it leaves the list (even on failure)."""
        _, task = self._flying[0]
        try:
            await task
        finally:
            if self._flying and self._flying[0][1] is task:
                self._flying.pop(0)

    async def settled(self) -> None:
        """Until every round's changes are acknowledged and out of the outbox."""
        while self._flying:
            await self.settle_oldest()

    async def wait(self, timeout_s: float) -> None:
        """Up to ``timeout_s`` for the rounds in flight (a stopping worker's last acks)."""
        if self._flying:
            tasks = asyncio.gather(*(task for _, task in self._flying))
            await asyncio.wait_for(asyncio.shield(tasks), timeout_s)

    async def replay_outbox(self) -> int:
        """Publish changes an earlier run wrote but did not get acknowledged (start-up)."""
        rounds = await self.store.outbox()
        if not rounds:
            return 0
        items = from_outbox(rounds)
        await self.publish(items, *(name for name, _ in rounds))
        log.info("published %d change(s) left in the outbox by a previous run", len(items))
        return len(items)
