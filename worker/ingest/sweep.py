"""The recency sweep: customers whose recency crossed a threshold since the previous sweep.

Recency grows with the clock, so a silent customer drifts toward "at risk" with no event at all.
Each sweep claims the time window ``(previous sweep, now]`` by swapping a watermark in Redis
(``{prefix}:sweep:last_ms``, one atomic ``SET ... GET``), then asks the store's last-order index
which customers crossed each threshold inside that window: a range read per threshold, never a
scan of all customers. Because the swap is atomic, two workers sweeping at once get disjoint
windows, so no leader election is needed and no customer is handed over twice. A crash between
the swap and the listener's ``on_recency_crossed`` skips that window's re-scores (the customers'
state itself is exact; their next event or a model update re-scores them).

The worker's composition (:mod:`worker.wiring`) builds the sweep; the faust app's timer runs it
(:func:`worker.app.sweep_once`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Protocol

from worker.connect import RedisTarget, async_redis

log = logging.getLogger(__name__)


class CrossingIndex(Protocol):
    async def customers_crossing(
        self, threshold_days: float, since_ms: int, until_ms: int
    ) -> list[str]: ...


def watermark_key(prefix: str) -> str:
    return f"{prefix}:sweep:last_ms"


class RecencySweep:
    """Claims sweep windows in Redis and collects the customers crossing any threshold."""

    def __init__(
        self,
        redis: RedisTarget,
        prefix: str,
        thresholds_days: Sequence[float],
        first_window_s: float,
    ) -> None:
        self.key = watermark_key(prefix)
        self.thresholds_days = tuple(thresholds_days)
        self.first_window_ms = int(first_window_s * 1000)
        self._redis = async_redis(redis)

    async def claim_window(self, now_ms: int | None = None) -> tuple[int, int]:
        """``(since_ms, until_ms]`` this sweep owns; the first sweep looks one interval back."""
        until = int(time.time() * 1000) if now_ms is None else now_ms
        old = await self._redis.set(self.key, until, get=True)
        since = int(old) if old is not None else until - self.first_window_ms
        return min(since, until), until

    async def run_once(self, index: CrossingIndex, now_ms: int | None = None) -> list[str]:
        since, until = await self.claim_window(now_ms)
        found: dict[str, None] = {}
        for days in self.thresholds_days:
            for customer in await index.customers_crossing(days, since, until):
                found.setdefault(customer, None)
        return list(found)

    async def close(self) -> None:
        await self._redis.aclose()
