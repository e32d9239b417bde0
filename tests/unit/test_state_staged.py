"""The staged state store runs each stage after the state script, in order, and only when the
batch holds something for it; a stage that fails to send abandons what was sent before it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from worker.core.batch import ApplyResult, Batch
from worker.redis_io import Pending
from worker.state.staged import StagedStore


class FakeState:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def prepare(self, batch: Batch, snapshot: Any = None) -> str:
        return "state-args"

    async def send_apply(self, batch: Batch, prepared: Any = None) -> Pending[ApplyResult]:
        self.log.append(f"state sent {prepared}")

        async def receive() -> ApplyResult:
            self.log.append("state answered")
            return ApplyResult(1, 0, ["C1"])

        return Pending(receive, lambda: self.log.append("state abandoned"))


class FakeStage:
    def __init__(self, name: str, log: list[str], work: Any, fail: bool = False) -> None:
        self.name, self.log, self.work, self.fail = name, log, work, fail

    def prepare(self, batch: Batch) -> Any:
        return self.work

    async def send(
        self, batch: Batch, prepared: Any, applied: Pending[ApplyResult]
    ) -> Pending[ApplyResult]:
        if self.fail:
            raise ConnectionError("down")

        async def receive() -> ApplyResult:
            done = await applied.result()
            self.log.append(f"{self.name} ran {prepared}")
            return ApplyResult(done.applied, 0, [*done.changed, self.name])

        return Pending(receive, applied.abandon)

    async def close(self) -> None:
        self.log.append(f"{self.name} closed")


def test_stages_run_after_the_state_in_order_and_only_with_work() -> None:
    log: list[str] = []
    stages = [FakeStage("a", log, "A"), FakeStage("b", log, None), FakeStage("c", log, "C")]
    store = StagedStore(FakeState(log), stages)  # type: ignore[arg-type]
    result = asyncio.run(store.apply(Batch([])))
    assert log == ["state sent state-args", "state answered", "a ran A", "c ran C"]
    assert result.changed == ["C1", "a", "c"]


def test_a_stage_that_cannot_send_abandons_the_state_call() -> None:
    log: list[str] = []
    store = StagedStore(FakeState(log), [FakeStage("a", log, "A", fail=True)])  # type: ignore[arg-type]
    with pytest.raises(ConnectionError):
        asyncio.run(store.send_apply(Batch([])))
    assert log == ["state sent state-args", "state abandoned"]
