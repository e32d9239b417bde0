"""What one record of the ``segment-changes`` topic means to the dashboard: a change, a
tombstone, or something it cannot read.

The dashboard only reads the topic, so a record it cannot decode (bytes some other client wrote,
a schema it does not know, a garbled ``segment_seq`` header) is counted and skipped: it never
stops the page. Everything here is pure; :mod:`dashboard.feed` hands in the record's parts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from schemas import SegmentChange
from schemas.codec import decode

__all__ = ["Change", "Tombstone", "Undecodable", "read_record"]


@dataclass(frozen=True, slots=True)
class Change:
    """One segment change, with the customer's change counter from the ``segment_seq`` header
    (``None`` when the header is absent: the change is then applied without a repeat check)."""

    customer_id: str
    seq: int | None
    old_segment: str | None
    new_segment: str
    reason: str
    model_version: str
    #: When segstream decided the change (``processing_time``), Unix ms.
    at_ms: int


@dataclass(frozen=True, slots=True)
class Tombstone:
    """``segstream forget`` erased the customer: key = customer id, value = null."""

    customer_id: str


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A record the dashboard cannot read, and why (shown as a count, never the bytes)."""

    why: str


Record = Change | Tombstone | Undecodable


def read_record(
    key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes]] = ()
) -> Record:
    """The meaning of one record; never raises, whatever the bytes."""
    try:
        return _read(key, value, headers)
    except Exception as exc:  # the last resort: one record never stops the dashboard
        return Undecodable(f"unexpected {type(exc).__name__}")


def _read(key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes]]) -> Record:
    if value is None:
        if not key:
            return Undecodable("tombstone without a key")
        try:
            return Tombstone(key.decode("utf-8"))
        except UnicodeDecodeError:
            return Undecodable("tombstone key is not UTF-8")
    try:
        event = decode(SegmentChange, value)
    except Exception as exc:  # SchemaError, by contract; anything else is just as unreadable
        return Undecodable(f"not a segment change: {str(exc)[:120]}")
    seq: int | None = None
    for name, raw in headers:
        if name == "segment_seq":
            try:
                seq = int(raw)
            except (TypeError, ValueError):
                return Undecodable("segment_seq header is not an integer")
    return Change(
        customer_id=event.customer_id,
        seq=seq,
        old_segment=event.old_segment,
        new_segment=event.new_segment,
        reason=event.reason,
        model_version=event.model_version,
        at_ms=int(event.processing_time.timestamp() * 1000),
    )
