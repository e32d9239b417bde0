"""Customer hash fields -> the categorical features' values, as the export spells them (pure).

A model with categorical features (:mod:`worker.segmentation.categorical`) needs, per customer,
the values the export row would carry in the same columns (``worker.core.attributes``:
``Attributes.from_fields(...).columns(as_of)``). The state script's snapshot carries numbers
only, so a scoring round of such a model reads :func:`fields_for` with one more call per space
(:meth:`worker.scoring.store.ScoringStore.send_attributes`) and turns the replies into values
here, per feature, without building an ``Attributes`` per customer. A unit test compares the two
on random hashes. A value that cannot be decoded (a hand-edited field) is missing, never an
error: no customer stops a round.

No Kafka, no Redis.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from worker.core.attributes import (
    PROFILE_FIELDS,
    SUMMARY_FIELDS,
    age_at,
    age_band,
    decode_summary,
    top,
)

#: Hash field each categorical feature is computed from.
SOURCES: dict[str, str] = {
    "country": PROFILE_FIELDS["country"],
    "region": PROFILE_FIELDS["region"],
    "gender": PROFILE_FIELDS["gender"],
    "signup_channel": PROFILE_FIELDS["signup_channel"],
    "loyalty_tier": PROFILE_FIELDS["loyalty_tier"],
    "marketing_consent": PROFILE_FIELDS["marketing_consent"],
    "age_band": PROFILE_FIELDS["birth_year"],
    "favourite_category": SUMMARY_FIELDS["spend_by_category"],
    "top_viewed_category": SUMMARY_FIELDS["views_by_category"],
    "device": SUMMARY_FIELDS["clicks_by_device"],
}


def fields_for(names: Sequence[str]) -> tuple[str, ...]:
    """The hash fields a round must read for these categorical features (sorted, no repeats);
    empty for a numeric-only model, which then reads nothing more."""
    return tuple(sorted({SOURCES[name] for name in names}))


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    return text or None


def _profile(raw: str | None, as_of: datetime) -> object:
    return raw


def _consent(raw: str | None, as_of: datetime) -> object:
    return None if raw is None else raw == "1"


def _age_band(raw: str | None, as_of: datetime) -> object:
    try:
        return None if raw is None else age_band(age_at(int(raw), as_of))
    except ValueError:
        return None


def _top(raw: str | None, as_of: datetime) -> object:
    try:
        return top(decode_summary(raw))
    except ValueError:
        return None


_DECODE: dict[str, Callable[[str | None, datetime], object]] = {
    "marketing_consent": _consent,
    "age_band": _age_band,
    "favourite_category": _top,
    "top_viewed_category": _top,
    "device": _top,
}


def values(
    names: Sequence[str],
    fields: Sequence[str],
    customer_ids: Sequence[str],
    replies: Mapping[str, Sequence[bytes | str | None]],
    as_of_ms: int,
) -> dict[str, list[object]]:
    """Feature -> one value per customer of ``customer_ids`` (export spelling).

    ``replies``: customer -> its values of ``fields`` (:func:`fields_for`); a customer without
    one has every value missing.
    """
    as_of = datetime.fromtimestamp(as_of_ms / 1000, UTC)
    column = {f: i for i, f in enumerate(fields)}
    absent: Sequence[bytes | str | None] = (None,) * len(fields)
    rows = [replies.get(cid, absent) for cid in customer_ids]
    out: dict[str, list[object]] = {}
    for name in names:
        j = column[SOURCES[name]]
        decode = _DECODE.get(name, _profile)
        cache: dict[bytes | str | None, object] = {}
        got: list[object] = []
        for row in rows:
            raw = row[j]
            if raw not in cache:
                cache[raw] = decode(_text(raw), as_of)
            got.append(cache[raw])
        out[name] = got
    return out
