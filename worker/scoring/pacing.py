"""How much of the worker's time scoring may take, and when it may take all of it.

Scoring shares the worker's event loop (and, on a small machine, its cores) with ingestion.
Flat out, it would take every gap ingestion leaves and slow it down, only to score customers
again and again between their events; paused after each round for
``round_s * (1 - share) / share``, it takes at most :meth:`Pacer.share` of the time, and a
customer's events of the pause are scored once, on its latest state. While ingestion is at
least ``settings.scoring.catch_up_lag`` records behind (a replay, a backfill), the share is the
catch-up one: draining first and scoring each customer once on its final state brings every
segment up to date sooner. Once ingestion is idle (:data:`INGEST_IDLE_S`), rounds follow each
other without a pause.
"""

from __future__ import annotations

from collections.abc import Callable

from segstream.settings import Settings
from worker.clock import Clock

#: Ingestion counts as idle once no batch has changed anyone for this long (s): a little more
#: than one empty fetch (200 ms). After a burst, this is how long its backlog waits before it is
#: scored flat out and read ahead.
INGEST_IDLE_S = 0.25
#: The pause looks at the share, the ingest clock and its interruptions this often (s).
PAUSE_STEP_S = 0.05


class Pacer:
    """The scoring share, catch-up and ingest-idle detection; time from ``clock``."""

    def __init__(
        self, settings: Settings, clock: Clock, behind: Callable[[], int] | None = None
    ) -> None:
        """``behind``: how many records ingestion has still to fetch (catch-up)."""
        self.settings = settings
        self.clock = clock
        self.behind = behind
        #: When an ingest batch last changed a customer (``clock.monotonic()``); never: -inf.
        self.changed_at = float("-inf")

    def ingest_changed(self) -> None:
        """An ingest batch changed customers just now."""
        self.changed_at = self.clock.monotonic()

    def ingest_idle(self) -> bool:
        return self.clock.monotonic() - self.changed_at >= INGEST_IDLE_S

    def catching_up(self) -> bool:
        """Whether ingestion is at least ``scoring.catch_up_lag`` records behind the brokers."""
        lag = self.settings.scoring.catch_up_lag
        return lag > 0 and self.behind is not None and self.behind() >= lag

    def share(self) -> float:
        """The share of the time scoring may take now (``--scoring-share``, or catching up)."""
        s = self.settings
        return (
            min(s.scoring.catch_up_share, s.scoring.share)
            if self.catching_up()
            else s.scoring.share
        )

    async def pause(self, round_s: float, interrupted: Callable[[], bool]) -> None:
        """After a round of ``round_s``, leave ingestion its share while events keep coming.

        The pause ends as soon as ingestion has been idle for :data:`INGEST_IDLE_S` or
        ``interrupted()`` (the service stops; something other than an ingest batch queued
        customers). The share is looked at again while the pause lasts: a catch-up that ends
        shortens it to the live one.
        """
        if round_s <= 0:
            return
        ended = self.clock.monotonic()
        while not interrupted():
            share = self.share()
            if share >= 1:
                return
            deadline = ended + round_s * (1 - share) / max(share, 0.01)
            now = self.clock.monotonic()
            if now >= deadline or self.ingest_idle():
                return
            await self.clock.sleep(min(deadline - now, PAUSE_STEP_S))
