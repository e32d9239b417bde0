"""Retry an operation of scoring until it succeeds: every failure noted, some logged, backoff.

Scoring never gives up on Redis or the broker: what it has not done stays owed (``unscored``,
the outbox), so waiting and trying again is always right.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from worker.backoff import backoff
from worker.clock import Clock
from worker.scoring.metrics import ScoringMetrics

log = logging.getLogger(__name__)

T = TypeVar("T")


async def retry(
    what: str, op: Callable[[], Awaitable[T]], metrics: ScoringMetrics, clock: Clock
) -> T:
    """``op()`` until it returns; each failure is noted, the 1st and every 10th logged."""
    attempt = 0
    while True:
        try:
            return await op()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            metrics.note(f"{what} failed: {type(exc).__name__}: {exc}")
            if attempt == 0 or attempt % 10 == 0:
                log.warning("%s failed (%s: %s); retrying", what, type(exc).__name__, exc)
            await clock.sleep(backoff(attempt))
            attempt += 1
