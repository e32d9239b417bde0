"""Merge the transfers a crash left in the outboxes: once at worker start, then periodically.

A transfer stays in its visitor space's outbox (``{space}:xfer``) only when the process died
(or Redis failed) between ``anon.lua`` writing it and the ``HDEL`` after its merge; the batch
path merges the ones it writes itself. Draining is idempotent (``merge.lua`` recognises a
transfer it merged), so several workers, or a drain beside a running batch, are safe.
"""

from __future__ import annotations

import logging
from typing import Any

from mode import Service

from worker.identity.stage import IdentityStage

log = logging.getLogger(__name__)

#: How often the outboxes are looked at after the start-up drain (an HSCAN per space).
DRAIN_INTERVAL_S = 30.0


class OutboxDrain(Service):
    """Drains :class:`IdentityStage`'s outboxes at start and every :data:`DRAIN_INTERVAL_S`."""

    def __init__(
        self, stage: IdentityStage, *, interval_s: float = DRAIN_INTERVAL_S, **kwargs: Any
    ) -> None:
        self.stage = stage
        self.interval_s = interval_s
        #: Transfers merged by drains so far, and the last failure (for tests and logs).
        self.drained = 0
        self.last_error: str | None = None
        super().__init__(**kwargs)

    async def drain_once(self) -> int:
        """One drain; a failure is logged and left for the next turn (nothing is lost)."""
        try:
            done = await self.stage.drain()
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("identity outbox drain failed (%s); retried in %gs", exc, self.interval_s)
            return 0
        self.last_error = None
        self.drained += done.transfers
        return done.transfers

    @Service.task
    async def _run(self) -> None:
        while not self.should_stop:
            await self.drain_once()
            await self.sleep(self.interval_s)

    async def on_stop(self) -> None:
        await self.stage.close()
