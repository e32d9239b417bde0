"""The customer profile event: demographics and account facts, one partial update per record.

A record on the profiles topic (``SEGSTREAM_PROFILES_TOPIC``), keyed by the customer id, says
what changed in a customer's profile at ``event_time``. Every attribute is optional and has
three states, which msgspec keeps apart with :data:`msgspec.UNSET`:

- **absent** (the key is not in the JSON object): no change, the field stays ``UNSET``;
- **null**: clear the attribute (the field is ``None``);
- **a value**: set it.

The worker merges updates per attribute, last write wins by event time (ties: the larger value;
``worker/core/attributes.py`` and docs/state.md), so arrival order does not matter.

Bounds, and why:

- ``country``: an ISO 3166-1 alpha-2 code that is officially assigned (:mod:`schemas.countries`,
  249 codes); anything else, including user-assigned codes such as ``XK``, is refused.
- ``birth_year``: 1900 to the current year minus 13. Nobody alive was born before 1900 (the
  oldest person ever documented lived 122 years), and 13 is the lowest age at which the EU's
  GDPR (art. 8) and the US COPPA let a child consent to an online account on their own: a
  younger age is a data-entry error or an account that should not be profiled. "Current year"
  is the year of the clock the event time is judged against (:func:`schemas.events.future_limit`
  minus the allowed skew), so the bound moves on by itself.
- ``gender``: free text, 1 to 32 characters. An enumeration would impose one taxonomy on every
  shop (self-described genders, "prefer not to say", local languages); segstream only stores and
  shows it, so the contract bounds its size and nothing else.
- ``region`` (1-64 characters, no ``=`` or ``,``, which export and summary encodings use as
  separators), ``signup_channel`` and ``loyalty_tier`` (1-32 characters each): free text.
- every text value is at most 64 bytes in UTF-8: the customer hash stays a compact listpack only
  while every value is (docs/state.md). A set value is never empty: clearing is ``null``.

This module does no I/O and imports neither Kafka nor Redis.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, ClassVar

import msgspec
from msgspec import UNSET, UnsetType

from schemas.countries import COUNTRY_CODES
from schemas.events import (
    _BOUNDS,
    _IDLE,
    MAX_FUTURE_SKEW_S,
    FieldProblem,
    Id,
    InputTime,
    _event_time_problem,
    _version_field,
    _version_problem,
)

__all__ = [
    "MAX_PROFILE_VALUE_BYTES",
    "MIN_BIRTH_YEAR",
    "MIN_SIGNUP_AGE",
    "PROFILE_ATTRIBUTES",
    "PROFILE_SCHEMA_VERSIONS",
    "CustomerProfile",
    "max_birth_year",
]

#: The versions of the profile event this code understands.
PROFILE_SCHEMA_VERSIONS: frozenset[int] = frozenset({1})
MIN_BIRTH_YEAR = 1900
#: Youngest age a profile may state (see the module docstring).
MIN_SIGNUP_AGE = 13
#: Longest text value in UTF-8 bytes: Redis keeps a hash compact while its values fit in this.
MAX_PROFILE_VALUE_BYTES = 64
#: The optional attributes, in the order of ``worker.core.attributes.PROFILE_FIELDS``.
PROFILE_ATTRIBUTES: tuple[str, ...] = (
    "country",
    "region",
    "birth_year",
    "gender",
    "signup_channel",
    "loyalty_tier",
    "marketing_consent",
)
_SKEW = timedelta(seconds=MAX_FUTURE_SKEW_S)
_TEXT_FIELDS = ("region", "gender", "signup_channel", "loyalty_tier")

_ABSENT_OR_NULL = "Absent: no change; null: clear the attribute; a value: set it."


def _text(max_chars: int, what: str, extra: dict[str, object] | None = None) -> msgspec.Meta:
    return msgspec.Meta(
        min_length=1,
        max_length=max_chars,
        description=f"{what} {_ABSENT_OR_NULL} At most {MAX_PROFILE_VALUE_BYTES} bytes in UTF-8.",
        extra_json_schema=extra or {},
    )


Country = Annotated[
    str,
    msgspec.Meta(
        description=(
            "ISO 3166-1 alpha-2 code, officially assigned (e.g. GB, IE, DE). " + _ABSENT_OR_NULL
        ),
        extra_json_schema={"enum": sorted(COUNTRY_CODES)},
    ),
]
Region = Annotated[
    str, _text(64, "Region or state, free text without '=' or ','.", {"pattern": "^[^=,]*$"})
]
BirthYear = Annotated[
    int,
    msgspec.Meta(
        description=(
            f"Year of birth, {MIN_BIRTH_YEAR} to the current year minus {MIN_SIGNUP_AGE} "
            "(checked by the decoder). " + _ABSENT_OR_NULL
        ),
        extra_json_schema={"minimum": MIN_BIRTH_YEAR},
    ),
]
Gender = Annotated[str, _text(32, "Gender as the customer states it.")]
SignupChannel = Annotated[str, _text(32, "Where the account was opened (web, app, store...).")]
LoyaltyTier = Annotated[str, _text(32, "Loyalty programme tier (e.g. gold).")]
Consent = Annotated[bool, msgspec.Meta(description="Opted in to marketing. " + _ABSENT_OR_NULL)]


def max_birth_year() -> int:
    """The latest birth year accepted right now (inside ``batch_clock``: the batch's clock)."""
    limit = (_BOUNDS.get() or _IDLE.get()).limit - _SKEW
    return limit.year - MIN_SIGNUP_AGE


class CustomerProfile(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A partial update of one customer's profile (absent: no change; null: clear).

    Attributes merge per field, last write wins by ``event_time`` (equal times: the larger value
    wins), so updates may arrive in any order. Country is an assigned ISO 3166-1 alpha-2 code;
    birth_year lies between 1900 and the current year minus 13.
    """

    kind: ClassVar[str] = "profile"

    event_id: Annotated[Id, msgspec.Meta(description="Unique per event; redelivery repeats it.")]
    schema_version: Annotated[int, _version_field(PROFILE_SCHEMA_VERSIONS)]
    customer_id: Id
    event_time: InputTime
    country: Country | UnsetType | None = UNSET
    region: Region | UnsetType | None = UNSET
    birth_year: BirthYear | UnsetType | None = UNSET
    gender: Gender | UnsetType | None = UNSET
    signup_channel: SignupChannel | UnsetType | None = UNSET
    loyalty_tier: LoyaltyTier | UnsetType | None = UNSET
    marketing_consent: Consent | UnsetType | None = UNSET

    def __post_init__(self) -> None:
        if self.schema_version not in PROFILE_SCHEMA_VERSIONS:
            raise _version_problem(self.schema_version, PROFILE_SCHEMA_VERSIONS)
        when = self.event_time  # as in OrderEvent
        bounds = _BOUNDS.get() or _IDLE.get()
        low_high = bounds.by_tz.get(when.tzinfo) or bounds.learn(when)
        if not low_high[0] <= when <= low_high[1]:
            raise _event_time_problem(when)
        country = self.country
        if isinstance(country, str) and country not in COUNTRY_CODES:
            shown = country if len(country) <= 20 else country[:19] + "…"
            raise FieldProblem("country", f"unknown country code {shown!r}")
        year = self.birth_year
        if isinstance(year, int):
            if isinstance(year, bool):  # built in code: True is an int to Python
                raise FieldProblem("birth_year", "must be an integer year, got a boolean")
            latest = max_birth_year()
            if not MIN_BIRTH_YEAR <= year <= latest:
                raise FieldProblem(
                    "birth_year", f"must be between {MIN_BIRTH_YEAR} and {latest}, got {year}"
                )
        for name in _TEXT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, str):
                _check_text(name, value)

    @property
    def event_time_ms(self) -> int:
        return int(self.event_time.timestamp() * 1000)

    def changes(self) -> dict[str, object]:
        """Attribute -> new value (``None`` = clear) for every attribute present in the record."""
        out: dict[str, object] = {}
        for name in PROFILE_ATTRIBUTES:
            value = getattr(self, name)
            if value is not UNSET:
                out[name] = value
        return out


def _check_text(name: str, value: str) -> None:
    """The checks of a text attribute msgspec's ``Meta`` does not make (or makes only when
    decoding): not empty, the byte bound, and no separator in ``region``."""
    if not value:
        raise FieldProblem(name, "must not be empty (null clears the attribute)")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_PROFILE_VALUE_BYTES:
        raise FieldProblem(name, f"is {size} bytes in UTF-8, more than {MAX_PROFILE_VALUE_BYTES}")
    if name == "region" and ("=" in value or "," in value):
        raise FieldProblem(name, "must not contain '=' or ','")
