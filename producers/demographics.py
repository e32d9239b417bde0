"""Synthetic customer profiles that go with the personas: who the customers are, not what they do.

Each persona gets demographics that plausibly go with its behaviour, so that a model or a report
using profile fields finds them correlated with the segments (and ground truth to check it):
champions and big spenders are older and mostly gold or silver in the loyalty programme,
bargain hunters opt in to marketing (they want the deals), new customers and window shoppers
are younger, mostly without a tier, and sign up in the app, churned customers mostly withdrew
their consent. The figures are invented, chosen for contrast, not taken from any survey.

:func:`profiles` gives one :class:`schemas.CustomerProfile` per customer, stamped with their
first event (their first appearance in the stream), and for some customers a later update (a
new loyalty tier, a consent change), all in event-time order. The draws come from a random
stream of their own (seeded from the config's seed), so adding profiles does not change a
single order or click of a seeded run.

No I/O.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from producers.synthetic import SyntheticData
from schemas import ClickEvent, CustomerProfile, OrderEvent
from schemas.profile import MIN_BIRTH_YEAR

__all__ = ["DEMOGRAPHICS", "Demographics", "merged", "profiles"]

#: Mixed into the config's seed: the profiles' own random stream.
_STREAM = 0x70726F66  # "prof"
COUNTRIES = ("GB", "DE", "FR", "IE", "NL", "ES", "IT", "US")
COUNTRY_WEIGHTS = (40, 15, 12, 8, 7, 6, 6, 6)
GENDERS = ("female", "male", "non-binary", "")  # "" = not given
GENDER_WEIGHTS = (48, 47, 2, 3)
TIERS = ("gold", "silver", "bronze", "")  # "" = not in the programme
CHANNELS = ("web", "app", "store")
#: Share of customers whose profile changes once later (a new tier or a consent change).
UPDATE_SHARE = 0.15


@dataclass(frozen=True)
class Demographics:
    """How one persona's customers look: age (years, normal), tier and channel weights over
    :data:`TIERS` and :data:`CHANNELS`, and the probability of a marketing opt-in."""

    age_mean: float
    age_sd: float
    tiers: tuple[float, float, float, float]
    channels: tuple[float, float, float]
    consent: float


DEMOGRAPHICS: dict[str, Demographics] = {
    "champions": Demographics(46, 10, (60, 30, 10, 0), (40, 50, 10), 0.8),
    "loyal_regulars": Demographics(42, 11, (20, 50, 30, 0), (45, 45, 10), 0.7),
    "big_spenders": Demographics(52, 9, (50, 30, 10, 10), (55, 15, 30), 0.5),
    "bargain_hunters": Demographics(34, 9, (0, 30, 60, 10), (40, 55, 5), 0.9),
    "new_customers": Demographics(29, 7, (0, 0, 80, 20), (30, 65, 5), 0.6),
    "at_risk": Demographics(40, 11, (5, 40, 50, 5), (55, 30, 15), 0.4),
    "churned": Demographics(38, 12, (0, 5, 65, 30), (60, 25, 15), 0.2),
    "window_shoppers": Demographics(25, 6, (0, 0, 20, 80), (30, 65, 5), 0.3),
}
#: For personas not listed above (a custom population).
DEFAULT = Demographics(40, 12, (10, 30, 40, 20), (45, 45, 10), 0.5)


def _pick(rng: np.random.Generator, values: tuple[str, ...], weights: tuple[float, ...]) -> str:
    p = np.asarray(weights, float)
    return str(values[int(rng.choice(len(values), p=p / p.sum()))])


def profiles(data: SyntheticData) -> list[CustomerProfile]:
    """Every customer's profile at first appearance, plus the occasional update, by time."""
    config = data.config
    rng = np.random.default_rng([config.seed, _STREAM])
    n = len(data.customer_ids)
    never = np.iinfo(np.int64).max
    first = np.full(n, never, np.int64)
    np.minimum.at(first, data.o_customer, data.o_time)
    np.minimum.at(first, data.c_customer, data.c_time)
    year = config.start.astimezone(UTC).year
    out: list[tuple[int, int, CustomerProfile]] = []
    tag = config.tag
    for i, (cid, persona) in enumerate(zip(data.customer_ids, data.personas, strict=True)):
        d = DEMOGRAPHICS.get(persona, DEFAULT)
        age = int(np.clip(round(rng.normal(d.age_mean, d.age_sd)), 18, 90))
        country = _pick(rng, COUNTRIES, COUNTRY_WEIGHTS)
        gender = _pick(rng, GENDERS, GENDER_WEIGHTS)
        tier = _pick(rng, TIERS, d.tiers)
        channel = _pick(rng, CHANNELS, d.channels)
        consent = bool(rng.random() < d.consent)
        updates = bool(rng.random() < UPDATE_SHARE)
        later = float(rng.random())
        if first[i] == never:
            continue  # never appears in the stream
        at = int(first[i])
        fields: dict[str, object] = {
            "country": country,
            "birth_year": max(MIN_BIRTH_YEAR, year - age),
            "signup_channel": channel,
            "marketing_consent": consent,
        }
        if gender:
            fields["gender"] = gender
        if tier:
            fields["loyalty_tier"] = tier
        out.append((at, 0, _profile(f"{tag}-p{i}", cid, at, fields)))
        if updates and config.end_ms - 1 > at:
            when = at + 1 + int(later * (config.end_ms - 2 - at))
            change: dict[str, object] = (
                {"marketing_consent": not consent}
                if persona in ("churned", "at_risk") or not tier
                else {"loyalty_tier": TIERS[max(0, TIERS.index(tier) - 1)]}
            )
            out.append((when, 1, _profile(f"{tag}-u{i}", cid, when, change)))
    out.sort(key=lambda item: (item[0], item[1], item[2].customer_id))
    return [p for _, _, p in out]


def _profile(eid: str, cid: str, ms: int, fields: dict[str, object]) -> CustomerProfile:
    when = datetime.fromtimestamp(ms / 1000, UTC)
    return CustomerProfile(event_id=eid, schema_version=1, customer_id=cid, event_time=when,
                           **fields)  # type: ignore[arg-type]  # fmt: skip


def merged(
    data: SyntheticData, people: list[CustomerProfile]
) -> Iterator[OrderEvent | ClickEvent | CustomerProfile]:
    """The synthetic events and the profiles in one event-time order (a profile before the
    event it was stamped with: the customer's first appearance)."""
    events: Iterator[tuple[int, int, OrderEvent | ClickEvent | CustomerProfile]]
    events = ((e.event_time_ms, 1, e) for e in data.events())
    stamped = ((p.event_time_ms, 0, p) for p in people)
    for _, _, event in heapq.merge(stamped, events, key=lambda item: (item[0], item[1])):
        yield event
