"""Forget one customer, start to end: Redis (one atomic script), then the tombstone.

Shared by ``segstream forget`` and the worker's erase-requests consumer. Order matters: the
tombstone goes out only after the forget script ran (so no later state write can recreate the
customer: the suppression entry drops their old events) and after every outbox round that held
one of their segment changes has been published (a worker publishes a round from memory, and a
change landing after the tombstone would bring the customer back for compacted consumers).
Every step is idempotent, so a retry after any failure is safe.
"""

from __future__ import annotations

import logging
from typing import Protocol

from worker.erase.metrics import EraseMetrics
from worker.erase.store import Forgotten

log = logging.getLogger(__name__)

#: How long a tombstone waits for outbox rounds holding the customer (a publishing worker
#: empties a round within a second or two; longer means no worker is publishing it now).
OUTBOX_WAIT_S = 30.0


class ForgetStoreLike(Protocol):
    async def forget(self, customer_id: str, now_ms: int | None = None) -> Forgotten: ...

    async def wait_published(self, rounds: tuple[str, ...], timeout_s: float) -> bool: ...

    async def forget_storefront(self, customer_id: str) -> None: ...


class TombstonesLike(Protocol):
    async def publish(self, customer_id: str) -> None: ...


class Eraser:
    """Forget customers: store, then tombstone; counts in ``metrics``, ids only at DEBUG."""

    def __init__(
        self,
        store: ForgetStoreLike,
        tombstones: TombstonesLike,
        metrics: EraseMetrics,
        outbox_wait_s: float = OUTBOX_WAIT_S,
    ) -> None:
        self.store = store
        self.tombstones = tombstones
        self.metrics = metrics
        self.outbox_wait_s = outbox_wait_s
        #: Customers forgotten whose tombstone failed: whether the first forget found anything
        #: (a retry finds nothing, and must still count the customer as forgotten).
        self._unfinished: dict[str, bool] = {}

    async def erase(self, customer_id: str, now_ms: int | None = None) -> Forgotten:
        """Forget ``customer_id`` and publish its tombstone; raises on any failure (retry)."""
        done = await self.store.forget(customer_id, now_ms)
        existed = self._unfinished.setdefault(customer_id, done.existed) or done.existed
        self._unfinished[customer_id] = existed
        if done.rounds and not await self.store.wait_published(done.rounds, self.outbox_wait_s):
            self.metrics.outbox_timeouts += 1
            log.warning(
                "a forgotten customer's segment change was still unpublished after %gs; its "
                "tombstone is published now (if a change for it follows, forget it again)",
                self.outbox_wait_s,
            )
        await self.store.forget_storefront(customer_id)
        await self.tombstones.publish(customer_id)
        self.metrics.tombstones += 1
        del self._unfinished[customer_id]
        if existed:
            self.metrics.forgotten += 1
        else:
            self.metrics.absent += 1
        log.debug("forgot customer %s (anything stored: %s)", customer_id, existed)
        return Forgotten(existed, done.rounds)
