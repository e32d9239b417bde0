"""The few parts of the Kafka wire format the gateway speaks before a client has logged in:
request headers, ApiVersions, SaslHandshake and SaslAuthenticate (classic and flexible).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "API_VERSIONS",
    "ILLEGAL_SASL_STATE",
    "MAX_VERSION",
    "NO_ERROR",
    "SASL_AUTHENTICATE",
    "SASL_AUTHENTICATION_FAILED",
    "SASL_HANDSHAKE",
    "UNSUPPORTED_SASL_MECHANISM",
    "ProtocolError",
    "RequestHeader",
    "advertised_versions",
    "api_versions_body",
    "api_versions_request",
    "fetch_api_versions",
    "parse_request",
    "read_frame",
    "response_frame",
    "sasl_authenticate_body",
    "sasl_handshake_body",
    "size_prefixed",
]

# -- the Kafka protocol numbers the gateway speaks --------------------------------------------
SASL_HANDSHAKE, API_VERSIONS, SASL_AUTHENTICATE = 17, 18, 36
NO_ERROR = 0
UNSUPPORTED_SASL_MECHANISM = 33
ILLEGAL_SASL_STATE = 34
UNSUPPORTED_VERSION = 35
SASL_AUTHENTICATION_FAILED = 58
#: The highest version of each API the gateway answers itself.
MAX_VERSION = {API_VERSIONS: 4, SASL_HANDSHAKE: 1, SASL_AUTHENTICATE: 2}


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


def response_frame(header: RequestHeader, body: bytes) -> bytes:
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


async def read_frame(reader: asyncio.StreamReader, limit: int) -> bytes | None:
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
        frame = await read_frame(reader, 1 << 20)
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


def api_versions_request(client_id: str = "probe", correlation_id: int = 1) -> bytes:
    """A whole ApiVersions v0 request frame (size prefix included): a readiness probe."""
    request = _i16(API_VERSIONS) + _i16(0) + _i32(correlation_id) + _string(client_id)
    return _i32(len(request)) + request


def size_prefixed(payload: bytes) -> bytes:
    """A bare SASL token as a v0 SaslHandshake client expects it: 4-byte size, then the bytes."""
    return _i32(len(payload)) + payload
