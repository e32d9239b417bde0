"""The Redis side of recommendations: the drain of applied purchases, and the merge.

The state script hands the lines of every placed order it applies to its space's
``{space}:rbox`` (worker/state/apply.lua); :meth:`RecommendStore.drain` runs count.lua in
each space given, which adds them to the counts and empties the list in one atomic call.

The merge (:meth:`RecommendStore.merge`) reads each space's counts
(collect.lua), merges them (:mod:`worker.recommend.merge`) and writes the lists into every
space (rtop.lua): idempotent, so any worker may run it at any time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from typing import Any

from schemas import OrderEvent
from segstream.redact import redact
from segstream.settings import RecommendSettings
from worker.connect import RedisTarget, keyspace, redis_settings, script_client
from worker.core.batch import Batch
from worker.recommend.decay import half_life_ms
from worker.recommend.merge import SpaceCounts, merge
from worker.redis_io import Script
from worker.state.errors import redis_errors

__all__ = ["RecommendStore"]

COUNT = Script.packaged("worker.recommend", "count.lua")
COLLECT = Script.packaged("worker.recommend", "collect.lua")
RTOP = Script.packaged("worker.recommend", "rtop.lua")
#: The merge reads each segment's best (this many x the list size) members of every space.
COLLECT_FACTOR = 2


class RecommendStore:
    """Async drain of the applied purchases into the counts (count.lua), and the merge."""

    def __init__(self, redis: RedisTarget, prefix: str, settings: RecommendSettings) -> None:
        self.where = redact(redis_settings(redis).url)
        self.keyspace = keyspace(redis, prefix)
        self.half_life = half_life_ms(settings.half_life_days)
        self.pop_max = settings.pop_max
        self.top_max = settings.top_max
        self._scripts = script_client(redis)

    def _key(self, space: str) -> str | None:
        return f"{space}:rmeta" if self.keyspace.cluster else None

    def spaces_with_orders(self, batch: Batch) -> list[str]:
        """The spaces whose customers placed an order in ``batch`` (in shard order)."""
        ks = self.keyspace
        placed = [
            r.event.customer_id
            for r in batch.records
            if isinstance(r.event, OrderEvent) and r.event.status == "placed"
        ]
        if not placed:
            return []
        if not ks.cluster:
            return [ks.spaces[0]]
        return [ks.spaces[shard] for shard in sorted({ks.shard_of(c) for c in placed})]

    async def drain(self, spaces: Iterable[str]) -> int:
        """Count what the state script handed to ``spaces``; returns the orders counted.

        Raises StoreUnavailable (retry) or StoreRejected; what a failed call left in its list
        is counted by the next drain.
        """
        counted = 0
        with self._errors("refused a recommendations drain"):
            for space in spaces:
                args: list[Any] = [space, self.half_life, self.pop_max]
                reply = await self._scripts.call(COUNT, args, self._key(space))
                counted += int(reply[0])
        return counted

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
