"""Recommendation counts as a stage of ingestion's apply (:mod:`worker.state.staged`).

The state script takes each placed order's lines with the order (the state store is built
with :func:`worker.recommend.batch.purchase_lines`) and hands the lines of the orders it
applies to its space's ``{space}:rbox``, in the same atomic call: so the counts take exactly
what the state took, once, by the state's own fence and fingerprints, and never a record it
refused or skipped. Once the state script answered, this stage drains the spaces where the
batch placed orders (count.lua), and the batch is committed only once that answered too. A
worker that dies in between leaves the lines in the list, and the next drain of the space
(the next batch, or the merge service at start) counts them. A refusal is the store's
(outage: waited out; anything else: ingestion isolates the record that keeps failing).
"""

from __future__ import annotations

import asyncio

from worker.core.batch import ApplyResult, Batch
from worker.recommend.metrics import RecommendMetrics
from worker.recommend.store import RecommendStore
from worker.redis_io import Pending

__all__ = ["RecommendStage"]


class RecommendStage:
    """Drains each batch's counted orders after its apply; ``counted`` is set when it did."""

    def __init__(self, store: RecommendStore, metrics: RecommendMetrics | None = None) -> None:
        self.store = store
        self.metrics = metrics or RecommendMetrics()
        #: Set whenever purchases were counted, so the merge follows promptly.
        self.counted = asyncio.Event()

    def prepare(self, batch: Batch) -> list[str] | None:
        """The spaces to drain after ``batch`` (``None`` when it placed no order)."""
        return self.store.spaces_with_orders(batch) or None

    async def send(
        self, batch: Batch, prepared: list[str], applied: Pending[ApplyResult]
    ) -> Pending[ApplyResult]:
        async def receive() -> ApplyResult:
            done = await applied.result()
            self._count(await self.store.drain(prepared))
            return done

        return Pending(receive, applied.abandon)

    def _count(self, orders: int) -> None:
        """Note ``orders`` this stage's drain counted; a merge is due if any."""
        self.metrics.applied += orders
        if orders:
            self.counted.set()

    async def close(self) -> None:
        await self.store.close()
