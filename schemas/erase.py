"""The erase request: a platform service asks segstream to forget one customer (GDPR erasure).

A record on the erase-requests topic (``SEGSTREAM_ERASE_REQUESTS_TOPIC``) has the customer id
as its **key** (so requests for one customer stay in order on one partition, and a compacted
topic keeps the latest per customer) and a small versioned JSON value::

    {"schema_version": 1, "customer_id": "C42", "requested_at": "2026-12-06T09:00:00Z"}

``customer_id`` must equal the key: a request whose two ids disagree is refused rather than
guessed at, since erasing the wrong customer cannot be undone. ``request_id`` (optional) is
the platform's own reference, for its audit trail. :func:`decode_erase_request` returns the
request or raises :class:`~schemas.errors.SchemaError` (and nothing else), whose text becomes
the dead letter's reason; no reason quotes the customer id, because reasons are logged.

This module does no I/O and imports neither Kafka nor Redis (docs/forget.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar

import msgspec

from schemas.codec import decode_error, nesting_depth, validation_error
from schemas.errors import SchemaError
from schemas.events import FieldProblem, Id, OutputTime

__all__ = [
    "ERASE_SCHEMA_VERSIONS",
    "MAX_ERASE_REQUEST_BYTES",
    "EraseRequest",
    "decode_erase_request",
    "encode_erase_request",
]

#: The versions of the erase request this code understands.
ERASE_SCHEMA_VERSIONS: frozenset[int] = frozenset({1})
#: A request is a few dozen bytes; anything much larger is not one.
MAX_ERASE_REQUEST_BYTES = 4096
#: Deeper records are refused before parsing: a request nests one level.
MAX_ERASE_NESTING = 16
#: A reason longer than this is cut (msgspec's messages may quote values).


class EraseRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Forget one customer: delete everything segstream keeps about them, publish a tombstone.

    The record's key must be the same `customer_id`. Events of the customer stamped at or
    before the moment segstream performs the erasure are dropped if they arrive later (a
    replay), for a bounded time (docs/forget.md).
    """

    kind: ClassVar[str] = "erase_request"

    schema_version: Annotated[
        int,
        msgspec.Meta(
            description="Version of this request's contract; an unknown version is rejected.",
            extra_json_schema={"enum": sorted(ERASE_SCHEMA_VERSIONS)},
        ),
    ]
    customer_id: Annotated[Id, msgspec.Meta(description="The customer to forget (= the key).")]
    requested_at: Annotated[
        OutputTime, msgspec.Meta(description="When the platform received the erasure request.")
    ]
    request_id: Annotated[
        Id | None, msgspec.Meta(description="The platform's own reference, for its audit trail.")
    ] = None

    def __post_init__(self) -> None:
        if self.schema_version not in ERASE_SCHEMA_VERSIONS:
            known = ", ".join(str(v) for v in sorted(ERASE_SCHEMA_VERSIONS))
            said = f"unknown schema_version {self.schema_version} (supported: {known})"
            raise FieldProblem("schema_version", said)
        if self.requested_at.tzinfo is None or self.requested_at.utcoffset() is None:
            raise FieldProblem("requested_at", "must carry a UTC offset (e.g. 2026-05-01T12:00Z)")


_DECODER = msgspec.json.Decoder(EraseRequest)
_ENCODER = msgspec.json.Encoder()


def encode_erase_request(request: EraseRequest) -> bytes:
    return _ENCODER.encode(request)


def erase_request(customer_id: str, requested_at: datetime, **kwargs: Any) -> EraseRequest:
    """A version-1 request (for producers and tests)."""
    return EraseRequest(
        schema_version=1, customer_id=customer_id, requested_at=requested_at, **kwargs
    )


def decode_erase_request(key: bytes | None, value: bytes | None) -> EraseRequest:
    """The request in ``value`` for the customer in ``key``, or :class:`SchemaError`."""
    if value is None:
        raise SchemaError("$", "null value: an erase request is a JSON object")
    if len(value) > MAX_ERASE_REQUEST_BYTES:
        raise SchemaError(
            "$", f"oversize: {len(value)} bytes, the limit is {MAX_ERASE_REQUEST_BYTES}"
        )
    try:
        if nesting_depth(value) > MAX_ERASE_NESTING:
            levels = f"more than {MAX_ERASE_NESTING} levels of arrays and objects"
            raise SchemaError("$", f"nested too deeply: {levels}")
        request = _DECODER.decode(value)
    except msgspec.ValidationError as exc:
        raise validation_error(EraseRequest, exc) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise decode_error(value, exc) from None
    except SchemaError:
        raise
    except Exception as exc:  # the last resort: one record must never stop the consumer
        raise SchemaError("$", f"could not be decoded: {type(exc).__name__}") from None
    if key is None or not key:
        raise SchemaError("$", "missing key: the record's key must be the customer id")
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        raise SchemaError("$", "the record's key is not UTF-8") from None
    if text != request.customer_id:
        raise SchemaError("$.customer_id", "differs from the record's key (they must be equal)")
    return request
