"""Customer profiles end to end: the profiles consumer against the real broker and Redis.

The consumer (:class:`worker.profiles.service.ProfileService`) runs in the test's own event
loop, as the worker runs it, on the session's single Redis and on its Redis Cluster. Shuffled
updates converge to what the Python merge rule computes; a redelivery (same offsets, a new
consumer group) and a replay (same events, new offsets) change nothing; bad records are
dead-lettered with their reason while the good ones of the same batch apply; a record Redis
refuses is dead-lettered alone; forgetting a customer removes their profile and keeps their
older updates out; the decisive times are stored compact while one time decides every written
attribute, in full otherwise, exactly as the Python rule spells them.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from schemas import CustomerProfile, LineItem, OrderEvent, encode
from segstream.settings import Settings
from tests.support.kafka_reads import read_dead_letters
from tests.support.modes import MODES, on_redis
from tests.support.producing import produce
from worker.connect import keyspace, sync_redis
from worker.core import Batch, Record
from worker.core.attributes import (
    COMPACT_TIMES_LENGTH,
    FULL_TIMES_LENGTH,
    NEVER_WRITTEN,
    PROFILE_FIELDS,
    PROFILE_TIMES_FIELD,
    encode_time,
)
from worker.erase.store import ForgetStore
from worker.profiles.batch import ProfileBatch, ProfileRecord
from worker.profiles.merge import as_hash, merge_all, update_of
from worker.profiles.service import ProfileService
from worker.profiles.store import ProfileStore
from worker.state import StateStore

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
COUNTRIES = ("GB", "IE", "DE", "FR", None)
TIERS = ("bronze", "silver", "gold", None)


@pytest.fixture(autouse=True)
def _remove_keys_afterwards(redis_client: object) -> None:
    """``redis_client`` deletes every key under this test's prefix when the test ends."""


@pytest.fixture(params=MODES)
def profile_settings(
    request: pytest.FixtureRequest, settings: Settings, make_topic: Callable[..., str]
) -> Settings:
    """This test's settings with a profiles topic of its own, on a single Redis and a cluster."""
    s = settings.with_(profiles_topic=make_topic("profiles-3p", partitions=3), poison_retries=2)
    return on_redis(request, s)


# -- helpers -------------------------------------------------------------------------------------
def random_updates(rng: random.Random, customers: int, per_customer: int) -> list[CustomerProfile]:
    """Updates over a few instants only, so many of them tie on event time."""
    out = []
    for c in range(customers):
        for u in range(per_customer):
            values: dict[str, Any] = {}
            if rng.random() < 0.6:
                values["country"] = rng.choice(COUNTRIES)
            if rng.random() < 0.4:
                values["region"] = rng.choice(("North", "South", "Zürich", None))
            if rng.random() < 0.4:
                values["birth_year"] = rng.choice((1950, 1977, 1990, 2001, None))
            if rng.random() < 0.3:
                values["gender"] = rng.choice(("female", "male", "non-binary", None))
            if rng.random() < 0.3:
                values["signup_channel"] = rng.choice(("web", "app", "store", None))
            if rng.random() < 0.5:
                values["loyalty_tier"] = rng.choice(TIERS)
            if rng.random() < 0.5:
                values["marketing_consent"] = rng.choice((True, False, None))
            out.append(
                CustomerProfile(
                    event_id=f"p-{c}-{u}",
                    schema_version=1,
                    customer_id=f"C{c:03d}",
                    event_time=T0 + timedelta(hours=rng.randrange(4)),
                    **values,
                )
            )
    return out


def records(
    settings: Settings, updates: Sequence[CustomerProfile]
) -> list[tuple[str, bytes, bytes]]:
    topic = settings.kafka.profiles_topic
    return [(topic, p.customer_id.encode(), encode(p)) for p in updates]


def expected(updates: Sequence[CustomerProfile]) -> dict[str, dict[str, str]]:
    by_customer: dict[str, list[CustomerProfile]] = {}
    for p in updates:
        by_customer.setdefault(p.customer_id, []).append(p)
    return {cid: as_hash(merge_all(update_of(p) for p in ps)) for cid, ps in by_customer.items()}


PROFILE_HASH_FIELDS = [*PROFILE_FIELDS.values(), PROFILE_TIMES_FIELD]


def stored(settings: Settings, customer_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    space = keyspace(settings.redis, settings.redis.prefix)
    with sync_redis(settings.redis, decode_responses=True) as r:
        out = {}
        for cid in customer_ids:
            got = r.hmget(space.customer(cid), PROFILE_HASH_FIELDS)
            out[cid] = {f: v for f, v in zip(PROFILE_HASH_FIELDS, got, strict=True) if v}
        return out


def counters(settings: Settings) -> dict[str, int]:
    async def read() -> dict[str, int]:
        store = ProfileStore(settings.redis, settings.redis.prefix)
        try:
            return await store.counters()
        finally:
            await store.close()

    return asyncio.run(read())


async def until(check: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


def consume(
    settings: Settings, done: Callable[[ProfileService], bool], what: str
) -> ProfileService:
    """Run a profiles consumer until ``done(service)``; returns it, stopped."""

    async def run() -> ProfileService:
        service = ProfileService(settings)
        await service.start()
        try:
            await until(lambda: done(service), 90, what)
        finally:
            await service.stop()
        return service

    return asyncio.run(run())


# -- tests ---------------------------------------------------------------------------------------
def test_shuffled_updates_converge_and_neither_redelivery_nor_replay_changes_them(
    profile_settings: Settings,
) -> None:
    s = profile_settings
    updates = random_updates(random.Random(7), customers=25, per_customer=8)
    shuffled = list(updates)
    random.Random(11).shuffle(shuffled)
    produce(s.kafka.bootstrap, records(s, shuffled))
    n = len(updates)
    consume(s, lambda svc: svc.metrics.applied >= n, "every update applied")
    want = expected(updates)
    assert stored(s, sorted(want)) == want
    first = counters(s)
    assert first["profiles_applied"] == n and first["profiles_received"] == n
    assert 0 < first["profiles_changed"] < n  # some updates lost to later or larger ones

    # Redelivery: the same records at the same offsets, read again by a new consumer group.
    again = s.with_(group_id=f"{s.kafka.group_id}-again")
    svc = consume(again, lambda svc: svc.metrics.fenced >= n, "every record fenced")
    assert svc.metrics.applied == 0
    assert stored(s, sorted(want)) == want

    # Replay: the same events, in another order, at new offsets: merged again, nothing changes.
    random.Random(12).shuffle(shuffled)
    produce(s.kafka.bootstrap, records(s, shuffled))
    svc = consume(s, lambda svc: svc.metrics.applied >= n, "the replay merged")
    assert svc.metrics.changed == 0
    assert stored(s, sorted(want)) == want
    last = counters(s)
    assert (
        last["profiles_applied"] == 2 * n and last["profiles_changed"] == first["profiles_changed"]
    )
    assert last["profiles_fenced"] == n


def test_bad_records_are_dead_lettered_with_their_reason_and_good_ones_apply(
    profile_settings: Settings,
) -> None:
    s = profile_settings
    topic = s.kafka.profiles_topic
    good = [
        CustomerProfile(event_id="g1", schema_version=1, customer_id="G1", event_time=T0,
                        country="GB", birth_year=1980),
        CustomerProfile(event_id="g2", schema_version=1, customer_id="G2", event_time=T0,
                        loyalty_tier="gold", marketing_consent=False),
    ]  # fmt: skip
    base = {"event_id": "b", "schema_version": 1, "customer_id": "B1",
            "event_time": "2025-03-01T12:00:00Z"}  # fmt: skip
    bad = {
        b"{not json": "$: not JSON",
        msgspec.json.encode({**base, "country": "XX"}): "$.country: unknown country code 'XX'",
        msgspec.json.encode({**base, "birth_year": 1850}): "$.birth_year: must be between 1900",
        msgspec.json.encode({**base, "birth_year": datetime.now(UTC).year}): (
            "$.birth_year: must be between 1900"
        ),
        msgspec.json.encode({**base, "schema_version": 9}): (
            "$.schema_version: unknown schema_version 9 (supported: 1)"
        ),
    }
    items = [(topic, b"G1", encode(good[0])), *[(topic, b"B1", v) for v in bad]]
    items.append((topic, b"G2", encode(good[1])))
    produce(s.kafka.bootstrap, items)
    consume(s, lambda svc: svc.metrics.applied + svc.metrics.dead_lettered >= len(items), "all")

    letters = read_dead_letters(s, at_least=len(bad))
    assert len(letters) == len(bad)
    by_original = {letter.letter.original: letter.letter for letter in letters}
    for value, reason in bad.items():
        assert by_original[value].error.startswith(reason), by_original[value].error
        assert by_original[value].source_topic == topic
    assert stored(s, ["G1", "G2", "B1"]) == expected(good) | {"B1": {}}
    c = counters(s)
    assert c["profiles_dead_lettered"] == len(bad) and c["profiles_applied"] == 2
    assert c["profiles_received"] == len(items)


def test_a_record_redis_refuses_is_dead_lettered_alone(profile_settings: Settings) -> None:
    s = profile_settings
    space = keyspace(s.redis, s.redis.prefix)
    with sync_redis(s.redis) as r:
        r.set(space.customer("BROKEN"), "not a hash")  # every call touching it fails
    updates = [
        CustomerProfile(event_id=f"u{i}", schema_version=1, customer_id=cid, event_time=T0,
                        gender="female")
        for i, cid in enumerate(["OK1", "BROKEN", "OK2"])
    ]  # fmt: skip
    produce(s.kafka.bootstrap, records(s, updates))
    svc = consume(
        s, lambda svc: svc.metrics.dead_lettered >= 1 and svc.metrics.applied >= 2, "the batch"
    )
    assert svc.metrics.isolated_batches >= 1
    letters = read_dead_letters(s, at_least=1)
    assert len(letters) == 1
    assert "the state store refused this record" in letters[0].letter.error
    assert letters[0].letter.original == encode(updates[1])
    got = stored(s, ["OK1", "OK2"])
    assert got["OK1"]["pg"] == "female" and got["OK2"]["pg"] == "female"
    assert counters(s)["profiles_dead_lettered"] == 1


def test_a_changed_profile_marks_a_known_customer_for_scoring_and_forget_removes_it(
    profile_settings: Settings,
) -> None:
    s = profile_settings
    space = keyspace(s.redis, s.redis.prefix)
    # "BUYER" has behaviour state (one order); "NEWBIE" is known by their profile alone.
    item = LineItem(sku="S", quantity=1, unit_price=10.0)
    order = OrderEvent(event_id="o1", schema_version=1, customer_id="BUYER", order_id="O1",
                       event_time=T0, status="placed", items=[item], total=10.0)  # fmt: skip

    async def seed() -> None:
        store = StateStore(s.redis, s.redis.prefix)
        try:
            await store.apply(Batch([Record(s.kafka.orders_topic, 0, 0, order)]))
        finally:
            await store.close()

    asyncio.run(seed())
    with sync_redis(s.redis) as r:
        r.hdel(f"{space.space_of('BUYER')}:unscored", "BUYER")  # as if scored
    profile = [
        CustomerProfile(event_id="p1", schema_version=1, customer_id=cid, event_time=T0,
                        country="DE", birth_year=1990)
        for cid in ("BUYER", "NEWBIE")
    ]  # fmt: skip
    produce(s.kafka.bootstrap, records(s, profile))
    consume(s, lambda svc: svc.metrics.applied >= 2, "both profiles applied")
    with sync_redis(s.redis, decode_responses=True) as r:
        assert r.hget(f"{space.space_of('BUYER')}:unscored", "BUYER") is not None
        assert r.hget(f"{space.space_of('NEWBIE')}:unscored", "NEWBIE") is None
        assert r.hget(space.customer("BUYER"), "pc") == "DE"
        assert r.hget(space.customer("BUYER"), "f") == "1"  # the order state is untouched

    async def forget() -> None:
        store = ForgetStore(s.redis, s.redis.prefix, 1.0)
        try:
            await store.forget("BUYER")
        finally:
            await store.close()

    asyncio.run(forget())
    assert stored(s, ["BUYER"]) == {"BUYER": {}}
    # An update stamped before the erasure is a replay of old data: suppressed. A new one applies.
    later = datetime.now(UTC)
    old_and_new = [
        CustomerProfile(event_id="p2", schema_version=1, customer_id="BUYER", event_time=T0,
                        loyalty_tier="gold"),
        CustomerProfile(event_id="p3", schema_version=1, customer_id="BUYER",
                        event_time=later + timedelta(seconds=5), loyalty_tier="silver"),
    ]  # fmt: skip
    produce(s.kafka.bootstrap, records(s, old_and_new))
    svc = consume(
        s, lambda svc: svc.metrics.suppressed >= 1 and svc.metrics.applied >= 1, "old and new"
    )
    assert svc.metrics.suppressed == 1
    got = stored(s, ["BUYER"])["BUYER"]
    assert got["pl"] == "silver" and "pc" not in got
    assert counters(s)["profiles_suppressed"] == 1


def apply_in_turn(
    settings: Settings, steps: Sequence[Sequence[CustomerProfile]]
) -> list[dict[str, dict[str, str]]]:
    """Each step one profile batch through the profile script (no broker: offsets made up);
    what the customers' profile fields hold after each step."""
    topic = settings.kafka.profiles_topic
    cids = sorted({p.customer_id for step in steps for p in step})

    async def run() -> list[dict[str, dict[str, str]]]:
        store = ProfileStore(settings.redis, settings.redis.prefix)
        seen: list[dict[str, dict[str, str]]] = []
        offset = 0
        try:
            for step in steps:
                recs = [ProfileRecord(topic, 0, offset + i, p) for i, p in enumerate(step)]
                offset += len(step)
                await store.apply(ProfileBatch(recs, (), {(topic, 0): offset - 1}))
                seen.append(stored(settings, cids))
        finally:
            await store.close()
        return seen

    return asyncio.run(run())


def _update(cid: str, n: int, when: datetime, **values: Any) -> CustomerProfile:
    return CustomerProfile(event_id=f"{cid}-{n}", schema_version=1, customer_id=cid,
                           event_time=when, **values)  # fmt: skip


def test_times_are_stored_compact_while_one_time_decides_every_written_attribute(
    profile_settings: Settings,
) -> None:
    s = profile_settings
    minute = timedelta(minutes=1)
    every = dict(country="GB", region="North", birth_year=1980, gender="female",
                 signup_channel="web", loyalty_tier="gold", marketing_consent=True)  # fmt: skip
    steps = [
        # one event: compact; two events at two times in one batch: full
        [_update("A", 1, T0, country="GB", region="North", loyalty_tier="gold"),
         _update("B", 1, T0, country="IE"), _update("B", 2, T0 + minute, region="South")],
        # a later event touching some attributes: full; every written attribute later: compact
        [_update("A", 2, T0 + minute, loyalty_tier="silver"),
         _update("B", 3, T0 + 2 * minute, country="FR", region=None)],
        # an older event deciding an attribute never written: a third time, still full
        [_update("A", 3, T0 - minute, country="DE", gender="male")],
        # one later event deciding all seven: compact again
        [_update("A", 4, T0 + 3 * minute, **every)],
    ]  # fmt: skip
    seen = apply_in_turn(s, steps)
    for n, got in enumerate(seen, start=1):
        want = expected([p for step in steps[:n] for p in step])
        assert got == want, n
    pt_len = [{cid: len(h[PROFILE_TIMES_FIELD]) for cid, h in got.items()} for got in seen]
    compact, full = COMPACT_TIMES_LENGTH, FULL_TIMES_LENGTH
    assert pt_len == [
        {"A": compact, "B": full},
        {"A": full, "B": compact},
        {"A": full, "B": compact},
        {"A": compact, "B": compact},
    ]
    assert seen[0]["A"][PROFILE_TIMES_FIELD] == encode_time(T0_MS) + "23"
    assert seen[1]["B"] == {"pc": "FR", PROFILE_TIMES_FIELD: encode_time(T0_MS + 120_000) + "03"}
    assert seen[3]["A"][PROFILE_TIMES_FIELD] == encode_time(T0_MS + 180_000) + "7f"


def test_times_stored_in_full_before_the_compact_form_are_read_and_merged(
    profile_settings: Settings,
) -> None:
    s = profile_settings
    space = keyspace(s.redis, s.redis.prefix)
    full_equal = encode_time(T0_MS) * 2 + NEVER_WRITTEN * 5  # country, region at T0
    full_mixed = encode_time(T0_MS) + encode_time(T0_MS + 60_000) + NEVER_WRITTEN * 5
    with sync_redis(s.redis) as r:
        r.hset(space.customer("OLD1"), mapping={"pc": "GB", "pr": "North", "pt": full_equal})
        r.hset(space.customer("OLD2"), mapping={"pc": "GB", "pr": "North", "pt": full_mixed})
    seen = apply_in_turn(
        s,
        [[_update("OLD1", 1, T0, loyalty_tier="gold", region="Aaa"),  # ties: North stays
          _update("OLD2", 1, T0, region="Zzz"),  # loses to the region's later time
          _update("OLD2", 2, T0 + timedelta(minutes=1), country="IE")]],  # one time again
    )  # fmt: skip
    t0 = encode_time(T0_MS)
    assert seen[0]["OLD1"] == {"pc": "GB", "pr": "North", "pl": "gold", "pt": t0 + "23"}
    later = encode_time(T0_MS + 60_000)
    assert seen[0]["OLD2"] == {"pc": "IE", "pr": "North", "pt": later + "03"}
