"""The recommendations merge: the merged top lists rewritten after purchases were counted.

Ingestion counts each batch's placed orders (:class:`~worker.recommend.stage.RecommendStage`);
this service rewrites the merged top lists of every space (``RecommendStore.merge``) at most
once per ``merge_interval_s``, soon after the stage counted something, and once at start (a
worker that died between counting and merging leaves lists a merge behind). A failed merge is
retried with backoff; it is idempotent, so any worker may run it at any time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from mode import Service

from segstream.settings import Settings
from worker.backoff import backoff
from worker.recommend.metrics import RecommendMetrics
from worker.recommend.stage import RecommendStage
from worker.recommend.store import RecommendStore

log = logging.getLogger(__name__)

__all__ = ["RecommendMerger"]


class RecommendMerger(Service):
    """Keeps the merged top lists in step with what ``stage`` counts."""

    def __init__(self, settings: Settings, stage: RecommendStage, **kwargs: Any) -> None:
        self.settings = settings
        self.stage = stage
        self.metrics: RecommendMetrics = stage.metrics
        self._store = RecommendStore(settings.redis, settings.redis.prefix, settings.recommend)
        self._dirty = True
        self._stopping = False
        super().__init__(**kwargs)

    async def on_stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(Exception):
            await self._store.close()

    @Service.task
    async def _merge_loop(self) -> None:
        """Merge after something was counted, at most once per ``merge_interval_s``."""
        interval = self.settings.recommend.merge_interval_s
        counted = self.stage.counted
        attempt = 0
        while not self._stopping:
            if counted.is_set():
                counted.clear()
                self._dirty = True
            if not self._dirty:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(counted.wait(), timeout=max(interval, 0.05))
                continue
            self._dirty = False
            started_at = time.monotonic()
            try:
                # lines a worker left undrained (it died after its apply) are counted first
                self.metrics.applied += await self._store.drain(self._store.keyspace.spaces)
                await self._store.merge()
                self.metrics.merges += 1
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
