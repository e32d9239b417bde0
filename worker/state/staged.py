"""The state store with stages: work that belongs to a batch's apply and its commit.

Some of what a batch of events changes lives outside the state script: anonymous visitors and
identity merges (:mod:`worker.identity.store`), the recommendation counts of its placed orders
(:mod:`worker.recommend.stage`). Each is a :class:`Stage` with its own Redis scripts, exactly
once on its own: the identity stage by its fence, the counts by draining what the state script
handed them in its own call. :class:`StagedStore` runs them inside ``send_apply``, so ingestion
books (commits) a batch's offsets only once every stage has answered: a crash in between
re-delivers the batch, the state fence skips what the state script took, and each stage skips
what it took. A stage's failure is the store's (``StoreUnavailable``: an outage, waited out;
``StoreRejected``: poison, the batch isolated record by record), so ingestion's failure rule
(docs/state.md, "When a batch fails") covers every stage unchanged.

A stage sees the batch as the state script does (the same decoded records; a record ingestion
dead-letters is no record of any stage's batch), so a bad record yields one dead letter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from worker.core.batch import ApplyResult, Batch, SnapshotSpec
from worker.redis_io import Pending
from worker.state.store import StateStore

__all__ = ["Stage", "StagedStore"]


class Stage(Protocol):
    """One job that runs with each batch's apply."""

    def prepare(self, batch: Batch) -> Any:
        """What the stage sends for ``batch`` (pure CPU work, overlapped with the previous
        batch's scripts); ``None`` when the batch holds nothing for it."""

    async def send(
        self, batch: Batch, prepared: Any, applied: Pending[ApplyResult]
    ) -> Pending[ApplyResult]:
        """Send the stage's work; the returned result is ``applied``'s, awaited, with what the
        stage adds to it (customers it changed). It owns ``applied`` from here: abandoning the
        returned pending abandons it."""

    async def close(self) -> None: ...


@dataclass(frozen=True)
class StagedPrepared:
    """The state script's prepared arguments and each stage's."""

    state: Any
    stages: tuple[Any, ...]


class StagedStore:
    """A :class:`StateStore` whose every apply also runs ``stages``, in their order."""

    def __init__(self, state: StateStore, stages: Sequence[Stage] = ()) -> None:
        self.state = state
        self.stages = tuple(stages)

    def prepare(self, batch: Batch, snapshot: SnapshotSpec | None = None) -> StagedPrepared:
        return StagedPrepared(
            self.state.prepare(batch, snapshot), tuple(s.prepare(batch) for s in self.stages)
        )

    async def send_apply(self, batch: Batch, prepared: Any = None) -> Pending[ApplyResult]:
        """The state script sent, then each stage with something to do for ``batch``."""
        if not isinstance(prepared, StagedPrepared):
            prepared = self.prepare(batch)
        pending = await self.state.send_apply(batch, prepared.state)
        for stage, work in zip(self.stages, prepared.stages, strict=True):
            if work is None:
                continue
            try:
                pending = await stage.send(batch, work, pending)
            except BaseException:
                pending.abandon()
                raise
        return pending

    async def apply(self, batch: Batch, prepared: Any = None) -> ApplyResult:
        """:meth:`send_apply`, then its result."""
        return await (await self.send_apply(batch, prepared)).result()

    async def counters(self) -> dict[str, int]:
        return await self.state.counters()

    async def fences(self, topic: str) -> dict[int, int]:
        return await self.state.fences(topic)

    async def customers_crossing(
        self, threshold_days: float, since_ms: int, until_ms: int
    ) -> list[str]:
        return await self.state.customers_crossing(threshold_days, since_ms, until_ms)

    async def close(self) -> None:
        for stage in reversed(self.stages):
            await stage.close()
        await self.state.close()
