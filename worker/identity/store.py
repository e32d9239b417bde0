"""The state store ingestion writes through, with the identity stage after each apply.

A :class:`~worker.state.store.StateStore` whose ``send_apply`` result, for a batch holding
anonymous or identify clicks, also runs :class:`~worker.identity.stage.IdentityStage` before it
returns: ingestion books (commits) a batch's offsets only once that result is in, so the stage
runs after the state apply and before the commit, and a crash in between re-delivers the batch
(the state fence skips it, the identity fence takes what ``anon.lua`` did not). The stage's
failures are the store's (``StoreUnavailable``: an outage, waited out; ``StoreRejected``:
poison), so ingestion's failure rule (docs/state.md, "When a batch fails") covers it unchanged.

A batch without anonymous or identify clicks costs one pass over its records in ``prepare``
(overlapped with the previous batch's script) and no Redis call. Customers a merge changed are
reported with the batch's (an extra part of its :class:`ApplyResult`, reason ``clicks``), and
stamped unscored by ``merge.lua`` in any case.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker.connect import RedisTarget
from worker.core.batch import ApplyResult, Batch, SnapshotSpec
from worker.core.memory import MAX_FINGERPRINTS
from worker.identity.records import AnonCall, Limits, anon_calls
from worker.identity.stage import IdentityStage, StageResult
from worker.redis_io import Pending
from worker.state.store import StateStore


@dataclass(frozen=True)
class Prepared:
    """The state script's prepared arguments and the identity calls of the same batch."""

    state: Any
    calls: list[AnonCall]


class IdentityStateStore(StateStore):
    """:class:`StateStore` + the identity stage (see the module docstring)."""

    def __init__(
        self,
        redis: RedisTarget,
        prefix: str,
        limits: Limits | None = None,
        *,
        max_fingerprints: int = MAX_FINGERPRINTS,
    ) -> None:
        super().__init__(redis, prefix, max_fingerprints=max_fingerprints)
        self.identity = IdentityStage(redis, prefix, limits, max_fingerprints=max_fingerprints)

    def prepare(self, batch: Batch, snapshot: SnapshotSpec | None = None) -> Any:
        calls = anon_calls(batch, self.identity.keyspace, self.identity.limits)
        return Prepared(super().prepare(batch, snapshot), calls)

    async def send_apply(self, batch: Batch, prepared: Any = None) -> Pending[ApplyResult]:
        if isinstance(prepared, Prepared):
            state, calls = prepared.state, prepared.calls
        else:
            state, calls = prepared, anon_calls(batch, self.identity.keyspace, self.identity.limits)
        if state is None:  # the state store's own (its send_apply would call self.prepare)
            state = super().prepare(batch)
        pending = await super().send_apply(batch, state)
        if not calls:
            return pending

        async def receive() -> ApplyResult:
            applied = await pending.result()
            return with_merges(batch, applied, await self.identity.run(calls))

        return Pending(receive, pending.abandon)

    async def close(self) -> None:
        await self.identity.close()
        await super().close()


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
