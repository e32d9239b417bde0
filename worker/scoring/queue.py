"""The customers waiting to be scored, why each one is, and the latest snapshot of their state.

The ingest hook, the sweep, rescores and the repair only *queue* customers here; the round
runner takes them out a round at a time, oldest first. A customer queued several times before
its round is scored once, on its latest state. Nothing is lost by queueing in memory: the
state script records every changed customer in ``{prefix}:unscored`` atomically with the state,
and the service re-queues whatever is left there.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Mapping, Sequence

from worker.clock import Clock
from worker.core.batch import PackedSnapshot
from worker.scoring.snapshot import SnapshotBatch, SnapshotIndex

#: Customers scored per round (one Lua read + one Lua write + one produce batch).
ROUND_MAX = 5000
#: Ingestion waits (backpressure) when more customers than this are queued.
MAX_PENDING = 200_000
#: How often a wait for the queue to shrink looks again (s).
WAIT_STEP_S = 0.02


class ScoringQueue:
    """Pending customers (id -> reason, ``None`` = none given), snapshots, rescore labels."""

    def __init__(self, clock: Clock, stopping: Callable[[], bool] = lambda: False) -> None:
        """``stopping``: true once the service stops (waits for the queue then end)."""
        self.clock = clock
        self.stopping = stopping
        #: Insertion order is age: rounds take the oldest first.
        self.pending: dict[str, str | None] = {}
        self.snapshots = SnapshotIndex()
        #: Set by :meth:`enqueue` (sweep, rescore): a pause of the scoring share ends at once.
        self.urgent = False
        #: Queued by a rescore, not scored yet: their change is ``model_update`` even when an
        #: event of theirs arrives first (its batch would otherwise relabel it).
        self.rescore_queued: set[str] = set()
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self.pending)

    async def on_changed(
        self,
        customer_ids: Sequence[str],
        reasons: Mapping[str, str] | None,
        snapshot: PackedSnapshot | None = None,
    ) -> None:
        """Queue an applied batch's changed customers; waits while the queue is too long."""
        # C-speed updates only: this runs for every applied batch; one pass over the queue
        # (each customer a random probe of a 100k-entry dict: ~0.4 us a customer)
        if snapshot is not None:
            # it says why each one changed, so no queued reason (one would override it)
            self.pending.update(dict.fromkeys(customer_ids))
            self.snapshots.add(SnapshotBatch(customer_ids, snapshot))
        else:
            if self.snapshots:  # an older snapshot of theirs is stale now: read them instead
                self.snapshots.discard(customer_ids)
            if reasons is None or len(reasons) < len(customer_ids):
                self.pending.update(dict.fromkeys(customer_ids))
            if reasons:
                self.pending.update(reasons)
        self._wake.set()
        if len(self.pending) > MAX_PENDING:
            await self.wait_below(MAX_PENDING // 2)

    def enqueue(self, customer_ids: Sequence[str], reason: str | None, urgent: bool = True) -> None:
        """Queue customers without overriding a reason an ingest hook already gave.

        ``urgent``: not paced by the scoring share. A sweep or a rescore is scored at once
        (events arriving meanwhile would relabel a rescored customer's change as theirs). A
        repair is not: its customers have no reason to lose, and during a burst its scan of
        ``unscored`` would end the pause page after page.
        """
        for cid in customer_ids:
            if self.pending.get(cid) is None:
                self.pending[cid] = reason
        if urgent and customer_ids:
            self.urgent = True
        self._wake.set()

    def enqueue_rescore(self, customer_ids: Sequence[str]) -> None:
        """Queue customers for a rescore: their change is ``model_update`` (:meth:`relabel`)."""
        self.rescore_queued.update(customer_ids)
        self.enqueue(customer_ids, "model_update")

    def requeue(self, items: Mapping[str, str | None]) -> None:
        """Put customers of a round back (a failure, a conflict), keeping newer reasons."""
        for cid, reason in items.items():
            self.pending.setdefault(cid, reason)

    def take(self) -> dict[str, str | None]:
        """The next round's customers, out of the queue: the oldest first."""
        # islice, not list(): the queue can hold 200k customers
        take = dict(itertools.islice(self.pending.items(), ROUND_MAX))
        for cid in take:
            del self.pending[cid]
        return take

    def relabel(self, items: Mapping[str, str | None]) -> Mapping[str, str | None]:
        """``items`` with every customer a rescore queued labelled ``model_update`` (once)."""
        if self.rescore_queued:
            rescored = self.rescore_queued.intersection(items)
            if rescored:
                self.rescore_queued.difference_update(rescored)
                return {**items, **dict.fromkeys(rescored, "model_update")}
        return items

    async def wait_below(self, n: int) -> None:
        """Until at most ``n`` customers are queued (or the service stops)."""
        while len(self.pending) > n and not self.stopping():
            await self.clock.sleep(WAIT_STEP_S)

    async def wait_for_work(self, timeout_s: float) -> None:
        """Until something is queued after the last call, or ``timeout_s`` passed."""
        woken = asyncio.ensure_future(self._wake.wait())
        timer = asyncio.ensure_future(self.clock.sleep(timeout_s))
        try:
            await asyncio.wait({woken, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (woken, timer):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._wake.clear()
