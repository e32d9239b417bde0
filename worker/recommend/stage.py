"""Recommendation counts as a stage of ingestion's apply (:mod:`worker.state.staged`).

Each batch ingestion applies holds, among its decoded events, the placed orders the counts take
(:func:`worker.recommend.batch.purchases_in`, prepared while the previous batch is in Redis).
Once the state script has taken the batch, their ``pop.lua`` calls (one per space) are sent,
and the batch is committed only once they answered: so the counts take what the state took
(applied now or before), never a record the state refused. Exactly once on its own:
``pop.lua``'s fence per partition (``{space}:rfence:<topic>``) skips what a redelivered batch
already counted. A refusal is the store's (outage: waited out; anything else: ingestion
isolates the record that keeps failing and dead-letters it, once).
"""

from __future__ import annotations

import asyncio

from worker.core.batch import ApplyResult, Batch
from worker.recommend.batch import RecommendBatch, purchases_in
from worker.recommend.metrics import RecommendMetrics
from worker.recommend.store import RecommendResult, RecommendStore
from worker.redis_io import Pending

__all__ = ["RecommendStage"]


class RecommendStage:
    """Counts each batch's placed orders with its apply; ``counted`` is set when it did."""

    def __init__(self, store: RecommendStore, metrics: RecommendMetrics | None = None) -> None:
        self.store = store
        self.metrics = metrics or RecommendMetrics()
        #: Set whenever purchases were counted, so the merge follows promptly.
        self.counted = asyncio.Event()

    def prepare(self, batch: Batch) -> RecommendBatch | None:
        return purchases_in(batch)

    async def send(
        self, batch: Batch, prepared: RecommendBatch, applied: Pending[ApplyResult]
    ) -> Pending[ApplyResult]:
        async def receive() -> ApplyResult:
            done = await applied.result()
            self._count(await self.store.apply(prepared))
            return done

        return Pending(receive, applied.abandon)

    def _count(self, got: RecommendResult) -> None:
        m = self.metrics
        m.applied += got.applied
        m.fenced += got.fenced
        m.suppressed += got.suppressed
        m.deduped += got.deduped
        if got.applied:
            self.counted.set()

    async def close(self) -> None:
        await self.store.close()
