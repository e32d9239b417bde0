"""Script calls on a Redis Cluster: each sent to the primary serving its key's slot.

The same two steps as :class:`worker.redis_io.ScriptClient` (``send`` returns once the request
is on the wire, ``result`` waits), one pooled client per primary. The slot map comes from
``CLUSTER SLOTS``; a node that no longer serves a slot answers MOVED (or ASK while a slot
migrates), and the call is sent again, once, after the map is read anew. That is safe: a
redirected script did not run.
"""

from __future__ import annotations

import bisect
import contextlib
import ssl
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import redis.exceptions as rex
from redis.crc import key_slot

from worker.redis_io import Arg, Endpoint, Pending, Script, ScriptClient, command

__all__ = ["ClusterScriptClient"]

#: Idle connections kept per primary: a batch sends up to ``shards / primaries`` calls to each
#: at once, and a connection opened and closed per call cost ~0.1 ms of the worker's CPU
#: (benchmarks/RESULTS.md, 2026-12-06, bench_cluster).
NODE_POOL_SIZE = 32


class ClusterScriptClient:
    """Like :class:`ScriptClient`, for a cluster whose any node ``seed`` names."""

    def __init__(
        self,
        seed: Endpoint,
        *,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float | None = 10.0,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 2000,
    ) -> None:
        self.endpoint = seed
        self._ssl_context = ssl_context
        self._connect_timeout = connect_timeout
        self._wait = {"wait_replicas": wait_replicas, "wait_timeout_ms": wait_timeout_ms}
        #: Sorted slot range starts, and per range its end and primary.
        self._starts: list[int] = []
        self._ranges: list[tuple[int, Endpoint]] = []
        self._clients: dict[tuple[str, int], ScriptClient] = {}

    async def send(
        self, script: Script, args: Sequence[Arg], key: str | None = None
    ) -> Pending[Any]:
        if key is None:
            raise ValueError("a script call on a cluster needs the key of its slot")
        if not self._starts:
            await self.refresh()
        try:
            pending = await self._client_for(key).send(script, args, key)
        except (rex.ConnectionError, rex.TimeoutError):
            await self._refresh_quietly()  # a primary died: its replica may serve the slot now
            raise

        async def receive() -> Any:
            try:
                return await pending.result()
            except (rex.MovedError, rex.AskError):
                await self.refresh()
                again = await self._client_for(key).send(script, args, key)
                return await again.result()
            except (rex.ConnectionError, rex.TimeoutError):
                await self._refresh_quietly()
                raise

        return Pending(receive, pending.abandon)

    async def call(self, script: Script, args: Sequence[Arg], key: str | None = None) -> Any:
        return await (await self.send(script, args, key)).result()

    async def refresh(self) -> None:
        """Read the slot map from the seed (or, failing that, any primary known so far)."""
        last: Exception | None = None
        for where in [self.endpoint, *(end for _, end in self._ranges)]:
            try:
                reply = await command(
                    where, "CLUSTER", "SLOTS", ssl_context=self._ssl_context,
                    timeout=self._connect_timeout or 10.0,
                )  # fmt: skip
            except (rex.ConnectionError, rex.TimeoutError, OSError) as exc:
                last = exc
                continue
            self._install(reply)
            return
        raise rex.ConnectionError(f"no cluster node answered CLUSTER SLOTS: {last}")

    async def _refresh_quietly(self) -> None:
        """Read the slot map again if any node answers; the caller's retry uses it."""
        with contextlib.suppress(rex.RedisError, OSError):
            await self.refresh()

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.close()

    def _install(self, reply: Sequence[Any]) -> None:
        ranges = []
        for entry in reply:
            start, end, primary = int(entry[0]), int(entry[1]), entry[2]
            host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
            node = replace(self.endpoint, host=host or self.endpoint.host, port=int(primary[1]))
            ranges.append((start, end, node))
        ranges.sort(key=lambda r: r[0])
        self._starts = [start for start, _, _ in ranges]
        self._ranges = [(end, node) for _, end, node in ranges]

    def _client_for(self, key: str) -> ScriptClient:
        slot = key_slot(key.encode())
        at = bisect.bisect_right(self._starts, slot) - 1
        if at < 0 or slot > self._ranges[at][0]:
            raise rex.ClusterDownError(f"no node serves slot {slot}")
        node = self._ranges[at][1]
        client = self._clients.get((node.host, node.port))
        if client is None:
            client = ScriptClient(
                node,
                ssl_context=self._ssl_context,
                connect_timeout=self._connect_timeout,
                pool_size=NODE_POOL_SIZE,
                **self._wait,
            )
            self._clients[(node.host, node.port)] = client
        return client
