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

import contextlib
import socket
from typing import Any

import redis.asyncio as aioredis
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
