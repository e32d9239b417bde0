"""The recommendations consumer: a :class:`~worker.side_consumer.SideConsumer` beside ingestion.

It reads the orders topic in its own consumer group (``<group_id>-recommend``, so it never
joins ingestion's rebalances and keeps its own offsets) and, per fetched batch:

1. turns placed orders into purchases (:mod:`worker.recommend.batch`); a record that does not
   decode is skipped and counted (ingestion dead-letters the same record with its reason);
2. applies them with one ``pop.lua`` call per space (:class:`RecommendStore`): per-partition
   fence ``{space}:rfence:<topic>``, decayed counts per segment and for the shop, the
   customers' recently bought skus, forgotten customers' old orders dropped;
3. commits the offsets.

Every ``merge_interval_s`` after it applied something it rewrites the merged top lists of every
space (``RecommendStore.merge``). Failures as ingestion's (docs/state.md, "When a batch fails"):
an outage is waited out with backoff, nothing committed; a batch Redis keeps refusing for
another reason is retried ``poison_retries`` times, then applied purchase by purchase, and a
purchase that is still refused is dead-lettered with the error while the fence moves past it.
No line at INFO or above names a customer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRecord
from mode import Service

from schemas.errors import SchemaError
from segstream.settings import Settings
from worker.backoff import backoff
from worker.recommend.batch import RecommendBatch, assemble
from worker.recommend.store import RecommendResult, RecommendStore
from worker.side_consumer import Fetched, SideConsumer, SideMetrics

log = logging.getLogger(__name__)

__all__ = ["RecommendMetrics", "RecommendService"]


@dataclass
class RecommendMetrics(SideMetrics):
    records: int = 0
    skipped: int = 0
    applied: int = 0
    fenced: int = 0
    suppressed: int = 0
    deduped: int = 0
    merges: int = 0


class RecommendService(SideConsumer):
    """Keeps the recommendation counts and top lists in step with the orders topic."""

    part = "recommend"
    noun = "orders"
    fetch_max_records = 2000
    metrics: RecommendMetrics

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self._store: RecommendStore | None = None
        self._dirty = True
        #: Woken when a batch applied something, so a merge follows promptly.
        self._applied = asyncio.Event()
        super().__init__(settings, settings.kafka.orders_topic, RecommendMetrics(), **kwargs)

    async def _open(self) -> None:
        s = self.settings
        self._store = RecommendStore(s.redis, s.redis.prefix, s.recommend)
        self._closers.append(self._store.close)

    @Service.task
    async def _merge_loop(self) -> None:
        """Merge after something was applied, at most once per ``merge_interval_s``."""
        interval = self.settings.recommend.merge_interval_s
        attempt = 0
        while not self._stopping:
            if not self._dirty:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._applied.wait(), timeout=max(interval, 0.05))
                self._applied.clear()
                continue
            store = self._store
            if store is None:
                await asyncio.sleep(0.1)
                continue
            self._dirty = False
            started_at = time.monotonic()
            try:
                await self.merge_now(store)
                attempt = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._dirty = True
                self.metrics.note_error(f"merge failed: {type(exc).__name__}: {exc}")
                if attempt == 0 or attempt % 10 == 0:
                    log.warning("recommendations merge failed (%s); retrying", exc)
                await asyncio.sleep(backoff(attempt))
                attempt += 1
                continue
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started_at)))

    async def merge_now(self, store: RecommendStore) -> None:
        await store.merge()
        self.metrics.merges += 1

    async def handle(self, fetched: Fetched) -> None:
        """One fetched batch: purchases applied (not committed)."""
        self.metrics.records += sum(len(records) for records in fetched.values())
        batch, skipped = assemble(fetched.values())
        self.metrics.skipped += skipped
        raw = {(r.topic, r.partition, r.offset): r for rs in fetched.values() for r in rs}
        await self._apply(batch, raw)

    async def _apply(
        self, batch: RecommendBatch, raw: Mapping[tuple[str, int, int], ConsumerRecord[Any, Any]]
    ) -> None:
        if await self._attempts_of(batch) is None:
            return
        log.error("a recommendations batch was refused %d times (%s); applying it piecewise",
                  self.settings.ingest.poison_retries, self.metrics.last_error)  # fmt: skip
        for one in batch.items():
            error = await self._attempts_of(one)
            if error is None:
                continue
            p = one.purchases[0]
            limit = self.settings.ingest.poison_retries
            reason = f"the recommendations store refused this record {limit} times: {error}"
            await self._dead_letter(
                raw[(p.topic, p.partition, p.offset)], SchemaError("$", reason[:300])
            )
            fence_only = RecommendBatch((), {(p.topic, p.partition): p.offset}, p.customer_id)
            if await self._attempts_of(fence_only) is not None:
                log.error("a refused purchase's fence move was refused too; it may be retried")
        # the partitions' high offsets (records that were no purchase) go to shard 0 as usual
        await self._attempts_of(RecommendBatch((), batch.high))

    async def _attempts_of(self, batch: RecommendBatch) -> str | None:
        """:meth:`_attempts` of ``batch``, counting what each space's call did."""
        store = self._store
        assert store is not None
        m = self.metrics

        def count(part: RecommendResult) -> None:
            m.applied += part.applied
            m.fenced += part.fenced
            m.suppressed += part.suppressed
            m.deduped += part.deduped
            if part.applied:
                self._dirty = True
                self._applied.set()

        return await self._attempts("a recommendations batch", lambda: store.apply(batch, count))
