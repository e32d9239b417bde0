"""Async Redis clients for large requests: the state script's batches, scoring's rounds.

A batch's EVALSHA is a few hundred KB. asyncio hands the socket what fits in its send buffer
and keeps the rest until its loop runs again; in a worker whose loop is busy decoding the next
batch for tens of milliseconds, Redis would sit waiting for the end of the request. A larger
``SO_SNDBUF`` lets one ``send`` hand the kernel the whole request (the kernel caps it at twice
``net.core.wmem_max``; 4 MB here), and a write-buffer limit of 0 makes ``drain`` return only once
every byte is in the kernel, so "sent" means sent (``StateStore._evalsha`` relies on it to let
the loop go on).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.asyncio.connection import Connection

#: Requested send buffer per Redis connection (bytes).
SEND_BUFFER_BYTES = 8 * 1024 * 1024


class BulkConnection(Connection):
    """A TCP connection to Redis whose sends are whole: sized for batches, drained to the end."""

    async def _connect(self) -> None:
        await super()._connect()  # type: ignore[no-untyped-call]
        if self._writer is None:
            return
        transport = self._writer.transport
        transport.set_write_buffer_limits(high=0)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)


def bulk_client(url: str, **kwargs: Any) -> aioredis.Redis:
    """``redis.asyncio.Redis.from_url`` with :class:`BulkConnection` for ``redis://`` URLs."""
    if url.startswith("redis://"):
        kwargs.setdefault("connection_class", BulkConnection)
    return aioredis.Redis.from_url(url, **kwargs)


def script_sha(text: str) -> str:
    """The SHA-1 Redis knows a Lua script by (what EVALSHA and :func:`evalsha_sent` take)."""
    return hashlib.sha1(text.encode()).hexdigest()


async def evalsha_sent(
    client: aioredis.Redis,
    sha: str,
    text: str,
    args: list[Any],
    on_sent: Callable[[], None] | None = None,
) -> Any:
    """EVALSHA (no keys) on a connection of our own, split into send and receive.

    redis-py's call returns only with the reply, so a caller cannot tell when Redis has the
    request: a task started "in the background" sends it only once the loop runs again, which
    in a loop busy with CPU work (the next batch's decoding, a round's assignment) can be tens
    of milliseconds later. The connection's send returns once every byte is in the kernel
    (:class:`BulkConnection`), and ``on_sent`` tells the caller when that is (after each send:
    twice when NOSCRIPT, from a restarted Redis, had the script loaded from ``text`` and sent
    again). Any failure drops the connection, whose reply may still come.
    """
    pool = client.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        for attempt in range(2):
            await conn.send_command("EVALSHA", sha, 0, *args)
            if on_sent is not None:
                on_sent()
            try:
                return await conn.read_response()
            except rex.NoScriptError:
                if attempt:
                    raise
                await conn.send_command("SCRIPT", "LOAD", text)
                await conn.read_response()
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)


async def until_sent(task: asyncio.Future[Any], sent: asyncio.Event) -> None:
    """Wait until ``task`` has set ``sent`` (its :func:`evalsha_sent` ``on_sent``) or ended.

    For a caller that starts a request as a task and then goes on with CPU work: the task
    runs only when the caller awaits, so without this the request would leave only at the
    caller's next await, not before its CPU work.
    """
    waiter = asyncio.ensure_future(sent.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
