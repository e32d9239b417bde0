"""The customer profile contract: good and bad values, absent vs null, and no bytes break it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec import UNSET

from schemas import CustomerProfile, SchemaError, decode, decode_many, encode
from schemas.countries import COUNTRY_CODES, COUNTRY_NAMES
from schemas.profile import MIN_BIRTH_YEAR, PROFILE_ATTRIBUTES, max_birth_year

BASE: dict[str, Any] = {
    "event_id": "p1",
    "schema_version": 1,
    "customer_id": "C42",
    "event_time": "2025-03-01T12:00:00Z",
}


def profile(**fields: Any) -> CustomerProfile:
    return decode(CustomerProfile, json.dumps({**BASE, **fields}).encode())


def refusal(**fields: Any) -> str:
    with pytest.raises(SchemaError) as caught:
        profile(**fields)
    return str(caught.value)


def test_a_full_profile_decodes_with_every_attribute() -> None:
    p = profile(country="IE", region="Leinster", birth_year=1985, gender="female",
                signup_channel="app", loyalty_tier="gold", marketing_consent=True)  # fmt: skip
    assert (p.country, p.region, p.birth_year, p.gender) == ("IE", "Leinster", 1985, "female")
    assert (p.signup_channel, p.loyalty_tier, p.marketing_consent) == ("app", "gold", True)
    assert p.kind == "profile"
    assert p.event_time_ms == int(datetime(2025, 3, 1, 12, tzinfo=UTC).timestamp() * 1000)


def test_absent_attributes_stay_unset_and_null_ones_are_none() -> None:
    p = profile(country=None, birth_year=1970)
    assert p.country is None
    assert p.region is UNSET and p.marketing_consent is UNSET
    assert p.changes() == {"country": None, "birth_year": 1970}


def test_encoding_keeps_absent_apart_from_null() -> None:
    p = profile(region=None, loyalty_tier="silver")
    sent = json.loads(encode(p))
    assert sent["region"] is None and sent["loyalty_tier"] == "silver"
    assert "country" not in sent and "marketing_consent" not in sent
    assert decode(CustomerProfile, encode(p)) == p


def test_a_profile_with_no_attribute_is_valid_and_changes_nothing() -> None:
    assert profile().changes() == {}


def test_the_country_list_is_the_assigned_iso_codes() -> None:
    assert len(COUNTRY_CODES) == 249
    assert {"GB", "IE", "DE", "US", "ZA", "HK", "AE"} <= COUNTRY_CODES
    assert not {"UK", "EU", "XK", "XX", "ZZ", "AA"} & COUNTRY_CODES
    assert all(len(code) == 2 and code.isupper() for code in COUNTRY_NAMES)


@pytest.mark.parametrize("code", ["XX", "UK", "EU", "gb", "G"])
def test_an_unknown_country_code_is_refused_by_name(code: str) -> None:
    assert refusal(country=code) == f"$.country: unknown country code '{code}'"


def test_a_country_code_built_in_code_is_checked_too() -> None:
    with pytest.raises(ValueError, match="unknown country code 'XK'"):
        CustomerProfile(event_id="e", schema_version=1, customer_id="C",
                        event_time=datetime(2025, 1, 1, tzinfo=UTC), country="XK")  # fmt: skip


def test_birth_year_bounds_are_1900_and_thirteen_years_ago() -> None:
    latest = max_birth_year()
    assert latest == datetime.now(UTC).year - 13
    assert profile(birth_year=MIN_BIRTH_YEAR).birth_year == MIN_BIRTH_YEAR
    assert profile(birth_year=latest).birth_year == latest
    expected = f"must be between {MIN_BIRTH_YEAR} and {latest}"
    assert refusal(birth_year=1899) == f"$.birth_year: {expected}, got 1899"
    assert refusal(birth_year=latest + 1) == f"$.birth_year: {expected}, got {latest + 1}"
    assert refusal(birth_year="1980").startswith("$.birth_year: wrong type")
    assert refusal(birth_year=1980.5).startswith("$.birth_year: wrong type")


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"region": "North, East"}, "$.region: must not contain '=' or ','"),
        ({"region": "a=b"}, "$.region: must not contain '=' or ','"),
        ({"region": "x" * 65}, "$.region: invalid value: expected str of length <= 64"),
        ({"region": "é" * 33}, "$.region: is 66 bytes in UTF-8, more than 64"),
        ({"gender": ""}, "$.gender: invalid value: expected str of length >= 1"),
        ({"gender": "g" * 33}, "$.gender: invalid value: expected str of length <= 32"),
        ({"gender": "性" * 22}, "$.gender: is 66 bytes in UTF-8, more than 64"),
        ({"signup_channel": "c" * 33}, "$.signup_channel: invalid value: expected str of"),
        ({"loyalty_tier": 3}, "$.loyalty_tier: wrong type: expected str | null, got int"),
        ({"marketing_consent": "yes"}, "$.marketing_consent: wrong type: expected bool | null"),
        ({"schema_version": 2}, "$.schema_version: unknown schema_version 2 (supported: 1)"),
        ({"event_time": "2025-03-01T12:00:00"}, "$.event_time: must carry a UTC offset"),
        ({"event_time": "1990-01-01T00:00:00Z"}, "$.event_time: 1990-01-01T00:00:00+00:00 is"),
        ({"customer_id": ""}, "$.customer_id: invalid value: expected str of length >= 1"),
    ],
)  # fmt: skip
def test_bad_values_are_refused_with_the_field_and_the_reason(
    fields: dict[str, Any], reason: str
) -> None:
    assert refusal(**fields).startswith(reason)


def test_far_future_event_times_are_refused() -> None:
    when = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    assert "in the future" in refusal(event_time=when)


def test_missing_required_fields_are_named() -> None:
    data = {k: v for k, v in BASE.items() if k != "customer_id"}
    with pytest.raises(SchemaError, match=r"^\$\.customer_id: missing required field$"):
        decode(CustomerProfile, json.dumps(data).encode())


def test_a_batch_keeps_good_profiles_and_names_each_bad_one() -> None:
    good = json.dumps({**BASE, "country": "FR"}).encode()
    records = [good, b"{", json.dumps({**BASE, "country": "QQ"}).encode(), good]
    valid, rejected = decode_many(CustomerProfile, records)
    assert [i for i, _ in valid] == [0, 3]
    assert [(i, str(e)) for i, e in rejected] == [
        (1, "$: not JSON: input data was truncated"),
        (2, "$.country: unknown country code 'QQ'"),
    ]


def test_attributes_follow_the_storage_contract_order() -> None:
    from worker.core.attributes import PROFILE_FIELDS

    assert tuple(PROFILE_FIELDS) == PROFILE_ATTRIBUTES


# -- properties ----------------------------------------------------------------------------------
_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="=,"), min_size=1,
                max_size=16)  # fmt: skip
_ATTRIBUTE_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "country": st.sampled_from(sorted(COUNTRY_CODES)),
    "region": _TEXT,
    "birth_year": st.integers(MIN_BIRTH_YEAR, max_birth_year()),
    "gender": _TEXT,
    "signup_channel": _TEXT,
    "loyalty_tier": _TEXT,
    "marketing_consent": st.booleans(),
}
_MAYBE = st.fixed_dictionaries(
    {},
    optional={name: st.none() | values for name, values in _ATTRIBUTE_VALUES.items()},
)


@settings(deadline=None, max_examples=100)
@given(_MAYBE)
def test_any_valid_profile_round_trips_with_absent_and_null_kept(fields: dict[str, Any]) -> None:
    p = profile(**fields)
    assert p.changes() == fields
    assert decode(CustomerProfile, encode(p)) == p
    assert msgspec.json.decode(encode(p)).keys() - BASE.keys() == fields.keys()


@settings(deadline=None, max_examples=100)
@given(st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_no_bytes_at_all_make_the_profile_decoder_raise(data: bytes) -> None:
    valid, rejected = decode_many(CustomerProfile, [data])
    assert len(valid) + len(rejected) == 1
    for _, error in rejected:
        assert str(error).startswith("$")
