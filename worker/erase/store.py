"""The Redis side of forgetting: one atomic script per customer, and waiting out the outbox.

``forget.lua`` (documented in the file) deletes every per-customer key, removes the customer
from the shared indexes and from unpublished segment changes, and writes the suppression entry
the state script honours. It reports the outbox rounds that held the customer: a worker may be
publishing them at that moment (from memory), so the tombstone must wait until they are gone
from the outbox (acknowledged by the broker) or it could land before them.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from segstream.redact import redact
from segstream.settings import RedisSettings
from worker.connect import async_redis, keyspace
from worker.erase import keys
from worker.identity.forget import unlink_customer
from worker.identity.stage import IdentityStage
from worker.state.errors import redis_errors

#: How often :meth:`ForgetStore.wait_published` looks at the outbox again (s).
OUTBOX_POLL_S = 0.05


def script_text() -> str:
    return (importlib.resources.files("worker.erase") / "forget.lua").read_text()


@dataclass(frozen=True)
class Forgotten:
    """What one forget call did."""

    #: Something of the customer was stored (a key, an unscored entry, an unpublished change).
    existed: bool
    #: Outbox rounds that held one of their change events (a worker may be publishing them).
    rounds: tuple[str, ...] = field(default_factory=tuple)


class ForgetStore:
    """Async access to Redis for forgetting (one client, one script)."""

    def __init__(self, redis: RedisSettings, prefix: str, suppress_days: float) -> None:
        self.prefix = prefix
        self.keyspace = keyspace(redis, prefix)
        self.keep_ms = keys.suppression_ms(suppress_days)
        self._where = redact(f"Redis at {redis.url}")
        self._redis = async_redis(redis)
        self._script = self._redis.register_script(script_text())
        #: The visitors' links to the customer go first (worker/identity/forget.py).
        self._identity = IdentityStage(redis, prefix)

    async def forget(self, customer_id: str, now_ms: int | None = None) -> Forgotten:
        """Forget ``customer_id`` atomically (idempotent: a second call finds nothing stored)."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        await unlink_customer(self._identity, customer_id)
        space = self.keyspace.space_of(customer_id)
        args: list[str | int] = [space, customer_id, now, self.keep_ms]
        args += keys.CUSTOMER_KEY_FAMILIES
        # on a cluster, a key of the shard's slot routes the call (the script builds the rest)
        slot = [f"{space}:counters"] if self.keyspace.cluster else []
        reply: Any = await self._call(self._script(keys=slot, args=args), "refused an erasure")
        rounds = tuple(r.decode() if isinstance(r, bytes) else str(r) for r in reply[1:])
        return Forgotten(bool(int(reply[0])), rounds)

    async def wait_published(self, rounds: Sequence[str], timeout_s: float) -> bool:
        """Until every one of ``rounds`` has left the outbox; False if some are left at the end."""
        if not rounds:
            return True
        deadline = time.monotonic() + timeout_s
        while True:
            left: list[Any] = []
            for space in self.keyspace.spaces:  # a round's token is the same in every shard
                left += await self._call(self._redis.hmget(f"{space}:outbox", list(rounds)))
            if all(v is None for v in left):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(OUTBOX_POLL_S)

    async def forget_storefront(self, customer_id: str) -> None:
        """On a cluster, delete the storefront's copy of the segment (a separate key, written
        when a change is published: so only once the customer's rounds are published)."""
        if self.keyspace.separate_storefront:
            await self._call(self._redis.delete(self.keyspace.storefront(customer_id)))

    async def close(self) -> None:
        await self._identity.close()
        await self._redis.aclose()

    async def _call(self, awaitable: Any, refused: str = "") -> Any:
        with redis_errors(self._where, refused):
            return await awaitable
