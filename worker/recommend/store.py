"""The Redis side of recommendations: pop.lua per space a batch touches, and the merge.

A batch's purchases are grouped by the customer's space (:class:`~worker.state.keys.Keyspace`),
as ingestion and profiles split theirs, so one call touches one space and runs on the primary of
its slot. Each space's fence moves to the highest offset of its own purchases, so a batch half
applied when the worker died is re-applied exactly where a space had not taken it yet.

The merge (:meth:`RecommendStore.merge`) reads each space's counts (collect.lua), merges them
(:mod:`worker.recommend.merge`) and writes the lists into every space (rtop.lua): idempotent,
so any worker may run it at any time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from segstream.redact import redact
from segstream.settings import RecommendSettings
from worker.connect import RedisTarget, keyspace, redis_settings, script_client
from worker.recommend.batch import Purchase, RecommendBatch
from worker.recommend.decay import half_life_ms
from worker.recommend.merge import SpaceCounts, merge
from worker.redis_io import Pending, Script
from worker.state.errors import redis_errors
from worker.state.keys import Keyspace

__all__ = ["RecommendResult", "RecommendStore", "build_args", "split"]

POP = Script.packaged("worker.recommend", "pop.lua")
COLLECT = Script.packaged("worker.recommend", "collect.lua")
RTOP = Script.packaged("worker.recommend", "rtop.lua")
#: The merge reads each segment's best (this many x the list size) members of every space.
COLLECT_FACTOR = 2


@dataclass(frozen=True, slots=True)
class RecommendResult:
    applied: int = 0
    fenced: int = 0
    suppressed: int = 0
    #: Orders the customer's ``ro`` already held (a replay at new offsets).
    deduped: int = 0

    def __add__(self, other: RecommendResult) -> RecommendResult:
        return RecommendResult(
            self.applied + other.applied,
            self.fenced + other.fenced,
            self.suppressed + other.suppressed,
            self.deduped + other.deduped,
        )


def build_args(batch: RecommendBatch, space: str, half_life: int, pop_max: int) -> list[Any]:
    """pop.lua's ARGV for ``batch`` in ``space`` (layout: the head of pop.lua)."""
    high = batch.high
    index = {tp: i for i, tp in enumerate(high, start=1)}
    args: list[Any] = [space, half_life, pop_max, len(index)]
    for (topic, partition), top in high.items():
        args += [topic, partition, top]
    args.append(len(batch.purchases))
    for p in batch.purchases:
        args += [p.customer_id, index[(p.topic, p.partition)], p.offset, p.time_ms, p.order_hash]
        args.append(len(p.lines))
        for line in p.lines:
            args += [line.member, line.sku_hash, line.units]
    return args


def split(batch: RecommendBatch, space: Keyspace) -> list[tuple[str, RecommendBatch]]:
    """``batch`` as one batch per space it touches, in shard order (one, on a single Redis)."""
    if not space.cluster:
        return [(space.spaces[0], batch)]
    by_shard: dict[int, list[Purchase]] = {}
    for p in batch.purchases:
        by_shard.setdefault(space.shard_of(p.customer_id), []).append(p)
    return [(space.spaces[shard], RecommendBatch(by_shard[shard])) for shard in sorted(by_shard)]


class RecommendStore:
    """Async writer of the counts (one pop.lua call per space and batch) and the merge."""

    def __init__(self, redis: RedisTarget, prefix: str, settings: RecommendSettings) -> None:
        self.where = redact(redis_settings(redis).url)
        self.keyspace = keyspace(redis, prefix)
        self.half_life = half_life_ms(settings.half_life_days)
        self.pop_max = settings.pop_max
        self.top_max = settings.top_max
        self._scripts = script_client(redis)

    def _key(self, space: str) -> str | None:
        return f"{space}:rmeta" if self.keyspace.cluster else None

    async def send(self, batch: RecommendBatch) -> Pending[RecommendResult]:
        """Send ``batch``'s pop.lua calls (one per space); returns once Redis has them all.

        The result raises StoreUnavailable (retry) or StoreRejected. A space whose call
        landed before another's failed is skipped by its fence on the retry.
        """
        sent: list[Pending[Any]] = []
        with self._errors("refused a recommendations batch"):
            try:
                for space, part in split(batch, self.keyspace):
                    args = build_args(part, space, self.half_life, self.pop_max)
                    sent.append(await self._scripts.send(POP, args, self._key(space)))
            except BaseException:
                for pending in sent:
                    pending.abandon()
                raise

        async def receive() -> RecommendResult:
            total = RecommendResult()
            with self._errors("refused a recommendations batch"):
                for i, pending in enumerate(sent):
                    try:
                        reply = await pending.result()
                    except BaseException:
                        for rest in sent[i + 1 :]:
                            rest.abandon()
                        raise
                    total = total + RecommendResult(*(int(v) for v in reply[:4]))
            return total

        def abandon() -> None:
            for pending in sent:
                pending.abandon()

        return Pending(receive, abandon)

    async def apply(self, batch: RecommendBatch) -> RecommendResult:
        """:meth:`send`, then its result."""
        return await (await self.send(batch)).result()

    async def merge(self) -> int:
        """Rewrite every space's top lists from every space's counts; returns the lists."""
        counts: list[SpaceCounts] = []
        collect = self.top_max * COLLECT_FACTOR
        with self._errors("refused the recommendations merge"):
            for space in self.keyspace.spaces:
                reply = await self._scripts.call(COLLECT, [space, collect], self._key(space))
                got = parse_collect(reply)
                if got is not None:
                    counts.append(got)
            at, lists = merge(counts, self.half_life, self.top_max)
            if at is None:
                return 0
            args: list[Any] = [at, len(lists)]
            for segment, items in sorted(lists.items()):
                args += [segment, len(items)]
                for member, score in items:
                    args += [member, repr(score)]
            for space in self.keyspace.spaces:
                await self._scripts.call(RTOP, [space, *args], self._key(space))
        return len(lists)

    async def close(self) -> None:
        await self._scripts.close()

    def _errors(self, refused: str) -> contextlib.AbstractContextManager[None]:
        return redis_errors(f"Redis at {self.where}", refused)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_collect(reply: Sequence[Any]) -> SpaceCounts | None:
    """collect.lua's reply -> the space's counts (``None`` for a space without any)."""
    if not reply or reply[0] is None:
        return None
    lists: dict[str, list[tuple[str, float]]] = {}
    for segment, flat in reply[2:]:
        lists[_text(segment)] = [
            (_text(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2)
        ]
    return SpaceCounts(int(reply[0]), int(reply[1]), lists)
