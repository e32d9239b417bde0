"""The failure rule of ingestion, without a broker or Redis: splitting, classifying, isolating.

The applier runs against the in-memory state store (the oracle) wrapped so that it refuses any
batch holding a chosen customer, the way Redis refuses a batch whose customer key holds the
wrong type; backoff is set to zero, so nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.exceptions as rex
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import encode
from tests.support import synthetic
from tests.support.records import Raw
from worker import backoff as backoff_module
from worker.core import InMemoryStateStore
from worker.core.batch import ApplyResult, Batch
from worker.ingest.applier import BatchApplier, Stopping
from worker.ingest.batch import Assembled, Rejected, assemble
from worker.ingest.failures import Kind, classify
from worker.ingest.quarantine import (
    dead_letter_all,
    describe,
    describe_fetched,
    split_batch,
    without,
)
from worker.redis_io import Pending
from worker.state.errors import StoreRejected, StoreUnavailable

ORDERS, CLICKS = "orders", "clicks"


def fetch(seed: int, n_events: int = 60, bad_every: int = 7) -> list[list[Raw]]:
    """Valid orders and clicks over 3 partitions a topic, with a malformed record now and then."""
    events = [
        *synthetic.orders(8, n_events // 2, seed=seed),
        *synthetic.clicks(8, n_events // 6, seed=seed + 1),
    ]
    rng = random.Random(seed)
    parts: dict[tuple[str, int], list[Raw]] = {}
    for i, ev in enumerate(events):
        topic = ORDERS if ev.__class__.__name__ == "OrderEvent" else CLICKS
        p = rng.randrange(3)
        part = parts.setdefault((topic, p), [])
        value = b"{not json" if i % bad_every == 3 else encode(ev)
        part.append(Raw(topic, p, len(part), b"k", value))
    return list(parts.values())


def fresh_apply(batches: Sequence[Batch]) -> InMemoryStateStore:
    store = InMemoryStateStore()
    for b in batches:
        store.apply(b)
    return store


def same(a: InMemoryStateStore, b: InMemoryStateStore) -> None:
    assert {s.customer_id: s for s in a.customers()} == {s.customer_id: s for s in b.customers()}
    assert a.counters() == b.counters()


def split_randomly(batch: Batch, rng: random.Random, depth: int) -> list[Batch]:
    if depth == 0 or len(batch.records) < 2 or rng.random() < 0.2:
        return [batch]
    head, tail = split_batch(batch)
    return split_randomly(head, rng, depth - 1) + split_randomly(tail, rng, depth - 1)


# -- splitting ----------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 8))
def test_a_batch_applied_in_split_pieces_gives_the_state_and_counters_of_the_whole(
    seed: int, depth: int
) -> None:
    batch = assemble(fetch(seed), ORDERS, CLICKS).batch
    pieces = split_randomly(batch, random.Random(seed), depth)
    same(fresh_apply(pieces), fresh_apply([batch]))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000))
def test_pieces_redelivered_after_the_whole_change_nothing(seed: int) -> None:
    batch = assemble(fetch(seed), ORDERS, CLICKS).batch
    store = fresh_apply([batch])
    before = {s.customer_id: s for s in store.customers()}
    for piece in split_randomly(batch, random.Random(seed), 6):
        store.apply(piece)
    assert {s.customer_id: s for s in store.customers()} == before


def test_a_batch_of_one_record_cannot_be_split() -> None:
    batch = assemble(fetch(1), ORDERS, CLICKS).batch
    with pytest.raises(ValueError, match="fewer than two"):
        split_batch(Batch(batch.records[:1], {}))


def test_dead_letter_all_moves_the_fence_and_counts_every_record_dead_lettered() -> None:
    batch = assemble(fetch(2, bad_every=1000), ORDERS, CLICKS).batch
    store = fresh_apply([dead_letter_all(batch)])
    counts = store.counters()
    rejects = sum(len(o) for o in batch.dead_letter_offsets.values())
    assert counts["dead_lettered"] == len(batch.records) + rejects and counts["valid"] == 0
    assert store.apply(batch).applied == 0  # everything now lies at or below the fence
    assert not list(store.customers())


def test_without_moves_records_to_the_rejects_with_their_original_bytes() -> None:
    assembled = assemble(fetch(3), ORDERS, CLICKS)
    target = assembled.batch.records[4]
    smaller = without(assembled, {4: "boom"})
    assert target not in smaller.batch.records
    assert len(smaller.batch.records) == len(assembled.batch.records) - 1
    where = (target.topic, target.partition, target.offset)
    letter = next(r for r in smaller.rejected if (r.topic, r.partition, r.offset) == where)
    assert letter.value == encode(target.event) and letter.key == b"k"
    assert str(letter.error) == "$: boom"
    whole = fresh_apply([assembled.batch])
    assert fresh_apply([smaller.batch]).counters()["dead_lettered"] == (
        whole.counters()["dead_lettered"] + 1
    )


def test_describe_names_each_partition_and_its_offset_span() -> None:
    batch = assemble(fetch(4), ORDERS, CLICKS).batch
    text = describe(batch)
    assert text.startswith("clicks[") and "orders[0]@0-" in text
    assert text.endswith(f"({len(batch.records)} events)")


def test_describe_fetched_names_each_fetched_partition_and_its_offset_span() -> None:
    fetched = {
        ("orders", 2): [Raw("orders", 2, o, b"k", b"{}") for o in range(5, 9)],
        ("clicks", 0): [Raw("clicks", 0, 7, b"k", None)],
    }
    assert describe_fetched(fetched) == "clicks[0]@7, orders[2]@5-8"
    assert describe_fetched({}) == "nothing"


# -- classifying ------------------------------------------------------------------------------
def rejected_by(reply: Exception) -> StoreRejected:
    try:
        raise StoreRejected(f"Redis at redis://x refused a batch: {reply}") from reply
    except StoreRejected as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "kind", "advice"),
    [
        (StoreUnavailable("Redis at redis://x is unavailable"), Kind.OUTAGE, ""),
        (TimeoutError(), Kind.OUTAGE, ""),
        (rejected_by(rex.OutOfMemoryError("command not allowed")), Kind.OUTAGE, "maxmemory"),
        (rejected_by(rex.ReadOnlyError("You can't write")), Kind.OUTAGE, "replica"),
        (rejected_by(rex.ResponseError("MISCONF no disk")), Kind.OUTAGE, "persist"),
        # redis-py strips the code of these replies (a cluster failing over, a slot migrating)
        (rejected_by(rex.TryAgainError("Multiple keys request during rehashing")), Kind.OUTAGE, ""),
        (rejected_by(rex.ClusterDownError("The cluster is down")), Kind.OUTAGE, ""),
        (rejected_by(rex.MasterDownError("Link with MASTER is down")), Kind.OUTAGE, "primary"),
        (
            rejected_by(rex.ResponseError("ERR segstream state key ss:counters holds a string")),
            Kind.OUTAGE,
            "delete or rename",
        ),
        (rejected_by(rex.ResponseError("WRONGTYPE Operation against a key")), Kind.POISON, ""),
        (rejected_by(rex.ResponseError("ERR user_script:1: bad")), Kind.POISON, ""),
        (RuntimeError("a bug"), Kind.POISON, ""),
        (OverflowError("int too large to convert"), Kind.POISON, ""),
    ],
)
def test_outages_are_told_apart_from_poison(exc: BaseException, kind: Kind, advice: str) -> None:
    failure = classify(exc)
    assert failure.kind is kind
    assert advice in failure.advice
    assert type(exc).__name__ in failure.text


# -- the applier --------------------------------------------------------------------------------
@dataclass
class RefusingStore:
    """The oracle, refusing (before writing anything) every batch that holds a given customer."""

    refuse: set[str] = field(default_factory=set)
    outages: int = 0
    memory: InMemoryStateStore = field(default_factory=InMemoryStateStore)
    calls: int = 0

    def prepare(self, batch: Batch, snapshot: Any = None) -> None:
        return None

    async def send_apply(self, batch: Batch, prepared: Any = None) -> Pending[ApplyResult]:
        return Pending(lambda: self.apply(batch, prepared))

    async def apply(self, batch: Batch, prepared: Any = None) -> ApplyResult:
        self.calls += 1
        if self.outages > 0:
            self.outages -= 1
            raise StoreUnavailable("Redis at redis://x is unavailable: connection refused")
        bad = [r.event.customer_id for r in batch.records if r.event.customer_id in self.refuse]
        if bad:
            raise rejected_by(rex.ResponseError(f"WRONGTYPE customer {bad[0]}"))
        return self.memory.apply(batch)

    async def counters(self) -> dict[str, int]:
        return self.memory.counters()

    async def customers_crossing(self, threshold_days: float, since_ms: int, until_ms: int) -> Any:
        return []

    async def close(self) -> None:
        return None


@dataclass
class Letters:
    sent: list[Rejected] = field(default_factory=list)

    async def send(self, rejected: Sequence[Rejected]) -> None:
        self.sent.extend(rejected)


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backoff_module, "BACKOFF_FIRST_S", 0.0)


def run(store: RefusingStore, assembled: Assembled, poison_retries: int = 5) -> tuple[Any, Any]:
    letters = Letters()
    states: list[str] = []
    applier = BatchApplier(
        store,
        letters,
        poison_retries=poison_retries,
        stopping=lambda: False,
        on_state=lambda state, error: states.append(state),
    )
    applied = asyncio.run(applier.apply(assembled))
    return applied, (letters, states, applier.metrics)


def test_records_the_store_keeps_refusing_are_dead_lettered_alone_and_the_rest_applied() -> None:
    assembled = assemble(fetch(5), ORDERS, CLICKS)
    poisoned = assembled.batch.records[7].event.customer_id
    assert poisoned is not None
    store = RefusingStore(refuse={poisoned})
    applied, (letters, states, metrics) = run(store, assembled)

    blamed = [r for r in assembled.batch.records if r.event.customer_id == poisoned]
    expected = fresh_apply([assembled.batch])
    expected_states = {s.customer_id: s for s in expected.customers() if s.customer_id != poisoned}
    assert {s.customer_id: s for s in store.memory.customers()} == expected_states
    quarantined = [r for r in letters.sent if "refused this record 5 times" in str(r.error)]
    assert sorted((r.topic, r.partition, r.offset) for r in quarantined) == sorted(
        (r.topic, r.partition, r.offset) for r in blamed
    )
    assert all("WRONGTYPE" in str(r.error) for r in quarantined)
    assert applied.quarantined == len(blamed) == metrics.quarantined
    assert metrics.isolated_batches == 1 and metrics.poison_failures == 5
    counts = store.memory.counters()
    assert counts["dead_lettered"] == len(assembled.rejected) + len(blamed)
    assert counts["valid"] == len(assembled.batch.records) - len(blamed)
    assert states[-1] == "running" and metrics.failing is None
    # the fence covers everything: a redelivery of the whole batch changes nothing
    store.refuse.clear()
    assert asyncio.run(store.apply(assembled.batch)).applied == 0


def test_an_outage_is_waited_out_without_dead_lettering_anything() -> None:
    assembled = assemble(fetch(6), ORDERS, CLICKS)
    store = RefusingStore(outages=12)  # more than poison_retries: outages never count as poison
    applied, (letters, states, metrics) = run(store, assembled)
    assert applied.quarantined == 0 and len(applied.pieces) == 1
    assert len(letters.sent) == len(assembled.rejected)
    assert metrics.outage_failures == 12 and metrics.poison_failures == 0
    assert "retrying-redis" in states and states[-1] == "running"
    same(store.memory, fresh_apply([assembled.batch]))


def test_with_poison_retries_zero_a_refused_batch_is_retried_and_never_dead_lettered() -> None:
    assembled = assemble(fetch(7), ORDERS, CLICKS)
    poisoned = next(r.event.customer_id for r in assembled.batch.records if r.event.customer_id)
    store = RefusingStore(refuse={poisoned})
    letters = Letters()
    stop = asyncio.Event()
    applier = BatchApplier(
        store, letters, poison_retries=0, stopping=stop.is_set, on_state=lambda s, e: None
    )

    async def for_a_while() -> None:
        task = asyncio.ensure_future(applier.apply(assembled))
        while store.calls < 50 and not task.done():
            await asyncio.sleep(0)
        assert not task.done()
        stop.set()  # how the service stops it: the batch is abandoned, uncommitted
        with pytest.raises(Stopping):
            await task

    asyncio.run(for_a_while())
    assert len(letters.sent) == len(assembled.rejected)  # the schema rejects only
    assert applier.metrics.poison_failures >= 49 and applier.metrics.isolated_batches == 0
    assert applier.metrics.failing is not None
    assert applier.metrics.failing.as_dict()["kind"] == "poison"
    assert not list(store.memory.customers())


def test_a_failure_line_never_shows_the_redis_password() -> None:
    exc = StoreUnavailable("Redis at redis://worker:hunter2@redis:6379/0 is unavailable: refused")
    failure = classify(exc)
    assert "hunter2" not in failure.text and "redis://worker:***@redis:6379/0" in failure.text
