"""SASL for the local secured Kafka: SCRAM-SHA-512/256 (RFC 5802/7677) and PLAIN (RFC 4616)
servers, and the users file they check logins against.

Pure: bytes in, bytes out; :mod:`devstack.kafka_gateway` carries them over the Kafka protocol.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from segstream.errors import ConfigError

__all__ = [
    "MECHANISMS",
    "AuthenticationFailed",
    "PlainServer",
    "SaslServer",
    "ScramCredential",
    "ScramServer",
    "User",
    "UserStore",
    "load_users",
    "write_users_file",
]

#: Strongest first: the order SaslHandshake lists them in.
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
SCRAM_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
#: Kafka's minimum for SCRAM credentials.
SCRAM_ITERATIONS = 4096
SALT_BYTES = 16


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
