"""Rate control for producers: a token bucket (events/s) and event-time pacing (--time-scale).

Both only ever sleep; neither drops anything. They read a monotonic clock, which is injectable
so tests can drive them without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """At most ``rate`` events per second on average, with bursts up to ``burst`` events."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate / 20)
        self._clock, self._sleep = clock, sleep
        self._tokens = self.burst
        self._last = clock()

    def acquire(self, n: float = 1.0) -> None:
        """Wait until ``n`` tokens are available, then take them."""
        while True:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            need = min(n, self.burst)
            # the epsilon absorbs float rounding, which could otherwise leave a shortfall
            # smaller than the clock can measure and spin here forever
            if self._tokens >= need - 1e-9:
                self._tokens -= n
                return
            self._sleep((need - self._tokens) / self.rate)


class EventTimePacer:
    """Keeps the gaps between events' times, divided by ``scale`` (60 = an hour in a minute).

    Events that go back in time (an unsorted file) are sent at once; the pacing continues from
    the latest event time seen.
    """

    def __init__(
        self,
        scale: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if scale <= 0:
            raise ValueError(f"time scale must be positive, got {scale}")
        self.scale = scale
        self._clock, self._sleep = clock, sleep
        self._origin_event_ms: int | None = None
        self._origin_wall = 0.0

    def wait_for(self, event_time_ms: int) -> None:
        if self._origin_event_ms is None:
            self._origin_event_ms = event_time_ms
            self._origin_wall = self._clock()
            return
        due = self._origin_wall + (event_time_ms - self._origin_event_ms) / 1000 / self.scale
        delay = due - self._clock()
        if delay > 0:
            self._sleep(delay)
