"""The identity stage: ``anon.lua`` per visitor space, then each transfer merged, then dropped.

Run after a batch's state apply and before its offsets are committed (:mod:`.store`), so a
crash anywhere in between re-delivers the batch: the state fence skips it, the identity fence
(``{space}:afence:<topic>``, written by ``anon.lua`` with the visitors' state) skips what
``anon.lua`` already took, and what it took is either merged or still in the outbox.

Exactly once, step by step (docs/state.md, "Anonymous visitors and identity merge"):

1. ``anon.lua`` (visitor space, atomic): fence + visitor state + link + transfer in the outbox;
2. ``merge.lua`` (customer space, atomic, idempotent): a transfer already merged changes
   nothing (its id fingerprint, and each event's, are held by the customer);
3. ``HDEL`` of the outbox entry (visitor space). A crash before it leaves the entry: merged
   again by :meth:`IdentityStage.drain` (at start and periodically), which changes nothing.

At-least-once delivery of transfers + an idempotent merge = exactly once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from segstream.redact import redact
from worker.connect import RedisTarget, async_redis, keyspace, redis_settings, script_client
from worker.core.memory import MAX_FINGERPRINTS
from worker.identity import keys
from worker.identity.records import AnonCall, Limits
from worker.identity.transfers import Transfer
from worker.redis_io import Pending, Script
from worker.state import keys as state_keys
from worker.state.errors import redis_errors

log = logging.getLogger(__name__)

#: Transfers merged per ``merge.lua`` call while draining (each call reads every customer).
DRAIN_PAGE = 200


@dataclass(frozen=True)
class Merged:
    """What one ``merge.lua`` call changed: its customers, stamped unscored with ``stamp``."""

    space: str
    stamp: int
    changed: tuple[str, ...]


@dataclass
class StageResult:
    """What the stage did for one batch (or one drain)."""

    merged: list[Merged] = field(default_factory=list)
    transfers: int = 0
    conflicts: int = 0
    #: Transfers of forgotten customers dropped (their links removed).
    suppressed: int = 0

    @property
    def changed(self) -> list[str]:
        return [cid for m in self.merged for cid in m.changed]


class IdentityStage:
    """``anon.lua`` and ``merge.lua`` through the worker's script client (single or cluster)."""

    def __init__(
        self,
        redis: RedisTarget,
        prefix: str,
        limits: Limits | None = None,
        *,
        max_fingerprints: int = MAX_FINGERPRINTS,
    ) -> None:
        self.where = redact(redis_settings(redis).url)
        self.prefix = prefix
        self.keyspace = keyspace(redis, prefix)
        self.limits = limits or Limits()
        self.max_fingerprints = max_fingerprints
        self._redis = async_redis(redis)
        self._scripts = script_client(redis)
        self._anon = Script.packaged("worker.identity", "anon.lua")
        self._merge = Script.packaged("worker.identity", "merge.lua")
        self._unlink = Script.packaged("worker.identity", "unlink.lua")

    def _route(self, space: str) -> str | None:
        return state_keys.counters(space) if self.keyspace.cluster else None

    async def run(self, calls: Sequence[AnonCall]) -> StageResult:
        """:meth:`take`, then the transfers it wrote merged (:meth:`merge`)."""
        if not calls:
            return StageResult()
        conflicts, transfers = await self.take(calls)
        merged = await self.merge(transfers)
        merged.conflicts = conflicts
        return merged

    async def take(self, calls: Sequence[AnonCall]) -> tuple[int, list[Transfer]]:
        """``anon.lua`` for each call (all sent, then awaited): the identify conflicts, and the
        transfers written to the outboxes."""
        conflicts, transfers = 0, []
        with self._errors("refused a batch's anonymous clicks"):
            replies = await self._call_all(self._anon, [(c.args, c.key) for c in calls])
            for call, reply in zip(calls, replies, strict=True):
                conflicts += int(reply[0])
                for j in range(1, len(reply), 3):
                    transfers.append(Transfer.parse(call.space, reply[j], bytes(reply[j + 2])))
        if conflicts:
            log.warning(
                "%d identify click(s) named another customer than their visitor's link: "
                "ignored, the first link wins (counter identify_conflicts)",
                conflicts,
            )
        return conflicts, transfers

    async def merge(self, transfers: Sequence[Transfer]) -> StageResult:
        """Merge ``transfers`` (one ``merge.lua`` call per customer space), unlink the ones of
        forgotten customers, then delete them from their outboxes."""
        result = StageResult(transfers=len(transfers))
        if not transfers:
            return result
        by_space: dict[str, list[Transfer]] = {}
        for t in transfers:
            by_space.setdefault(self.keyspace.space_of(t.customer_id), []).append(t)
        dropped: list[tuple[str, str]] = []
        with self._errors("refused a transfer"):
            calls: list[tuple[list[Any], str | None]] = []
            for space, part in by_space.items():
                args: list[Any] = [space, self.max_fingerprints, len(part)]
                for t in part:
                    args += [t.id, t.value]
                calls.append((args, self._route(space)))
            replies = await self._call_all(self._merge, calls)
            for space, reply in zip(by_space, replies, strict=True):
                count = int(reply[1])
                changed = tuple(_text(c) for c in reply[2 : 2 + count])
                result.merged.append(Merged(space, int(reply[0]), changed))
                rest = reply[2 + count :]
                dropped += [
                    (_text(rest[j + 1]), _text(rest[j + 2])) for j in range(0, len(rest), 3)
                ]
            for anon, cid in dropped:
                space = self.keyspace.space_of(anon)
                await self._scripts.call(self._unlink, [space, anon, cid], self._route(space))
        result.suppressed = len(dropped)
        with self._errors():
            by_outbox: dict[str, list[str]] = {}
            for t in transfers:
                by_outbox.setdefault(t.space, []).append(t.id)
            for space, ids in by_outbox.items():
                await self._redis.hdel(keys.outbox(space), *ids)
        return result

    async def _call_all(
        self, script: Script, calls: Sequence[tuple[list[Any], str | None]]
    ) -> list[Any]:
        """Send every call (one per space: they run side by side on a cluster), then take
        their replies; the ones not taken are abandoned if anything fails."""
        sent: list[Pending[Any]] = []
        try:
            for args, key in calls:
                sent.append(await self._scripts.send(script, args, key))
            return [await pending.result() for pending in sent]
        except BaseException:
            for pending in sent:
                pending.abandon()
            raise

    async def drain(self) -> StageResult:
        """Merge every transfer left in any outbox (by a crash between ``anon.lua`` and the
        outbox ``HDEL``); idempotent, so safe beside a running batch path or another worker."""
        total = StageResult()
        for space in self.keyspace.spaces:
            page: list[Transfer] = []
            with self._errors():
                async for tid, value in self._redis.hscan_iter(keys.outbox(space), count=500):
                    try:
                        page.append(Transfer.parse(space, tid, bytes(value)))
                    except (ValueError, UnicodeDecodeError) as exc:
                        log.error("identity outbox %s holds a bad entry: %s", space, exc)
            for start in range(0, len(page), DRAIN_PAGE):
                done = await self.merge(page[start : start + DRAIN_PAGE])
                total.merged += done.merged
                total.transfers += done.transfers
                total.suppressed += done.suppressed
        if total.transfers:
            log.info("identity: merged %d transfer(s) left in the outboxes", total.transfers)
        return total

    async def unlink(self, anonymous_id: str, customer_id: str) -> bool:
        """Remove the visitor's link if it names ``customer_id`` (forget); idempotent."""
        space = self.keyspace.space_of(anonymous_id)
        with self._errors("refused an unlink"):
            done = await self._scripts.call(
                self._unlink, [space, anonymous_id, customer_id], self._route(space)
            )
        return bool(int(done))

    async def linked(self, customer_id: str) -> list[str]:
        """The anonymous ids merged into ``customer_id`` (``{space}:al:{<id>}``)."""
        space = self.keyspace.space_of(customer_id)
        with self._errors():
            members = await self._redis.smembers(keys.linked(space, customer_id))
        return sorted(_text(m) for m in members)

    async def counters(self) -> dict[str, int]:
        """The identity counters (:data:`keys.COUNTER_NAMES`), summed over every space."""
        total = dict.fromkeys(keys.COUNTER_NAMES, 0)
        with self._errors():
            for space in self.keyspace.spaces:
                names = list(keys.COUNTER_NAMES)
                values = await self._redis.hmget(state_keys.counters(space), names)
                for name, v in zip(keys.COUNTER_NAMES, values, strict=True):
                    total[name] += int(v or 0)
        return total

    async def close(self) -> None:
        await self._scripts.close()
        with contextlib.suppress(Exception):
            await self._redis.aclose()

    def _errors(self, refused: str = "") -> contextlib.AbstractContextManager[None]:
        """redis-py's exceptions as the state store's: unavailable (retry) or rejected."""
        return redis_errors(f"Redis at {self.where}", refused)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
