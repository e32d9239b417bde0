"""Async Redis clients for large requests: the state script's batches, scoring's rounds.

A batch's EVALSHA is a few hundred KB. asyncio hands the socket what fits in its send buffer
and keeps the rest until its loop runs again; in a worker whose loop is busy decoding the next
batch for tens of milliseconds, Redis would sit waiting for the end of the request. A larger
``SO_SNDBUF`` lets one ``send`` hand the kernel the whole request (the kernel caps it at twice
``net.core.wmem_max``; 4 MB here). The state store also waits until its request is fully sent
before letting the loop go on (``StateStore._evalsha``).
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection

#: Requested send buffer per Redis connection (bytes).
SEND_BUFFER_BYTES = 8 * 1024 * 1024


class BulkConnection(Connection):
    """A TCP connection to Redis with a send buffer sized for whole batches."""

    async def _connect(self) -> None:
        await super()._connect()  # type: ignore[no-untyped-call]
        writer = self._writer
        sock = writer.transport.get_extra_info("socket") if writer is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)


def bulk_client(url: str, **kwargs: Any) -> aioredis.Redis:
    """``redis.asyncio.Redis.from_url`` with :class:`BulkConnection` for ``redis://`` URLs."""
    if url.startswith("redis://"):
        kwargs.setdefault("connection_class", BulkConnection)
    return aioredis.Redis.from_url(url, **kwargs)
