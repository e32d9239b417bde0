"""Records of the segment-changes topic -> table rows, tombstones or rejects. Pure: no I/O.

A record is a change (value = ``schemas.SegmentChange`` JSON, key = customer id, header
``segment_seq``), or a tombstone (key = customer id, null value: ``segstream forget``). Anything
else -- bad JSON, a failed schema, a key that is not the event's customer, a missing or
non-numeric ``segment_seq`` header -- is a :class:`Reject` with the reason, for the dead-letter
topic: one record never stops the sink.

A row carries the features the model used, as a JSON object, plus the five that BI queries
need as columns (NULL where the model did not use one). ``monetary`` is derived as
``frequency x aov`` when the model used AOV and not monetary (K-means models do: monetary would
count frequency twice), so revenue by segment works whatever the model (docs/bi.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import msgspec

from schemas import SegmentChange, decode
from schemas.errors import SchemaError

#: Features kept as columns of their own (the rest stay in the ``features`` JSON).
FEATURE_COLUMNS: tuple[str, ...] = ("recency_days", "frequency", "monetary", "aov", "sessions")

_JSON = msgspec.json.Encoder()


class ChangeRow(NamedTuple):
    """One change as the tables hold it (the order of ``segment_history``'s written columns)."""

    customer_id: str
    segment_seq: int
    old_segment: str | None
    new_segment: str
    reason: str
    model_version: str
    event_time: datetime
    processing_time: datetime
    recency_days: float | None
    frequency: float | None
    monetary: float | None
    aov: float | None
    sessions: float | None
    features: str
    old_distance: float | None
    new_distance: float | None


#: The columns a change row fills, in :class:`ChangeRow` order.
ROW_COLUMNS: tuple[str, ...] = ChangeRow._fields


@dataclass(frozen=True, slots=True)
class Position:
    """Where a record was read: topic, partition, offset (the offset fence kept in the DB)."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Change:
    at: Position
    row: ChangeRow
    #: The record's value, byte for byte (dead-lettered if the database refuses the row).
    raw: bytes = b""


@dataclass(frozen=True, slots=True)
class Tombstone:
    at: Position
    customer_id: str


@dataclass(frozen=True, slots=True)
class Reject:
    """A record the sink cannot take, kept whole for the dead-letter topic."""

    at: Position
    key: bytes | None
    value: bytes
    error: SchemaError


Decoded = Change | Tombstone | Reject


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


#: The five :data:`FEATURE_COLUMNS` values.
FeatureValues = tuple[float | None, float | None, float | None, float | None, float | None]


def feature_columns(features: dict[str, float]) -> FeatureValues:
    """The :data:`FEATURE_COLUMNS` values of a change's features (monetary derived if absent)."""
    get = features.get
    monetary = get("monetary")
    if monetary is None:
        frequency, aov = get("frequency"), get("aov")
        if frequency is not None and aov is not None:
            monetary = frequency * aov
    return (
        _finite(get("recency_days")),
        _finite(get("frequency")),
        _finite(monetary),
        _finite(get("aov")),
        _finite(get("sessions")),
    )


def to_row(change: SegmentChange, segment_seq: int) -> ChangeRow:
    """The table row of one decoded change."""
    return ChangeRow(
        change.customer_id,
        segment_seq,
        change.old_segment,
        change.new_segment,
        change.reason,
        change.model_version,
        change.event_time,
        change.processing_time,
        *feature_columns(change.features),
        # NaN and infinities are not JSON: they become null (msgspec writes null for them).
        _JSON.encode(change.features).decode(),
        _finite(change.old_distance),
        _finite(change.new_distance),
    )


def _header(headers: Sequence[tuple[str, bytes | None]] | None, name: str) -> bytes | None:
    for key, value in headers or ():
        if key == name:
            return value
    return None


def decode_record(
    at: Position,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | None,
) -> Decoded:
    """One record of the topic as a change, a tombstone or a reject (never raises)."""
    try:
        return _decode(at, key, value, headers)
    except SchemaError as exc:
        return Reject(at, key, value or b"", exc)
    except Exception as exc:  # the last resort: one record never stops the sink
        return Reject(at, key, value or b"", SchemaError("$", f"cannot decode: {exc!r}"[:500]))


def _decode(
    at: Position,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | None,
) -> Decoded:
    if key is None:
        raise SchemaError("key", "is missing (records are keyed by customer id)")
    try:
        customer_id = key.decode()
    except UnicodeDecodeError as exc:
        raise SchemaError("key", f"is not UTF-8 ({exc.reason})") from exc
    if value is None:
        if not 1 <= len(customer_id) <= 128:
            raise SchemaError("key", "a tombstone's key must be a customer id of 1-128 characters")
        return Tombstone(at, customer_id)
    change = decode(SegmentChange, value)
    if change.customer_id != customer_id:
        raise SchemaError("key", f"{customer_id!r} is not the event's customer_id")
    raw = _header(headers, "segment_seq")
    if raw is None:
        raise SchemaError("headers.segment_seq", "is missing")
    try:
        seq = int(raw)
    except ValueError as exc:
        raise SchemaError("headers.segment_seq", f"{raw[:40]!r} is not an integer") from exc
    if not 1 <= seq < 2**63:
        raise SchemaError("headers.segment_seq", f"must be a positive 64-bit integer, got {seq}")
    texts = (change.customer_id, change.new_segment, change.old_segment or "", change.model_version)
    if any("\x00" in text for text in texts):
        raise SchemaError("$", "NUL characters cannot be stored in SQL text columns")
    return Change(at, to_row(change, seq), value)
