"""The worker's clock as a seam: elapsed time, wall time and sleeping behind one small Protocol.

Pacing, queue waits, status throttling and the scoring rounds ask a :class:`Clock` instead of
the ``time`` module, so a test can drive them with manual time (``tests/support/fakes.py``)
instead of sleeping. :data:`SYSTEM_CLOCK` is the real one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Elapsed time (seconds), wall time (epoch ms) and an awaitable sleep."""

    def monotonic(self) -> float: ...

    def time_ms(self) -> int: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """:class:`Clock` on ``time.monotonic``, ``time.time`` and ``asyncio.sleep``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time_ms(self) -> int:
        return int(time.time() * 1000)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK: Clock = SystemClock()
