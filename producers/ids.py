"""Deterministic event ids: the same source record always gets the same id.

An id is a keyed BLAKE2b digest of a namespace (the source name) and the record's identity in
that source (an invoice number, an order id + status + time, a line number). Replaying the same
file twice therefore yields the same ids, and the worker's dedup tells a repeat from a new event.
No wall clock and no randomness goes in.
"""

from __future__ import annotations

from hashlib import blake2b

_SEP = "\x1f"


def event_id(namespace: str, *identity: object) -> str:
    """A 32-hex-digit id for ``identity`` inside ``namespace`` (stable across runs and machines)."""
    text = _SEP.join((namespace, *(str(part) for part in identity)))
    return blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def short_tag(*parts: object, length: int = 8) -> str:
    """A short stable hex tag of ``parts`` (used to namespace synthetic runs)."""
    text = _SEP.join(str(part) for part in parts)
    return blake2b(text.encode("utf-8"), digest_size=16).hexdigest()[:length]
