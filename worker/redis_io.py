"""Redis script calls in two steps: ``send`` returns once Redis has the request, ``result`` waits.

The worker starts a request and goes straight back to CPU work (decoding the next batch,
assigning a round). A call that returns only with its reply cannot say when the request left,
and a request merely handed to asyncio leaves only when the loop next runs, tens of
milliseconds later in a busy loop: Redis would sit idle meanwhile. So a script call here is

1. ``pending = await scripts.send(script, args)``: returns once every byte of the request is
   in the kernel's hands (a connection of its own, with a send buffer sized for a batch of a
   few hundred KB and a write-buffer limit of 0, so that ``drain`` means "all written");
2. ``reply = await pending.result()``: the reply, read on that connection.

These are plain asyncio stream connections owned here (redis-py offers no public way to size
a connection's send buffer or its transport's write limit); replies are parsed by hiredis.
Error replies surface as the :mod:`redis.exceptions` classes redis-py raises for them, and
connection trouble as :class:`redis.exceptions.ConnectionError` / ``TimeoutError``, so callers
classify them as they do redis-py's (:mod:`worker.ingest.failures`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.resources
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import hiredis
import redis.exceptions as rex
from redis.connection import parse_url

__all__ = ["Arg", "Endpoint", "Pending", "ReplicasBehind", "Script", "ScriptClient", "command"]

T = TypeVar("T", covariant=True)
U = TypeVar("U")

#: Requested send buffer per connection (bytes); the kernel caps it at twice
#: ``net.core.wmem_max``. Enough for a whole batch's request in one ``send``.
SEND_BUFFER_BYTES = 8 * 1024 * 1024
#: Idle connections kept for reuse per client; more are opened while more calls overlap.
POOL_SIZE = 4
READ_CHUNK = 256 * 1024

#: One argument of a command, as RESP carries it.
Arg = str | bytes | int | float


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script and the SHA-1 Redis knows it by (what EVALSHA takes)."""

    text: str
    sha: str

    @classmethod
    def of(cls, text: str) -> Script:
        return cls(text, hashlib.sha1(text.encode()).hexdigest())

    @classmethod
    def packaged(cls, package: str, name: str) -> Script:
        """A ``.lua`` file shipped inside ``package`` (package-data ``**/*.lua``)."""
        return cls.of((importlib.resources.files(package) / name).read_text())


class Pending(Generic[T]):
    """A request Redis has; :meth:`result` waits for its reply (once).

    A caller that will never wait for it calls :meth:`abandon`, which drops its connection.
    """

    __slots__ = ("_abandon", "_receive")

    def __init__(
        self, receive: Callable[[], Awaitable[T]], abandon: Callable[[], None] | None = None
    ) -> None:
        self._receive: Callable[[], Awaitable[T]] | None = receive
        self._abandon = abandon

    @staticmethod
    def ready(value: U) -> Pending[U]:
        """A result known without asking Redis (nothing was sent)."""

        async def receive() -> U:
            return value

        return Pending(receive)

    async def result(self) -> T:
        receive, self._receive = self._receive, None
        if receive is None:
            raise RuntimeError("this request's result was already taken or abandoned")
        return await receive()

    def then(self, convert: Callable[[T], U]) -> Pending[U]:
        """The same request, its reply passed through ``convert``."""

        async def receive() -> U:
            return convert(await self.result())

        return Pending(receive, self.abandon)

    def abandon(self) -> None:
        receive, self._receive = self._receive, None
        if receive is not None and self._abandon is not None:
            self._abandon()


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and as whom to connect, from a ``redis://``, ``rediss://`` or ``unix://`` URL."""

    host: str = "localhost"
    port: int = 6379
    #: Unix socket path (``unix://``); host and port are then unused.
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: ``rediss://``: TLS with the client's ``ssl_context`` (default: verify as a browser does).
    tls: bool = False

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        """The URL's parts exactly as redis-py reads them (its :func:`parse_url`)."""
        # raises ValueError for a scheme other than redis, rediss and unix
        parts: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        return cls(
            host=parts.get("host") or "localhost",
            port=parts.get("port") or 6379,
            path=parts.get("path"),
            db=parts.get("db") or 0,
            username=parts.get("username"),
            password=parts.get("password"),
            tls=url.lower().startswith("rediss://"),
        )

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path is not None else f"{self.host}:{self.port}"


#: Error codes redis-py maps to a class of its own (and strips from the message), as in its
#: parser, so these replies read the same whichever client got them.
_ERROR_CLASSES: dict[str, type[rex.RedisError]] = {
    "OOM": rex.OutOfMemoryError,
    "WRONGPASS": rex.AuthenticationError,
    "NOAUTH": rex.AuthenticationError,
    "EXECABORT": rex.ExecAbortError,
    "LOADING": rex.BusyLoadingError,
    "NOSCRIPT": rex.NoScriptError,
    "READONLY": rex.ReadOnlyError,
    "NOPERM": rex.NoPermissionError,
    "ASK": rex.AskError,
    "TRYAGAIN": rex.TryAgainError,
    "MOVED": rex.MovedError,
    "CLUSTERDOWN": rex.ClusterDownError,
    "CROSSSLOT": rex.ClusterCrossSlotError,
    "MASTERDOWN": rex.MasterDownError,
}
_ERR_CLASSES: dict[str, type[rex.RedisError]] = {
    "max number of clients reached": rex.MaxClientsReachedError,
    "invalid password": rex.AuthenticationError,
}
_CODE = re.compile(r"[A-Z][A-Z0-9_]*")


def error_of(message: str) -> rex.RedisError:
    """The redis-py exception for an error reply's text (``"NOSCRIPT No matching script"``)."""
    code = message.split(" ", 1)[0]
    cls = _ERROR_CLASSES.get(code)
    if cls is not None:
        return cls(message[len(code) + 1 :], status_code=code)
    if code == "ERR":
        rest = message[4:]
        return _ERR_CLASSES.get(rest, rex.ResponseError)(rest, status_code=code)
    return rex.ResponseError(message, status_code=code if _CODE.fullmatch(code) else None)


class _Connection:
    """One stream connection to Redis: whole sends, hiredis-parsed replies.

    Any failure leaves it unusable (a reply may still be on its way); its owner closes it.
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, where: str
    ) -> None:
        self._reader, self._writer, self._where = reader, writer, where
        self._parser = hiredis.Reader(
            protocolError=rex.InvalidResponse, replyError=rex.ResponseError
        )
        transport = writer.transport
        # drain() returns only once the last byte is in the kernel
        transport.set_write_buffer_limits(high=0)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)

    @classmethod
    async def open(
        cls, endpoint: Endpoint, ssl_context: ssl.SSLContext | None, timeout: float | None
    ) -> _Connection:
        """Connect, then AUTH and SELECT as the endpoint says (one round trip)."""
        where = str(endpoint)
        try:
            async with asyncio.timeout(timeout):
                if endpoint.path is not None:
                    streams = await asyncio.open_unix_connection(endpoint.path)
                elif endpoint.tls:
                    context = ssl_context or ssl.create_default_context()
                    streams = await asyncio.open_connection(
                        endpoint.host, endpoint.port, ssl=context, server_hostname=endpoint.host
                    )
                else:
                    streams = await asyncio.open_connection(endpoint.host, endpoint.port)
        except TimeoutError as exc:
            raise rex.TimeoutError(f"Timeout connecting to {where}") from exc
        except OSError as exc:
            raise rex.ConnectionError(f"Error connecting to {where}: {exc}") from exc
        conn = cls(*streams, where)
        try:
            setup: list[tuple[Arg, ...]] = []
            if endpoint.password is not None:
                user = (endpoint.username,) if endpoint.username else ()
                setup.append(("AUTH", *user, endpoint.password))
            if endpoint.db:
                setup.append(("SELECT", endpoint.db))
            if setup:
                async with asyncio.timeout(timeout):
                    await conn.send(*setup)
                    for _ in setup:
                        await conn.read()
        except BaseException:
            conn.close()
            raise
        return conn

    async def send(self, *commands: Sequence[Arg]) -> None:
        """Write ``commands``; returns once all of them are in the kernel."""
        try:
            pack = hiredis.pack_command  # its stub wants a 1-tuple: it takes any length
            self._writer.writelines([pack(tuple(c)) for c in commands])  # type: ignore[arg-type]
            await self._writer.drain()
        except OSError as exc:
            raise rex.ConnectionError(f"Error writing to {self._where}: {exc}") from exc

    async def read(self) -> Any:
        """The next reply; an error reply is raised as its redis-py exception."""
        parser = self._parser
        reply = parser.gets()
        while reply is False:
            try:
                data = await self._reader.read(READ_CHUNK)
            except OSError as exc:
                raise rex.ConnectionError(f"Error reading from {self._where}: {exc}") from exc
            if not data:
                raise rex.ConnectionError(f"Connection closed by {self._where}")
            parser.feed(data)
            reply = parser.gets()
        if isinstance(reply, rex.ResponseError):
            raise error_of(str(reply))
        return reply

    def close(self) -> None:
        self._writer.close()


class ReplicasBehind(rex.TimeoutError):
    """``WAIT`` saw fewer replicas confirm a write than asked for: an outage, retried."""


class ScriptClient:
    """Script calls (EVALSHA, no keys) on connections of their own, a few kept for reuse.

    One request per connection at a time: a connection goes back to the pool only once its
    reply has been read, and any failure drops it. ``where``: a URL or an :class:`Endpoint`;
    ``ssl_context``: for ``rediss://`` (default: :func:`ssl.create_default_context`; the URL's
    ``ssl_*`` options are not read: :func:`worker.connect.script_client` builds both from the
    settings).
    """

    def __init__(
        self,
        where: str | Endpoint,
        *,
        connect_timeout: float | None = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        pool_size: int = POOL_SIZE,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 2000,
    ) -> None:
        """``wait_replicas``: each call is followed, on its connection, by ``WAIT`` for that
        many replicas (``wait_timeout_ms`` at most); fewer confirmations raise
        :class:`ReplicasBehind`, so the caller retries instead of trusting the write."""
        self.endpoint = where if isinstance(where, Endpoint) else Endpoint.from_url(where)
        self._connect_timeout = connect_timeout
        self._ssl_context = ssl_context
        self._pool_size = pool_size
        self._replicas, self._wait_ms = wait_replicas, wait_timeout_ms
        self._idle: list[_Connection] = []
        #: Scripts this client has seen Redis load: the first call of any other sends ``SCRIPT
        #: LOAD`` ahead of it in the same write, so that it runs when sent (a NOSCRIPT reply
        #: would only be answered, by loading and calling again, when the result is awaited).
        self._loaded: set[str] = set()

    async def send(
        self, script: Script, args: Sequence[Arg], key: str | None = None
    ) -> Pending[Any]:
        """Send ``EVALSHA script 0 *args``; returns once the whole request is in the kernel.

        ``key``: a key of the slot the script works in, declared as ``KEYS[1]`` (``EVALSHA
        script 1 key *args``) so that a Redis Cluster node that does not serve it answers MOVED.
        The reply comes from ``result()``. A Redis that no longer holds the script (restarted,
        flushed) answers NOSCRIPT: ``result()`` then loads it and sends the call again, once.
        """
        conn = self._idle.pop() if self._idle else await self._open()
        declared: tuple[Arg, ...] = (0,) if key is None else (1, key)
        command = ("EVALSHA", script.sha, *declared, *args)
        wait = [("WAIT", self._replicas, self._wait_ms)] if self._replicas > 0 else []
        load = [] if script.sha in self._loaded else [("SCRIPT", "LOAD", script.text)]
        try:
            await conn.send(*load, command, *wait)
        except BaseException:
            conn.close()
            raise

        async def receive() -> Any:
            try:
                if load:
                    await conn.read()
                    self._loaded.add(script.sha)
                try:
                    reply = await conn.read()
                except rex.NoScriptError:
                    if wait:
                        await conn.read()  # the WAIT sent behind the refused call
                    await conn.send(("SCRIPT", "LOAD", script.text), command, *wait)
                    await conn.read()
                    reply = await conn.read()
                if wait:
                    self._confirmed(int(await conn.read()))
            except BaseException:
                conn.close()
                raise
            self._release(conn)
            return reply

        return Pending(receive, conn.close)

    async def call(self, script: Script, args: Sequence[Arg], key: str | None = None) -> Any:
        """:meth:`send`, then its result."""
        return await (await self.send(script, args, key)).result()

    def _confirmed(self, replicas: int) -> None:
        if replicas < self._replicas:
            raise ReplicasBehind(
                f"only {replicas} of {self._replicas} replica(s) of {self.endpoint} confirmed the "
                f"write within {self._wait_ms} ms (SEGSTREAM_REDIS_WAIT_REPLICAS)"
            )

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    async def _open(self) -> _Connection:
        return await _Connection.open(self.endpoint, self._ssl_context, self._connect_timeout)

    def _release(self, conn: _Connection) -> None:
        if len(self._idle) < self._pool_size:
            self._idle.append(conn)
        else:
            conn.close()


async def command(
    endpoint: Endpoint, *args: Arg, ssl_context: ssl.SSLContext | None = None, timeout: float = 10
) -> Any:
    """One command on a connection of its own (``CLUSTER SLOTS`` and the like)."""
    conn = await _Connection.open(endpoint, ssl_context, timeout)
    try:
        async with asyncio.timeout(timeout):
            await conn.send(args)
            return await conn.read()
    finally:
        conn.close()
