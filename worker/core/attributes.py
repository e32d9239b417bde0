"""A customer's categorical attributes: profile (demographics) and category/device summaries.

Where they live and how they are encoded is the contract between the scripts that write them
(``worker/profiles`` for profile events, ``worker/state/apply.lua`` for the summaries) and every
reader (export, training, scoring, report). All of it lives in the customer hash
``{prefix}:c:{<id>}``, next to the counters, so that ``segstream forget`` (which deletes that
hash) removes it too, and so that it costs no key of its own (docs/state.md has the bytes).

Profile: one field per attribute holding its value (absent = never set, or cleared), plus one
field ``pt`` holding the event time (epoch milliseconds, 8 lowercase base-36 digits) of the
update that decided each attribute, in one of two forms (:func:`encode_times` writes them,
:func:`decode_times` reads both; they say the same thing, so the choice never changes a merge):

- **compact**, 10 characters, whenever every attribute ever written has the same decisive time
  (nearly every profile: one event writes it): that time, then 2 lowercase hex digits, a bitmask
  of the attributes it decided (bit ``k`` = the ``k``-th of :data:`PROFILE_FIELDS`, ``country``
  = bit 0); an attribute outside the mask was never written. ``m7q5h1c07f``: all seven decided
  at ``m7q5h1c0`` (2025-03-01T12:00Z); ``m7q5h1c005``: country and birth year, nothing else.
- **full**, 56 characters, otherwise: 7 x 8 digits in :data:`PROFILE_FIELDS` order,
  ``00000000`` = never written.

The writers (``worker/profiles/profile.lua`` and :func:`encode_times`) pick the compact form
whenever it is exact and the full form when the times differ, so a stored profile has one
spelling: a later event touching only some attributes turns it full, one that decides every
written attribute at one later time turns it compact again. A profile update wins a field when
its event time is later; at an equal time the larger value wins (absent counting as the empty
string), so every arrival order gives the same profile. The compact form is 46 characters
shorter: what that saves per customer is measured in docs/state.md (memory budget).

Summaries (``ks`` spend by category in cents, ``kv`` product views by category, ``kd`` clicks by
device): ``name=count`` pairs joined by ``,``, at most :data:`SUMMARY_SLOTS` pairs, kept with
the Space-Saving rule (a new name, when every slot is taken, replaces the smallest pair and
starts from its count), so a stored count overestimates the true one by at most the smallest
stored count. Names cannot hold ``=`` or ``,`` (the schema checks them).

This module imports neither Kafka nor Redis.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

#: Profile attribute -> field of the customer hash (short: a million hashes repeat them).
PROFILE_FIELDS: dict[str, str] = {
    "country": "pc",
    "region": "pr",
    "birth_year": "pb",
    "gender": "pg",
    "signup_channel": "ps",
    "loyalty_tier": "pl",
    "marketing_consent": "pm",
}
#: The field holding every profile attribute's decisive event time (see the module docstring).
PROFILE_TIMES_FIELD = "pt"
PROFILE_TIME_DIGITS = 8
NEVER_WRITTEN = "0" * PROFILE_TIME_DIGITS
#: Length of ``pt`` in its compact form: one time and a 2-hex-digit mask of the attributes.
COMPACT_TIMES_LENGTH = PROFILE_TIME_DIGITS + 2
#: Length of ``pt`` in its full form: one time per attribute.
FULL_TIMES_LENGTH = PROFILE_TIME_DIGITS * len(PROFILE_FIELDS)

#: Summary -> field of the customer hash.
SUMMARY_FIELDS: dict[str, str] = {
    "spend_by_category": "ks",
    "views_by_category": "kv",
    "clicks_by_device": "kd",
}
#: Pairs kept per summary (Space-Saving slots).
SUMMARY_SLOTS = 4

#: The export columns these attributes add (after the behaviour columns of the export contract).
ATTRIBUTE_COLUMNS: tuple[str, ...] = (
    "country",
    "region",
    "birth_year",
    "age",
    "age_band",
    "gender",
    "signup_channel",
    "loyalty_tier",
    "marketing_consent",
    "favourite_category",
    "top_viewed_category",
    "device",
)

#: Age bands (lower bound inclusive) and their labels; under the first bound: "<18".
AGE_BANDS: tuple[tuple[int, str], ...] = (
    (18, "18-24"),
    (25, "25-34"),
    (35, "35-44"),
    (45, "45-54"),
    (55, "55-64"),
    (65, "65+"),
)

Summary = tuple[tuple[str, int], ...]


def encode_time(ms: int) -> str:
    """Epoch milliseconds as the fixed-width base-36 text stored in ``pt``."""
    if ms < 0:
        raise ValueError(f"profile event time {ms} is before 1970")
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = []
    for _ in range(PROFILE_TIME_DIGITS):
        ms, rest = divmod(ms, 36)
        out.append(digits[rest])
    if ms:
        raise ValueError("profile event time does not fit 8 base-36 digits")
    return "".join(reversed(out))


def encode_times(times: Mapping[str, int | None]) -> str:
    """Attribute -> decisive event time in ms (absent, ``None`` or 0 = never written) as ``pt``:
    the compact form when every written attribute has the same time, else the full form; ``''``
    when none was ever written (no ``pt`` field at all). The inverse of :func:`decode_times`."""
    written = {name: ms for name in PROFILE_FIELDS if (ms := times.get(name))}
    if not written:
        return ""
    if len(set(written.values())) == 1:
        mask = sum(1 << k for k, name in enumerate(PROFILE_FIELDS) if name in written)
        return encode_time(next(iter(written.values()))) + f"{mask:02x}"
    return "".join(encode_time(written.get(name, 0)) for name in PROFILE_FIELDS)


def decode_times(raw: str | None) -> dict[str, int | None]:
    """``pt``, either form -> attribute -> decisive event time in ms (``None`` = never written)."""
    out: dict[str, int | None] = dict.fromkeys(PROFILE_FIELDS)
    if not raw:
        return out
    if len(raw) == COMPACT_TIMES_LENGTH:
        ms = int(raw[:PROFILE_TIME_DIGITS], 36)
        mask = int(raw[PROFILE_TIME_DIGITS:], 16)
        for k, name in enumerate(PROFILE_FIELDS):
            if ms and mask >> k & 1:
                out[name] = ms
        return out
    for i, name in enumerate(PROFILE_FIELDS):
        chunk = raw[i * PROFILE_TIME_DIGITS : (i + 1) * PROFILE_TIME_DIGITS]
        if chunk and chunk != NEVER_WRITTEN:
            out[name] = int(chunk, 36)
    return out


def decode_summary(raw: str | None) -> Summary:
    """``name=count,...`` -> pairs, largest count first (ties: name order)."""
    if not raw:
        return ()
    pairs = []
    for item in raw.split(","):
        name, _, count = item.rpartition("=")
        if name:
            pairs.append((name, int(count)))
    return tuple(sorted(pairs, key=lambda p: (-p[1], p[0])))


def top(summary: Summary) -> str | None:
    """The name with the largest count (ties: the first by name), ``None`` for no pairs."""
    return summary[0][0] if summary else None


def age_at(birth_year: int | None, as_of: datetime) -> int | None:
    """Age in whole years at ``as_of`` from a birth year (the birthday assumed mid-year)."""
    if birth_year is None:
        return None
    return as_of.year - birth_year - (1 if as_of.month < 7 else 0)


def age_band(age: int | None) -> str | None:
    if age is None:
        return None
    label = "<18"
    for low, name in AGE_BANDS:
        if age >= low:
            label = name
    return label


@dataclass(frozen=True, slots=True)
class Attributes:
    """A customer's profile and summaries as stored (derived values are functions/properties)."""

    country: str | None = None
    region: str | None = None
    birth_year: int | None = None
    gender: str | None = None
    signup_channel: str | None = None
    loyalty_tier: str | None = None
    marketing_consent: bool | None = None
    spend_by_category: Summary = ()
    views_by_category: Summary = ()
    clicks_by_device: Summary = ()

    @classmethod
    def from_fields(cls, text: Mapping[str, str]) -> Attributes:
        """Build from a customer hash already decoded to text (absent fields stay ``None``)."""
        values: dict[str, object] = {}
        for attr, name in PROFILE_FIELDS.items():
            raw = text.get(name)
            if raw is None or raw == "":
                continue
            if attr == "birth_year":
                values[attr] = int(raw)
            elif attr == "marketing_consent":
                values[attr] = raw == "1"
            else:
                values[attr] = raw
        for attr, name in SUMMARY_FIELDS.items():
            values[attr] = decode_summary(text.get(name))
        return cls(**values)  # type: ignore[arg-type]

    @property
    def favourite_category(self) -> str | None:
        return top(self.spend_by_category)

    @property
    def top_viewed_category(self) -> str | None:
        return top(self.views_by_category)

    @property
    def device(self) -> str | None:
        return top(self.clicks_by_device)

    def columns(self, as_of: datetime) -> dict[str, object]:
        """The :data:`ATTRIBUTE_COLUMNS` of this customer as of ``as_of``."""
        age = age_at(self.birth_year, as_of)
        return {
            "country": self.country,
            "region": self.region,
            "birth_year": self.birth_year,
            "age": age,
            "age_band": age_band(age),
            "gender": self.gender,
            "signup_channel": self.signup_channel,
            "loyalty_tier": self.loyalty_tier,
            "marketing_consent": self.marketing_consent,
            "favourite_category": self.favourite_category,
            "top_viewed_category": self.top_viewed_category,
            "device": self.device,
        }


#: A customer with no profile and no summary yet.
NO_ATTRIBUTES = Attributes()
