"""The profile merge rule and the profile batch path, without Kafka or Redis.

The merge (:mod:`worker.profiles.merge`) is the oracle of ``profile.lua``; the integration tests
(tests/integration/test_profiles.py) check the script against it on a real Redis.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import CustomerProfile
from worker.core.attributes import (
    COMPACT_TIMES_LENGTH,
    FULL_TIMES_LENGTH,
    PROFILE_FIELDS,
    Attributes,
    decode_times,
    encode_time,
    encode_times,
)
from worker.core.rfm import CustomerState
from worker.profiles.batch import ProfileBatch, ProfileRecord, assemble
from worker.profiles.merge import Update, as_hash, from_hash, merge_all, update_of
from worker.profiles.store import build_args, split
from worker.reads import render_customer
from worker.state.keys import Keyspace

T0_MS = 1_740_830_400_000  # 2025-03-01T12:00Z
_ATTRS = {
    "country": st.sampled_from(["GB", "IE", "DE", ""]),
    "region": st.sampled_from(["North", "Zürich", "Ost", ""]),
    "birth_year": st.sampled_from(["1950", "1990", "2001", ""]),
    "loyalty_tier": st.sampled_from(["gold", "silver", ""]),
    "marketing_consent": st.sampled_from(["1", "0", ""]),
}
updates = st.builds(
    Update,
    # few distinct times, so that many updates tie and the value decides
    time_ms=st.integers(0, 3).map(lambda h: T0_MS + h * 3_600_000),
    values=st.fixed_dictionaries({}, optional=_ATTRS),
)


@settings(deadline=None, max_examples=100)
@given(st.lists(updates, max_size=12), st.randoms())
def test_any_order_of_the_same_updates_gives_the_same_profile(
    batch: list[Update], rng: object
) -> None:
    shuffled = list(batch)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    assert merge_all(shuffled) == merge_all(batch)


@settings(deadline=None, max_examples=100)
@given(st.lists(updates, max_size=8), st.lists(updates, max_size=8))
def test_merging_again_changes_nothing_and_batches_compose(
    first: list[Update], second: list[Update]
) -> None:
    once = merge_all([*first, *second])
    assert merge_all([*first, *second, *first]) == once  # a replay
    assert merge_all(second, merge_all(first)) == once  # applied in two batches
    assert from_hash(as_hash(once)) == once or not as_hash(once)


def test_the_later_update_wins_a_field_and_a_tie_goes_to_the_larger_value() -> None:
    got = merge_all(
        [
            Update(T0_MS + 10, {"country": "IE"}),
            Update(T0_MS, {"country": "GB", "loyalty_tier": "gold"}),
            Update(T0_MS, {"loyalty_tier": "silver"}),
        ]
    )
    assert got["country"] == (T0_MS + 10, "IE")
    assert got["loyalty_tier"] == (T0_MS, "silver")  # "silver" > "gold"


def test_a_clear_wins_by_time_and_loses_a_tie_to_any_value() -> None:
    cleared = merge_all([Update(T0_MS, {"region": "North"}), Update(T0_MS + 1, {"region": ""})])
    assert cleared["region"] == (T0_MS + 1, "")
    assert "pr" not in as_hash(cleared) and as_hash(cleared)["pt"]
    tie = merge_all([Update(T0_MS, {"region": ""}), Update(T0_MS, {"region": "North"})])
    assert tie["region"] == (T0_MS, "North")


def test_the_stored_hash_is_what_the_attributes_contract_reads() -> None:
    stored = merge_all(
        [
            Update(T0_MS, {"country": "GB", "birth_year": "1980", "marketing_consent": "0"}),
            Update(T0_MS + 5, {"loyalty_tier": "gold", "region": ""}),
        ]
    )
    fields = as_hash(stored)
    assert set(fields) == {"pc", "pb", "pm", "pl", "pt"} and len(fields["pt"]) == 56
    attrs = Attributes.from_fields(fields)
    assert (attrs.country, attrs.birth_year, attrs.marketing_consent) == ("GB", 1980, False)
    assert attrs.loyalty_tier == "gold" and attrs.region is None
    times = decode_times(fields["pt"])
    assert times["country"] == T0_MS and times["region"] == T0_MS + 5 and times["gender"] is None
    assert all(len(v.encode()) <= 64 for v in fields.values())  # the hash stays a listpack


def _profile(cid: str, **fields: object) -> CustomerProfile:
    when = datetime(2025, 3, 1, 12, tzinfo=UTC)
    return CustomerProfile(event_id=f"e-{cid}", schema_version=1, customer_id=cid,
                           event_time=when, **fields)  # type: ignore[arg-type]  # fmt: skip


def test_a_profile_event_becomes_its_update() -> None:
    p = _profile("C1", country="GB", region=None, birth_year=1970, marketing_consent=True)
    assert update_of(p) == Update(
        T0_MS, {"country": "GB", "region": "", "birth_year": "1970", "marketing_consent": "1"}
    )


def test_script_arguments_encode_absent_clear_and_set() -> None:
    p = _profile("C1", country="GB", region=None)
    batch = ProfileBatch([ProfileRecord("profiles", 2, 41, p)], [("profiles", 2, 40)],
                         {("profiles", 2): 41})  # fmt: skip
    assert build_args(batch, "ss") == [
        "ss", 1, "profiles", 2, 41,
        1, 1, 40,
        1, "C1", 1, 41, T0_MS, "=GB", "-", "", "", "", "", "",
    ]  # fmt: skip


def test_a_cluster_batch_is_one_part_per_space_with_the_accounting_in_the_first() -> None:
    space = Keyspace("ss", cluster=True, shards=4)
    cids = [f"C{i}" for i in range(12)]
    records = [ProfileRecord("p", 0, i, _profile(c)) for i, c in enumerate(cids)]
    batch = ProfileBatch(records, [("p", 0, 12)], {("p", 0): 12})
    parts = split(batch, space)
    assert [s for s, _ in parts] == sorted({space.space_of(c) for c in cids} | {space.spaces[0]})
    first = dict(parts)[space.spaces[0]]
    assert first.dead == [("p", 0, 12)] and first.high == {("p", 0): 12}
    for s, part in parts:
        assert all(space.space_of(r.profile.customer_id) == s for r in part.records)
        if s != space.spaces[0]:
            assert part.dead == () and part.high == {("p", 0): max(r.offset for r in part.records)}
    routed = ProfileBatch((), [("p", 0, 5)], {("p", 0): 5}, route="C7")
    assert split(routed, space) == [(space.space_of("C7"), routed)]


@dataclass
class _Raw:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def test_assembly_keeps_the_good_records_and_rejects_each_bad_one_with_its_reason() -> None:
    good = json.dumps({"event_id": "e", "schema_version": 1, "customer_id": "C1",
                       "event_time": "2025-03-01T12:00:00Z", "country": "GB"}).encode()  # fmt: skip
    bad_country = good.replace(b'"GB"', b'"XX"')
    fetched = [
        [_Raw("profiles", 0, 5, b"C1", good), _Raw("profiles", 0, 6, b"C1", None)],
        [_Raw("profiles", 1, 9, b"C1", bad_country), _Raw("profiles", 1, 10, b"C1", b"\xff")],
    ]
    batch, rejected = assemble(fetched)
    assert [(r.partition, r.offset) for r in batch.records] == [(0, 5)]
    assert batch.high == {("profiles", 0): 6, ("profiles", 1): 10}
    assert batch.dead == [("profiles", 0, 6), ("profiles", 1, 9), ("profiles", 1, 10)]
    assert [str(r.error) for r in rejected] == [
        "$: empty record: the value is null",
        "$.country: unknown country code 'XX'",
        "$: not UTF-8: invalid byte at position 0",
    ]
    assert rejected[1].value == bad_country and rejected[1].key == b"C1"


def test_one_item_batches_follow_offset_order_and_each_fences_itself() -> None:
    p = _profile("C1")
    batch = ProfileBatch(
        [ProfileRecord("t", 0, 3, p), ProfileRecord("t", 0, 1, p)], [("t", 0, 2)], {("t", 0): 3}
    )
    items = batch.items()
    assert [(b.high, len(b.records), len(b.dead)) for b in items] == [
        ({("t", 0): 1}, 1, 0),
        ({("t", 0): 2}, 0, 1),
        ({("t", 0): 3}, 1, 0),
    ]


def test_the_customer_command_shows_the_profile_with_age_and_band() -> None:
    fields = as_hash(merge_all([Update(T0_MS, {"country": "GB", "birth_year": "1990",
                                               "loyalty_tier": "gold"})]))  # fmt: skip
    raw = {k.encode(): v.encode() for k, v in {**fields, "f": "2", "m": "5000"}.items()}
    state = CustomerState.from_hash("C1", raw)
    text = render_customer(state, datetime(2025, 9, 1, tzinfo=UTC), as_json=False)
    lines = dict(line.split(None, 1) for line in text.splitlines() if len(line.split(None, 1)) == 2)
    assert lines["country"] == "GB" and lines["birth_year"] == "1990"
    assert lines["age"] == "35" and lines["age_band"] == "35-44"
    assert lines["loyalty_tier"] == "gold" and lines["gender"] == "-"
    as_json = json.loads(render_customer(state, datetime(2025, 1, 1, tzinfo=UTC), as_json=True))
    assert as_json["age"] == 34 and as_json["age_band"] == "25-34"
    assert as_json["marketing_consent"] is None


def test_time_encoding_holds_event_times_for_decades() -> None:
    far = int((datetime(2055, 1, 1, tzinfo=UTC) - timedelta(0)).timestamp() * 1000)
    stored = merge_all([Update(far, {"country": "GB"})])
    assert decode_times(as_hash(stored)["pt"])["country"] == far


times_of = st.fixed_dictionaries(
    {},
    optional=dict.fromkeys(PROFILE_FIELDS, st.sampled_from([T0_MS, T0_MS + 1, 2**40, 0])),
)


@settings(deadline=None, max_examples=200)
@given(times_of)
def test_pt_is_compact_exactly_when_every_written_attribute_has_one_time_and_reads_back(
    times: dict[str, int],
) -> None:
    pt = encode_times(times)
    written = {ms for ms in times.values() if ms}
    if not written:
        assert pt == ""
    else:
        assert len(pt) == (COMPACT_TIMES_LENGTH if len(written) == 1 else FULL_TIMES_LENGTH)
    assert decode_times(pt) == {name: times.get(name) or None for name in PROFILE_FIELDS}


def test_a_profile_written_by_one_event_keeps_one_time_and_the_mask_of_its_attributes() -> None:
    fields = as_hash(merge_all([Update(T0_MS, {"country": "GB", "birth_year": "1980"})]))
    assert fields["pt"] == encode_time(T0_MS) + "05"  # country = bit 0, birth_year = bit 2
    seven = dict.fromkeys(PROFILE_FIELDS, "1") | {"signup_channel": ""}
    every = as_hash(merge_all([Update(T0_MS, seven)]))
    assert every["pt"] == encode_time(T0_MS) + "7f"  # a clear is written at its time too
    times = decode_times(fields["pt"])
    assert times["country"] == times["birth_year"] == T0_MS
    assert {name for name, ms in times.items() if ms is None} == set(PROFILE_FIELDS) - {
        "country",
        "birth_year",
    }


def test_the_full_form_of_equal_times_reads_as_the_compact_one() -> None:
    """A profile stored before the compact form (7 x 8 digits) means the same profile."""
    old = encode_time(T0_MS) * 3 + "00000000" * 4
    assert decode_times(old) == decode_times(encode_time(T0_MS) + "07")


def test_pt_goes_compact_to_full_and_back_to_compact_as_events_decide_attributes() -> None:
    first = Update(T0_MS, {"country": "GB", "region": "North", "loyalty_tier": "gold"})
    some_later = Update(T0_MS + 60_000, {"loyalty_tier": "silver"})
    older = Update(T0_MS - 60_000, {"country": "IE", "gender": "female"})
    every_later = Update(T0_MS + 120_000, dict.fromkeys(PROFILE_FIELDS, "1"))
    steps = [first, some_later, older, every_later]
    forms = []
    for n in range(1, len(steps) + 1):
        fields = as_hash(merge_all(steps[:n]))
        assert from_hash(fields) == merge_all(steps[:n])
        forms.append(fields["pt"] if len(fields["pt"]) == COMPACT_TIMES_LENGTH else "full")
    assert forms == [
        encode_time(T0_MS) + "23",  # country, region, loyalty_tier (bits 0, 1, 5) at T0
        "full",  # the tier decided later than the rest
        "full",  # the country stays (older loses), gender is new at a third time
        encode_time(T0_MS + 120_000) + "7f",  # one later event decides all seven
    ]
    # Back to compact also when a later event decides exactly the attributes written so far.
    same_ones = Update(T0_MS + 90_000, {"country": "DE", "region": "", "loyalty_tier": "gold"})
    fields = as_hash(merge_all([first, some_later, same_ones]))
    assert fields["pt"] == encode_time(T0_MS + 90_000) + "23" and "pr" not in fields
