"""A TLS + SASL gateway in front of a plaintext Kafka-protocol broker (the local tansu).

Over 400 lines: a hundred are this docstring (the protocol it speaks); the rest is one class.

Why it exists: the only broker available for local services and tests, tansu 0.6.0, can do
neither of the things issue 17 needs. TLS cannot be switched on (its ``--cert`` and ``--key``
flags exclude each other), and SCRAM logins cannot succeed (its memory and S3 storage engines
store no SCRAM credentials, so every login is an unknown user). So the gateway does both, the
way a Kafka broker does them, and relays the rest byte for byte:

- TLS is terminated here (``ssl.SSLContext`` from a certificate and key, e.g. from
  :mod:`devstack.certs`);
- with a users file, SASL is required: until a connection has authenticated, the gateway
  answers ApiVersions (18, v0-v4: tansu's own list, with SaslHandshake 0-1 and SaslAuthenticate
  0-2), SaslHandshake (17, v0-v1) and SaslAuthenticate (36, v0-v1, and v2 in the flexible
  encoding) itself and closes the connection on any other request. Mechanisms: SCRAM-SHA-512,
  SCRAM-SHA-256 (RFC 5802/7677) and PLAIN (RFC 4616). A failed login gets error 58
  (SASL_AUTHENTICATION_FAILED) with a message, then the connection is closed, so a client fails
  at once instead of retrying until a timeout;
- once authenticated, the connection is joined to a new plaintext connection to the broker and
  bytes flow both ways untouched.

This module accepts, authenticates and relays; the logins themselves are :mod:`devstack.sasl`
(SCRAM and PLAIN servers, the users file) and the pre-login requests :mod:`devstack.kafka_wire`.

tansu must advertise the gateway's address (``--advertised-listener-url tcp://localhost:GW``),
so a client that reconnects to the broker named in the metadata comes back through here.

This is a development tool: users and passwords come from a local file (``name:MECHANISM:
password`` lines, mode 0600), there is no ACL, and every authenticated user may do anything.
Run it with ``python -m devstack.kafka_gateway --listen HOST:PORT --backend HOST:PORT
[--cert F --key F] [--users-file F]`` or through :class:`KafkaGateway`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from devstack.kafka_wire import (
    API_VERSIONS,
    ILLEGAL_SASL_STATE,
    MAX_VERSION,
    NO_ERROR,
    SASL_AUTHENTICATE,
    SASL_AUTHENTICATION_FAILED,
    SASL_HANDSHAKE,
    UNSUPPORTED_SASL_MECHANISM,
    ProtocolError,
    advertised_versions,
    api_versions_body,
    api_versions_request,
    fetch_api_versions,
    parse_request,
    read_frame,
    response_frame,
    sasl_authenticate_body,
    sasl_handshake_body,
    size_prefixed,
)
from devstack.sasl import (
    AuthenticationFailed,
    PlainServer,
    SaslServer,
    ScramServer,
    UserStore,
    load_users,
)
from segstream.errors import ConfigError

__all__ = [
    "GatewayConfig",
    "KafkaGateway",
    "config_from_args",
    "gateway_answers",
    "main",
    "parse_address",
    "server_ssl_context",
]

log = logging.getLogger("devstack.kafka_gateway")


#: Before authentication a client has no business sending big frames (a SCRAM message is
#: ~200 bytes); a bigger one is a confused or hostile client and is closed on.
MAX_PREAUTH_FRAME = 64 * 1024
#: From TCP accept to authenticated; a client that stalls longer is dropped.
AUTH_TIMEOUT_S = 30.0
TLS_HANDSHAKE_TIMEOUT_S = 10.0
RELAY_CHUNK = 256 * 1024


# == the gateway ===============================================================================
def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) -> ``(host, port)``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"{text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def server_ssl_context(cert: str | os.PathLike[str], key: str | os.PathLike[str]) -> ssl.SSLContext:
    """The gateway's TLS: TLS 1.2 or newer, the certificate chain in ``cert`` and its ``key``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"gateway TLS: cannot load {cert} / {key} ({exc})") from exc
    return context


@dataclass(frozen=True)
class GatewayConfig:
    """Where to listen, which broker to relay to, and what a client must do first.

    ``ssl_context`` None: no TLS. ``users`` None: no SASL (connections are relayed at once).
    """

    listen: tuple[str, int]
    backend: tuple[str, int]
    ssl_context: ssl.SSLContext | None = None
    users: UserStore | None = None


class KafkaGateway:
    """The running gateway: ``await start()`` (binds), ``port``, ``await close()``.

    Also an async context manager. One task per client connection; :meth:`close` stops
    listening and drops every connection.
    """

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self._versions: list[tuple[int, int, int]] | None = None
        self._versions_lock = asyncio.Lock()
        #: Keys the decoy salts of unknown users: stable while the gateway runs.
        self._secret = secrets.token_bytes(32)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the gateway is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def host(self) -> str:
        return self.config.listen[0]

    async def start(self) -> None:
        host, port = self.config.listen
        self._server = await asyncio.start_server(
            self._accept,
            host,
            port,
            ssl=self.config.ssl_context,
            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S if self.config.ssl_context else None,
            reuse_address=True,
        )
        users = self.config.users
        log.info(
            "kafka gateway on %s:%d -> %s:%d (tls %s, sasl %s)",
            host, self.port, *self.config.backend,
            "on" if self.config.ssl_context else "off",
            ", ".join(users.mechanisms) if users else "off",
        )  # fmt: skip

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._sessions):
            task.cancel()
        if self._sessions:
            await asyncio.gather(*self._sessions, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> KafkaGateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- one client connection ------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        peer = _peer(writer)
        try:
            if self.config.users is not None:
                async with asyncio.timeout(AUTH_TIMEOUT_S):
                    user = await self._authenticate(reader, writer, self.config.users, peer)
                if user is None:
                    return
            await self._relay(reader, writer, peer)
        except (ProtocolError, TimeoutError) as exc:
            log.warning("closing %s before authentication: %s", peer, exc or "timed out")
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            log.debug("connection from %s ended: %s", peer, exc)
        finally:
            self._sessions.discard(task)
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _authenticate(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        users: UserStore,
        peer: str,
    ) -> str | None:
        """Run the SASL exchange; the user name on success, None when the client was refused."""
        sasl: SaslServer | None = None
        raw_tokens = False  # after SaslHandshake v0, tokens come as bare size-prefixed frames
        while True:
            frame = await read_frame(reader, MAX_PREAUTH_FRAME)
            if frame is None:
                return None
            if raw_tokens:
                assert sasl is not None
                try:
                    reply = sasl.step(frame)
                except AuthenticationFailed as exc:
                    self._log_failure(sasl, peer, exc)
                    return None
                writer.write(size_prefixed(reply))
                await writer.drain()
                if sasl.complete:
                    return self._log_success(sasl, peer)
                continue

            header, body = parse_request(frame)
            key, version = header.api_key, header.api_version
            if key == API_VERSIONS and sasl is None:
                versions = await self._broker_versions()
                writer.write(response_frame(header, api_versions_body(version, versions)))
            elif key == SASL_HANDSHAKE and sasl is None and version <= 1:
                mechanism = body.string() or ""
                if mechanism not in users.mechanisms:
                    log.warning("refusing %s: SASL mechanism %r not enabled", peer, mechanism)
                    answer = sasl_handshake_body(UNSUPPORTED_SASL_MECHANISM, users.mechanisms)
                    writer.write(response_frame(header, answer))
                    await writer.drain()
                    return None
                sasl = self._sasl_server(mechanism, users)
                raw_tokens = version == 0
                answer = sasl_handshake_body(NO_ERROR, users.mechanisms)
                writer.write(response_frame(header, answer))
            elif key == SASL_AUTHENTICATE and version <= MAX_VERSION[SASL_AUTHENTICATE]:
                if sasl is None:
                    message = "SaslAuthenticate before SaslHandshake"
                    answer = sasl_authenticate_body(version, ILLEGAL_SASL_STATE, message, b"")
                    writer.write(response_frame(header, answer))
                    await writer.drain()
                    return None
                token = body.compact_bytes() if version >= 2 else body.bytes32()
                try:
                    reply = sasl.step(token)
                except AuthenticationFailed as exc:
                    self._log_failure(sasl, peer, exc)
                    message = (
                        "Authentication failed: invalid credentials with SASL mechanism "
                        f"{sasl.mechanism}"
                    )
                    answer = sasl_authenticate_body(
                        version, SASL_AUTHENTICATION_FAILED, message, exc.reply
                    )
                    writer.write(response_frame(header, answer))
                    await writer.drain()
                    return None
                answer = sasl_authenticate_body(version, NO_ERROR, None, reply)
                writer.write(response_frame(header, answer))
                if sasl.complete:
                    await writer.drain()
                    return self._log_success(sasl, peer)
            else:
                log.warning(
                    "refusing %s: request api_key=%d v%d before authentication",
                    peer, key, version,
                )  # fmt: skip
                return None
            await writer.drain()

    def _sasl_server(self, mechanism: str, users: UserStore) -> SaslServer:
        if mechanism == "PLAIN":
            return PlainServer(users.plain_ok)
        return ScramServer(
            mechanism, lambda name: users.scram(mechanism, name), secret=self._secret
        )

    @staticmethod
    def _log_failure(sasl: SaslServer, peer: str, exc: AuthenticationFailed) -> None:
        log.warning(
            "authentication failed for %r from %s (%s): %s",
            sasl.username,
            peer,
            sasl.mechanism,
            exc,
        )

    @staticmethod
    def _log_success(sasl: SaslServer, peer: str) -> str:
        log.info("authenticated %r from %s (%s)", sasl.username, peer, sasl.mechanism)
        return sasl.username or ""

    async def _broker_versions(self) -> list[tuple[int, int, int]]:
        async with self._versions_lock:
            if self._versions is None:
                try:
                    broker = await fetch_api_versions(*self.config.backend)
                except OSError as exc:
                    host, port = self.config.backend
                    raise ProtocolError(f"broker {host}:{port} unreachable ({exc})") from exc
                self._versions = advertised_versions(broker)
            return self._versions

    async def _relay(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.config.backend)
        except OSError as exc:
            log.warning("broker %s:%d unreachable for %s: %s", *self.config.backend, peer, exc)
            return
        pumps = [
            asyncio.create_task(_pump(reader, up_writer)),
            asyncio.create_task(_pump(up_reader, writer)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            up_writer.close()
            with contextlib.suppress(OSError):
                await up_writer.wait_closed()


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ssl.SSLError):
        while data := await source.read(RELAY_CHUNK):
            sink.write(data)
            await sink.drain()


def _peer(writer: asyncio.StreamWriter) -> str:
    info = writer.get_extra_info("peername")
    return f"{info[0]}:{info[1]}" if isinstance(info, tuple) else str(info)


def gateway_answers(
    port: int, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None
) -> bool:
    """True when a gateway (or any Kafka broker) on ``port`` answers ApiVersions v0.

    For a TLS gateway pass a client context that trusts its CA (``ssl.create_default_context
    (cafile=certs.ca)``). The gateway answers ApiVersions before authentication but asks the
    broker behind it for the list first, so True also means the broker is up.
    """
    request = api_versions_request()
    try:
        with socket.create_connection((host, port), timeout=1.0) as raw:
            sock = ssl_context.wrap_socket(raw, server_hostname=host) if ssl_context else raw
            with sock:
                sock.sendall(request)
                head = sock.recv(8)
                return len(head) >= 8 and int.from_bytes(head[4:8], "big") == 1
    except (OSError, ssl.SSLError):
        return False


# == command line ==============================================================================
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.kafka_gateway",
        description="TLS and SASL (SCRAM-SHA-512/256, PLAIN) in front of a plaintext Kafka broker.",
    )
    parser.add_argument("--listen", required=True, help="HOST:PORT to accept clients on")
    parser.add_argument("--backend", required=True, help="HOST:PORT of the plaintext broker")
    parser.add_argument("--cert", help="server certificate chain (PEM); with --key turns TLS on")
    parser.add_argument("--key", help="private key of --cert (PEM)")
    parser.add_argument(
        "--users-file",
        help="name:MECHANISM:password lines, mode 0600; when given, SASL is required",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (INFO)")
    return parser


def config_from_args(args: argparse.Namespace) -> GatewayConfig:
    if bool(args.cert) != bool(args.key):
        raise ConfigError("--cert and --key go together")
    return GatewayConfig(
        listen=parse_address(args.listen),
        backend=parse_address(args.backend),
        ssl_context=server_ssl_context(args.cert, args.key) if args.cert else None,
        users=load_users(args.users_file) if args.users_file else None,
    )


async def _serve_until_signalled(config: GatewayConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with KafkaGateway(config) as gateway:
        print(f"listening on {gateway.host}:{gateway.port}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s kafka-gateway: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = config_from_args(args)
        asyncio.run(_serve_until_signalled(config))
    except ConfigError as exc:
        print(f"kafka-gateway: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"kafka-gateway: cannot listen on {args.listen}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
