"""The identity stage as a stage of the state store (:mod:`worker.state.staged`).

For a batch holding anonymous or identify clicks, :class:`IdentityStep` runs
:class:`~worker.identity.stage.IdentityStage` once the state script answered: ``anon.lua`` per
visitor space, then each transfer merged. It runs before the batch's offsets are committed, so
a crash in between re-delivers the batch (the state fence skips it, the identity fence takes
what ``anon.lua`` did not).

A batch without anonymous or identify clicks costs one pass over its records in ``prepare``
(overlapped with the previous batch's script) and no Redis call. Customers a merge changed are
reported with the batch's (an extra part of its :class:`ApplyResult`, reason ``clicks``), and
stamped unscored by ``merge.lua`` in any case.
"""

from __future__ import annotations

from collections.abc import Sequence

from worker.connect import RedisTarget
from worker.core.batch import ApplyResult, Batch
from worker.core.memory import MAX_FINGERPRINTS
from worker.identity.records import AnonCall, Limits, anon_calls
from worker.identity.stage import IdentityStage, StageResult
from worker.redis_io import Pending
from worker.state.staged import Stage, StagedStore
from worker.state.store import PurchaseLines, StateStore


class IdentityStep:
    """:class:`~worker.state.staged.Stage` running the identity stage after the state apply."""

    def __init__(self, identity: IdentityStage) -> None:
        self.identity = identity

    def prepare(self, batch: Batch) -> list[AnonCall] | None:
        return anon_calls(batch, self.identity.keyspace, self.identity.limits) or None

    async def send(
        self, batch: Batch, prepared: list[AnonCall], applied: Pending[ApplyResult]
    ) -> Pending[ApplyResult]:
        async def receive() -> ApplyResult:
            done = await applied.result()
            return with_merges(batch, done, await self.identity.run(prepared))

        return Pending(receive, applied.abandon)

    async def close(self) -> None:
        await self.identity.close()


class IdentityStateStore(StagedStore):
    """The worker's state store: the state script, the identity stage, then ``later`` stages."""

    def __init__(
        self,
        redis: RedisTarget,
        prefix: str,
        limits: Limits | None = None,
        *,
        max_fingerprints: int = MAX_FINGERPRINTS,
        later: Sequence[Stage] = (),
        lines_of: PurchaseLines | None = None,
    ) -> None:
        self.identity = IdentityStage(redis, prefix, limits, max_fingerprints=max_fingerprints)
        state = StateStore(redis, prefix, max_fingerprints=max_fingerprints, lines_of=lines_of)
        super().__init__(state, (IdentityStep(self.identity), *later))


def with_merges(batch: Batch, applied: ApplyResult, done: StageResult) -> ApplyResult:
    """``applied`` with the customers the stage's merges changed, as parts of their own (each
    with its call's stamp; no snapshot: scoring reads them)."""
    extra = [
        (Batch([]), ApplyResult(0, 0, list(m.changed), m.stamp)) for m in done.merged if m.changed
    ]
    if not extra:
        return applied
    parts = applied.parts or ((batch, applied),)
    return ApplyResult(
        applied=applied.applied,
        duplicates=applied.duplicates,
        changed=[*applied.changed, *(c for _, r in extra for c in r.changed)],
        parts=(*parts, *extra),
    )
