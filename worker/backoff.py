"""Waiting out failures: how long before retry N, and retrying an operation until it works.

Used by ingestion (start-up steps) and scoring (Redis, the broker): what either has not done
stays owed (uncommitted offsets, ``unscored``, the outbox), so waiting and trying again is
always right.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: First wait, growth factor, cap (seconds).
BACKOFF_FIRST_S = 0.05
BACKOFF_FACTOR = 2.0
BACKOFF_MAX_S = 2.0


def backoff(attempt: int) -> float:
    """The wait before retry ``attempt`` (the exponent is capped: 2.0**1024 overflows)."""
    return float(min(BACKOFF_MAX_S, BACKOFF_FIRST_S * BACKOFF_FACTOR ** min(attempt, 32)))


async def retry(
    what: str,
    op: Callable[[], Awaitable[T]],
    *,
    noted: Callable[[str], None],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    give_up: Callable[[], None] | None = None,
) -> T:
    """``op()`` until it returns, with :func:`backoff` between attempts.

    Each failure goes to ``noted`` as ``"<what> failed: <type>: <message>"``; the 1st and every
    10th are logged. ``give_up`` is called before each attempt and may raise to stop retrying
    (a stopping service).
    """
    attempt = 0
    while True:
        if give_up is not None:
            give_up()
        try:
            return await op()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            noted(f"{what} failed: {type(exc).__name__}: {exc}")
            if attempt == 0 or attempt % 10 == 0:
                log.warning("%s failed (%s: %s); retrying (attempt %d)", what,
                            type(exc).__name__, exc, attempt + 1)  # fmt: skip
            await sleep(backoff(attempt))
            attempt += 1
