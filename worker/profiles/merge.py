"""The profile merge rule in Python: what ``profile.lua`` does to one customer, as pure functions.

A stored profile is, per attribute, ``(time, value)``: the event time (epoch ms) of the update
that decided it (0 = never written) and its text as stored in the customer hash ('' = absent).
An update sets or clears some attributes at one event time. Per attribute, the stored pair
becomes the larger of the two pairs, compared by time, then by value (bytes of the UTF-8
text, clear = ''): "last write wins, ties to the larger value". A maximum is commutative,
associative and idempotent, so any arrival order, and any repetition, of a set of updates gives
the same stored profile; that is what lets a replay with new offsets change nothing.

The value texts are those of :mod:`worker.core.attributes` (``Attributes.from_fields`` reads
them): a country code, the region, the birth year in decimal, ``1``/``0`` for the consent, text
as given otherwise.

This module imports neither Kafka nor Redis; the tests use it as the oracle of the script.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from schemas.profile import CustomerProfile
from worker.core.attributes import PROFILE_FIELDS, PROFILE_TIMES_FIELD, decode_times, encode_times

__all__ = [
    "Stored",
    "Update",
    "as_hash",
    "from_hash",
    "merge",
    "merge_all",
    "update_of",
    "value_text",
]

#: Attribute -> (decisive event time in ms, 0 = never written; stored text, '' = absent).
Stored = dict[str, tuple[int, str]]


@dataclass(frozen=True, slots=True)
class Update:
    """One profile event as the merge sees it: attribute -> new text ('' = clear)."""

    time_ms: int
    values: Mapping[str, str]


def value_text(attribute: str, value: object) -> str:
    """The stored text of an attribute's value (``None`` = clear = '')."""
    if value is None:
        return ""
    if attribute == "marketing_consent":
        return "1" if value else "0"
    return str(value)


def update_of(profile: CustomerProfile) -> Update:
    """The update a decoded profile event makes."""
    return Update(
        profile.event_time_ms,
        {name: value_text(name, value) for name, value in profile.changes().items()},
    )


def _key(pair: tuple[int, str]) -> tuple[int, bytes]:
    return pair[0], pair[1].encode("utf-8", "surrogatepass")


def merge(stored: Mapping[str, tuple[int, str]], update: Update) -> Stored:
    """``stored`` after ``update`` (a new dict; attributes the update leaves out unchanged)."""
    out: Stored = {name: stored.get(name, (0, "")) for name in PROFILE_FIELDS}
    for name, text in update.values.items():
        candidate = (update.time_ms, text)
        if _key(candidate) > _key(out[name]):
            out[name] = candidate
    return out


def merge_all(
    updates: Iterable[Update], stored: Mapping[str, tuple[int, str]] | None = None
) -> Stored:
    """Every update merged in turn into ``stored`` (default: nothing written yet)."""
    out: Stored = dict(stored or {})
    out = {name: out.get(name, (0, "")) for name in PROFILE_FIELDS}
    for update in updates:
        out = merge(out, update)
    return out


def as_hash(stored: Mapping[str, tuple[int, str]]) -> dict[str, str]:
    """The customer-hash fields ``stored`` is kept as: the set values and ``pt`` in the form
    ``profile.lua`` writes (compact when every written attribute has one time; nothing at all
    when no attribute was ever written)."""
    if all(stored.get(name, (0, ""))[0] == 0 for name in PROFILE_FIELDS):
        return {}
    out = {
        field: stored[name][1]
        for name, field in PROFILE_FIELDS.items()
        if name in stored and stored[name][1]
    }
    out[PROFILE_TIMES_FIELD] = encode_times(
        {name: stored.get(name, (0, ""))[0] for name in PROFILE_FIELDS}
    )
    return out


def from_hash(fields: Mapping[str, str]) -> Stored:
    """The stored profile in a customer hash decoded to text (inverse of :func:`as_hash`)."""
    times = decode_times(fields.get(PROFILE_TIMES_FIELD))
    return {
        name: (times[name] or 0, fields.get(field, "") or "")
        for name, field in PROFILE_FIELDS.items()
    }
