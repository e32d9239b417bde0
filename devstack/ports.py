"""Free ports, and whether a broker or a Redis answers on one (plain or over TLS).

Raw protocol (a PING, a Kafka ApiVersions v0 request), no client library: these run at every
start-up and in every readiness wait.
"""

from __future__ import annotations

import socket
import ssl

__all__ = [
    "bind_refused",
    "free_port",
    "kafka_answers",
    "kafka_tls_answers",
    "port_in_use",
    "redis_answers",
    "redis_tls_answers",
]


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bind_refused(text: str) -> bool:
    """Whether a server's start-up output says its port was taken: redis-server and Python say
    "Address already in use", tansu (Rust) "AddrInUse"."""
    return "Address already in use" in text or "AddrInUse" in text


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def redis_answers(port: int, host: str = "127.0.0.1") -> bool:
    """True when a Redis on ``port`` answers PING (raw protocol: no client import at start-up)."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def kafka_answers(port: int, host: str = "127.0.0.1") -> bool:
    """True when a Kafka-protocol broker on ``port`` answers an ApiVersions request."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            return _api_versions_answered(sock)
    except OSError:
        return False


def kafka_tls_answers(port: int, context: ssl.SSLContext, host: str = "localhost") -> bool:
    """:func:`kafka_answers` over TLS (certificate checked against ``context``'s CA).

    ApiVersions is answered before authentication (clients ask it first), so no password
    is needed to see that the secure broker is up.
    """
    try:
        with (
            socket.create_connection((host, port), timeout=0.5) as raw,
            context.wrap_socket(raw, server_hostname=host) as sock,
        ):
            return _api_versions_answered(sock)
    except OSError:  # ssl.SSLError is an OSError
        return False


def redis_tls_answers(port: int, context: ssl.SSLContext, host: str = "127.0.0.1") -> bool:
    """True when a Redis behind TLS on ``port`` answers PING, with PONG or by asking for a
    password (the secure Redis lets no anonymous client in)."""
    try:
        with (
            socket.create_connection((host, port), timeout=0.5) as raw,
            context.wrap_socket(raw, server_hostname=host) as sock,
        ):
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def _api_versions_answered(sock: socket.socket) -> bool:
    # ApiVersions v0: size, api_key=18, api_version=0, correlation_id=1, client_id="ss".
    body = (18).to_bytes(2, "big") + (0).to_bytes(2, "big") + (1).to_bytes(4, "big")
    body += (2).to_bytes(2, "big") + b"ss"
    sock.sendall(len(body).to_bytes(4, "big") + body)
    head = b""
    while len(head) < 8:
        chunk = sock.recv(8 - len(head))
        if not chunk:
            return False
        head += chunk
    return int.from_bytes(head[4:8], "big") == 1
