"""A TLS + SASL gateway in front of a plaintext Kafka-protocol broker (the local tansu).

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
import base64
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import signal
import socket
import ssl
import stat
import struct
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from segstream.errors import ConfigError

__all__ = [
    "MECHANISMS",
    "AuthenticationFailed",
    "GatewayConfig",
    "KafkaGateway",
    "PlainServer",
    "ScramCredential",
    "ScramServer",
    "User",
    "UserStore",
    "gateway_answers",
    "load_users",
    "main",
    "parse_address",
    "server_ssl_context",
    "write_users_file",
]

log = logging.getLogger("devstack.kafka_gateway")

# -- the Kafka protocol numbers the gateway speaks --------------------------------------------
SASL_HANDSHAKE, API_VERSIONS, SASL_AUTHENTICATE = 17, 18, 36
NO_ERROR = 0
UNSUPPORTED_SASL_MECHANISM = 33
ILLEGAL_SASL_STATE = 34
UNSUPPORTED_VERSION = 35
SASL_AUTHENTICATION_FAILED = 58
#: The highest version of each API the gateway answers itself.
MAX_VERSION = {API_VERSIONS: 4, SASL_HANDSHAKE: 1, SASL_AUTHENTICATE: 2}

#: Strongest first: the order SaslHandshake lists them in.
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
SCRAM_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
#: Kafka's minimum for SCRAM credentials.
SCRAM_ITERATIONS = 4096
SALT_BYTES = 16

#: Before authentication a client has no business sending big frames (a SCRAM message is
#: ~200 bytes); a bigger one is a confused or hostile client and is closed on.
MAX_PREAUTH_FRAME = 64 * 1024
#: From TCP accept to authenticated; a client that stalls longer is dropped.
AUTH_TIMEOUT_S = 30.0
TLS_HANDSHAKE_TIMEOUT_S = 10.0
RELAY_CHUNK = 256 * 1024


# == SASL mechanisms (pure: bytes in, bytes out) ==============================================
class AuthenticationFailed(Exception):
    """A SASL exchange failed. ``reply``: what the mechanism sends back (``e=...`` for SCRAM)."""

    def __init__(self, message: str, reply: bytes = b"") -> None:
        super().__init__(message)
        self.reply = reply


@dataclass(frozen=True)
class ScramCredential:
    """What a SCRAM server keeps of a password (RFC 5802 §3): never the password itself."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    @classmethod
    def from_password(
        cls,
        password: str,
        mechanism: str,
        *,
        salt: bytes | None = None,
        iterations: int = SCRAM_ITERATIONS,
    ) -> ScramCredential:
        """Derive the keys. The password is taken as UTF-8 without SASLprep, as Kafka does."""
        name = SCRAM_HASHES[mechanism]
        salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
        salted = hashlib.pbkdf2_hmac(name, password.encode("utf-8"), salt, iterations)
        client_key = hmac.digest(salted, b"Client Key", name)
        return cls(
            salt=salt,
            iterations=iterations,
            stored_key=hashlib.new(name, client_key).digest(),
            server_key=hmac.digest(salted, b"Server Key", name),
        )


class SaslServer(Protocol):
    """One client's SASL exchange, one token at a time (the shape both mechanisms share)."""

    mechanism: str
    username: str | None
    complete: bool

    def step(self, token: bytes) -> bytes:
        """The reply to ``token``; raises :class:`AuthenticationFailed`."""
        ...


class ScramServer:
    """The server side of SCRAM-SHA-256/512 (RFC 5802, RFC 7677), two steps.

    ``lookup(username)`` gives the user's credential or None. An unknown user is not told
    apart from a wrong password: they get a salt derived from ``secret`` and their name (the
    same one at every attempt, like a real user's) and fail, at the end, with
    ``e=invalid-proof``. Channel binding is not offered (``n`` or ``y`` flags only); Kafka's
    SCRAM extensions in the client-first message are accepted and ignored.
    """

    def __init__(
        self,
        mechanism: str,
        lookup: Callable[[str], ScramCredential | None],
        *,
        secret: bytes,
        server_nonce: str | None = None,
    ) -> None:
        if mechanism not in SCRAM_HASHES:
            raise ValueError(f"not a SCRAM mechanism: {mechanism}")
        self.mechanism = mechanism
        self.username: str | None = None
        self.complete = False
        self._hash = SCRAM_HASHES[mechanism]
        self._lookup = lookup
        self._secret = secret
        self._server_nonce = server_nonce or secrets.token_urlsafe(24)
        self._known = False
        self._credential: ScramCredential | None = None
        self._gs2_header = ""
        self._nonce = ""
        self._first_bare = ""
        self._server_first = ""

    def step(self, token: bytes) -> bytes:
        if self.complete:
            raise AuthenticationFailed("SCRAM exchange already complete", b"e=other-error")
        if self._credential is None:
            return self.first(token)
        return self.final(token)

    def first(self, client_first: bytes) -> bytes:
        """client-first-message -> server-first-message (``r=...,s=...,i=...``)."""
        text = _utf8(client_first)
        parts = text.split(",", 2)
        if len(parts) != 3:
            raise _scram_error("invalid-encoding", "malformed SCRAM client-first message")
        flag, authzid, bare = parts
        if flag.startswith("p="):
            raise _scram_error("channel-binding-not-supported", "channel binding is not offered")
        if flag not in ("n", "y") or (authzid and not authzid.startswith("a=")):
            raise _scram_error("invalid-encoding", "malformed SCRAM GS2 header")
        attrs = bare.split(",")
        if attrs[0].startswith("m="):
            raise _scram_error("extensions-not-supported", "mandatory SCRAM extension")
        if len(attrs) < 2 or not attrs[0].startswith("n=") or not attrs[1].startswith("r="):
            raise _scram_error("invalid-encoding", "SCRAM client-first needs n= and r=")
        username = _saslname(attrs[0][2:])
        if authzid and _saslname(authzid[2:]) != username:
            raise _scram_error("other-error", "authorization id differs from the user name")
        client_nonce = attrs[1][2:]
        if not client_nonce or not client_nonce.isprintable() or "," in client_nonce:
            raise _scram_error("invalid-encoding", "invalid SCRAM client nonce")

        self.username = username
        known = self._lookup(username)
        self._known = known is not None
        self._credential = known or self._decoy(username)
        self._gs2_header = f"{flag},{authzid},"
        self._first_bare = bare
        self._nonce = client_nonce + self._server_nonce
        salt = base64.b64encode(self._credential.salt).decode()
        self._server_first = f"r={self._nonce},s={salt},i={self._credential.iterations}"
        return self._server_first.encode()

    def final(self, client_final: bytes) -> bytes:
        """client-final-message -> server-final-message (``v=`` + the server signature)."""
        credential = self._credential
        if credential is None:
            raise _scram_error("other-error", "SCRAM client-final before client-first")
        text = _utf8(client_final)
        without_proof, sep, proof_b64 = text.rpartition(",p=")
        attrs = without_proof.split(",")
        if not sep or len(attrs) < 2 or not attrs[0].startswith("c=") or "," in proof_b64:
            raise _scram_error("invalid-encoding", "malformed SCRAM client-final message")
        if _b64(attrs[0][2:]) != self._gs2_header.encode():
            raise _scram_error("channel-bindings-dont-match", "channel binding data differ")
        if attrs[1] != f"r={self._nonce}":
            raise _scram_error("other-error", "SCRAM nonce does not match")
        proof = _b64(proof_b64)

        auth_message = f"{self._first_bare},{self._server_first},{without_proof}".encode()
        client_signature = hmac.digest(credential.stored_key, auth_message, self._hash)
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=False))
        matches = len(proof) == len(client_signature) and hmac.compare_digest(
            hashlib.new(self._hash, client_key).digest(), credential.stored_key
        )
        if not (matches and self._known):
            raise _scram_error("invalid-proof", "invalid credentials")
        self.complete = True
        server_signature = hmac.digest(credential.server_key, auth_message, self._hash)
        return b"v=" + base64.b64encode(server_signature)

    def _decoy(self, username: str) -> ScramCredential:
        """A stable, plausible credential for a user that does not exist (fails every proof)."""
        seed = hmac.digest(self._secret, f"{self.mechanism}\0{username}".encode(), "sha512")
        size = hashlib.new(self._hash).digest_size
        return ScramCredential(
            salt=seed[:SALT_BYTES],
            iterations=SCRAM_ITERATIONS,
            stored_key=hashlib.new(self._hash, seed).digest()[:size],
            server_key=hmac.digest(seed, b"Server Key", self._hash),
        )


class PlainServer:
    """The server side of SASL PLAIN (RFC 4616): ``authzid NUL authcid NUL password``, one step.

    ``check(username, password)`` says whether the pair is valid; it must not return faster for
    an unknown user (:meth:`UserStore.plain_ok` compares against a decoy).
    """

    mechanism = "PLAIN"

    def __init__(self, check: Callable[[str, str], bool]) -> None:
        self.username: str | None = None
        self.complete = False
        self._check = check

    def step(self, token: bytes) -> bytes:
        if self.complete:
            raise AuthenticationFailed("PLAIN exchange already complete")
        parts = _utf8(token).split("\0")
        if len(parts) != 3 or not parts[1]:
            raise AuthenticationFailed("malformed PLAIN message")
        authzid, username, password = parts
        self.username = username
        if authzid and authzid != username:
            raise AuthenticationFailed("authorization id differs from the user name")
        if not self._check(username, password):
            raise AuthenticationFailed("invalid credentials")
        self.complete = True
        return b""


def _scram_error(code: str, message: str) -> AuthenticationFailed:
    return AuthenticationFailed(f"{message} (e={code})", f"e={code}".encode())


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _scram_error("invalid-encoding", "SASL message is not UTF-8") from None


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise _scram_error("invalid-encoding", "invalid base64 in SCRAM message") from None


def _saslname(text: str) -> str:
    """RFC 5802 saslname: ``=2C`` is ``,`` and ``=3D`` is ``=``; any other ``=`` is invalid."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "=":
            code = text[i + 1 : i + 3]
            if code not in ("2C", "3D"):
                raise _scram_error("invalid-username-encoding", "invalid SCRAM user name")
            out.append("," if code == "2C" else "=")
            i += 3
        else:
            out.append(text[i])
            i += 1
    if not out:
        raise _scram_error("invalid-username-encoding", "empty SCRAM user name")
    return "".join(out)


# == users =====================================================================================
@dataclass(frozen=True)
class User:
    """One login: ``name`` may use ``mechanism`` with ``password``."""

    name: str
    mechanism: str
    password: str = field(repr=False)


class UserStore:
    """The users the gateway accepts, kept as SCRAM keys (PLAIN: a digest), not as passwords."""

    def __init__(self, users: Iterable[User]) -> None:
        self._scram: dict[tuple[str, str], ScramCredential] = {}
        self._plain: dict[str, bytes] = {}
        for user in users:
            mechanism = user.mechanism.upper()
            if mechanism not in MECHANISMS:
                raise ConfigError(
                    f"user {user.name!r}: unknown SASL mechanism {user.mechanism!r} "
                    f"(expected one of {', '.join(MECHANISMS)})"
                )
            if not user.name or not user.password:
                raise ConfigError("a gateway user needs a name and a password")
            if mechanism == "PLAIN":
                self._plain[user.name] = _plain_digest(user.password)
            else:
                credential = ScramCredential.from_password(user.password, mechanism)
                self._scram[(mechanism, user.name)] = credential
        self._decoy = _plain_digest(secrets.token_hex(16))

    @property
    def mechanisms(self) -> tuple[str, ...]:
        """The mechanisms at least one user has, strongest first (what SaslHandshake lists)."""
        used = {m for m, _ in self._scram} | ({"PLAIN"} if self._plain else set())
        return tuple(m for m in MECHANISMS if m in used)

    def scram(self, mechanism: str, name: str) -> ScramCredential | None:
        return self._scram.get((mechanism, name))

    def plain_ok(self, name: str, password: str) -> bool:
        expected = self._plain.get(name)
        same = hmac.compare_digest(_plain_digest(password), expected or self._decoy)
        return same and expected is not None


def _plain_digest(password: str) -> bytes:
    return hashlib.sha256(password.encode("utf-8")).digest()


def load_users(path: str | os.PathLike[str]) -> UserStore:
    """Read a users file: ``name:MECHANISM:password`` per line (``#`` comments, blank lines).

    The password is everything after the second colon, so it may contain colons. The file must
    not be readable by group or others (mode 0600), as ssh insists for its keys.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"gateway users file {path}: cannot read it ({exc.strerror})") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"gateway users file {path} is open to other users (mode {stat.S_IMODE(mode):o}); "
            f"`chmod 600 {path}`"
        )
    users = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[0] or not parts[2]:
            raise ConfigError(f"{path}:{number}: expected name:MECHANISM:password")
        users.append(User(parts[0], parts[1].strip(), parts[2]))
    if not users:
        raise ConfigError(f"gateway users file {path} names no user")
    return UserStore(users)


def write_users_file(path: str | os.PathLike[str], users: Iterable[User]) -> Path:
    """Write ``users`` in :func:`load_users`' format, mode 0600 from the first byte."""
    path = Path(path)
    lines = []
    for user in users:
        if ":" in user.name or "\n" in user.name + user.password:
            raise ConfigError(f"gateway user {user.name!r}: no ':' in a name, no line breaks")
        lines.append(f"{user.name}:{user.mechanism.upper()}:{user.password}\n")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(fd, 0o600)
        out.write("".join(lines))
    return path


# == Kafka wire format =========================================================================
class ProtocolError(Exception):
    """A frame the gateway cannot read: the connection is closed."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ProtocolError("truncated frame")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int16(self) -> int:
        return int(struct.unpack(">h", self.take(2))[0])

    def int32(self) -> int:
        return int(struct.unpack(">i", self.take(4))[0])

    def uvarint(self) -> int:
        value = shift = 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 28:
                raise ProtocolError("varint too long")

    def string(self) -> str | None:
        size = self.int16()
        return None if size < 0 else self.take(size).decode("utf-8", "replace")

    def bytes32(self) -> bytes:
        size = self.int32()
        return b"" if size < 0 else self.take(size)

    def compact_bytes(self) -> bytes:
        size = self.uvarint() - 1
        return b"" if size < 0 else self.take(size)

    def skip_tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())


def _i16(v: int) -> bytes:
    return struct.pack(">h", v)


def _i32(v: int) -> bytes:
    return struct.pack(">i", v)


def _uvarint(v: int) -> bytes:
    out = bytearray()
    while True:
        if v < 0x80:
            out.append(v)
            return bytes(out)
        out.append((v & 0x7F) | 0x80)
        v >>= 7


def _string(s: str | None) -> bytes:
    if s is None:
        return _i16(-1)
    raw = s.encode()
    return _i16(len(raw)) + raw


def _compact_string(s: str | None) -> bytes:
    if s is None:
        return _uvarint(0)
    raw = s.encode()
    return _uvarint(len(raw) + 1) + raw


@dataclass(frozen=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None


def _flexible(api_key: int, version: int) -> bool:
    """Whether this request (and its response) uses the compact, tagged-field encoding."""
    return (api_key == API_VERSIONS and version >= 3) or (
        api_key == SASL_AUTHENTICATE and version >= 2
    )


def parse_request(frame: bytes) -> tuple[RequestHeader, _Reader]:
    """The request header (v1 or v2) and a reader positioned at the body."""
    reader = _Reader(frame)
    header = RequestHeader(reader.int16(), reader.int16(), reader.int32(), reader.string())
    if _flexible(header.api_key, header.api_version):
        reader.skip_tagged_fields()
    return header, reader


def _response(header: RequestHeader, body: bytes) -> bytes:
    """A size-prefixed response; header v1 (tagged fields) for flexible versions but ApiVersions."""
    head = _i32(header.correlation_id)
    if header.api_key != API_VERSIONS and _flexible(header.api_key, header.api_version):
        head += _uvarint(0)
    return _i32(len(head) + len(body)) + head + body


def api_versions_body(version: int, versions: Sequence[tuple[int, int, int]]) -> bytes:
    """ApiVersions response body for ``version`` (unknown versions: error 35 in v0 form)."""
    if version > MAX_VERSION[API_VERSIONS]:
        top = MAX_VERSION[API_VERSIONS]
        return _i16(UNSUPPORTED_VERSION) + _i32(1) + _i16(API_VERSIONS) + _i16(0) + _i16(top)
    if version >= 3:
        entries = b"".join(_i16(k) + _i16(lo) + _i16(hi) + _uvarint(0) for k, lo, hi in versions)
        return _i16(NO_ERROR) + _uvarint(len(versions) + 1) + entries + _i32(0) + _uvarint(0)
    body = _i16(NO_ERROR) + _i32(len(versions))
    body += b"".join(_i16(k) + _i16(lo) + _i16(hi) for k, lo, hi in versions)
    return body + (_i32(0) if version >= 1 else b"")


def sasl_authenticate_body(
    version: int, error: int, message: str | None, auth_bytes: bytes
) -> bytes:
    if version >= 2:
        body = _i16(error) + _compact_string(message)
        body += _uvarint(len(auth_bytes) + 1) + auth_bytes
        return body + struct.pack(">q", 0) + _uvarint(0)
    body = _i16(error) + _string(message) + _i32(len(auth_bytes)) + auth_bytes
    return body + (struct.pack(">q", 0) if version >= 1 else b"")


def sasl_handshake_body(error: int, mechanisms: Sequence[str]) -> bytes:
    return _i16(error) + _i32(len(mechanisms)) + b"".join(_string(m) for m in mechanisms)


async def _read_frame(reader: asyncio.StreamReader, limit: int) -> bytes | None:
    """One size-prefixed frame; None at end of stream; ProtocolError when over ``limit``."""
    try:
        size = int.from_bytes(await reader.readexactly(4), "big", signed=True)
        if size < 0 or size > limit:
            raise ProtocolError(f"frame of {size} bytes before authentication")
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        return None


async def fetch_api_versions(host: str, port: int) -> list[tuple[int, int, int]]:
    """The broker's ``(api_key, min, max)`` list, asked with ApiVersions v0."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        request = _i16(API_VERSIONS) + _i16(0) + _i32(1) + _string("kafka-gateway")
        writer.write(_i32(len(request)) + request)
        await writer.drain()
        frame = await _read_frame(reader, 1 << 20)
        if frame is None:
            raise ProtocolError("the broker closed the connection")
        body = _Reader(frame)
        body.int32()
        error = body.int16()
        if error != NO_ERROR:
            raise ProtocolError(f"the broker answered ApiVersions with error {error}")
        return [(body.int16(), body.int16(), body.int16()) for _ in range(body.int32())]
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def advertised_versions(broker: Iterable[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """The broker's list with the three APIs the gateway answers itself at its own ranges."""
    own = {k: (0, v) for k, v in MAX_VERSION.items()}
    merged = {k: (lo, hi) for k, lo, hi in broker if k not in own}
    merged |= own
    return [(k, lo, hi) for k, (lo, hi) in sorted(merged.items())]


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
            frame = await _read_frame(reader, MAX_PREAUTH_FRAME)
            if frame is None:
                return None
            if raw_tokens:
                assert sasl is not None
                try:
                    reply = sasl.step(frame)
                except AuthenticationFailed as exc:
                    self._log_failure(sasl, peer, exc)
                    return None
                writer.write(_i32(len(reply)) + reply)
                await writer.drain()
                if sasl.complete:
                    return self._log_success(sasl, peer)
                continue

            header, body = parse_request(frame)
            key, version = header.api_key, header.api_version
            if key == API_VERSIONS and sasl is None:
                versions = await self._broker_versions()
                writer.write(_response(header, api_versions_body(version, versions)))
            elif key == SASL_HANDSHAKE and sasl is None and version <= 1:
                mechanism = body.string() or ""
                if mechanism not in users.mechanisms:
                    log.warning("refusing %s: SASL mechanism %r not enabled", peer, mechanism)
                    answer = sasl_handshake_body(UNSUPPORTED_SASL_MECHANISM, users.mechanisms)
                    writer.write(_response(header, answer))
                    await writer.drain()
                    return None
                sasl = self._sasl_server(mechanism, users)
                raw_tokens = version == 0
                answer = sasl_handshake_body(NO_ERROR, users.mechanisms)
                writer.write(_response(header, answer))
            elif key == SASL_AUTHENTICATE and version <= MAX_VERSION[SASL_AUTHENTICATE]:
                if sasl is None:
                    message = "SaslAuthenticate before SaslHandshake"
                    answer = sasl_authenticate_body(version, ILLEGAL_SASL_STATE, message, b"")
                    writer.write(_response(header, answer))
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
                    writer.write(_response(header, answer))
                    await writer.drain()
                    return None
                answer = sasl_authenticate_body(version, NO_ERROR, None, reply)
                writer.write(_response(header, answer))
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
    request = _i16(API_VERSIONS) + _i16(0) + _i32(1) + _string("probe")
    try:
        with socket.create_connection((host, port), timeout=1.0) as raw:
            sock = ssl_context.wrap_socket(raw, server_hostname=host) if ssl_context else raw
            with sock:
                sock.sendall(_i32(len(request)) + request)
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
