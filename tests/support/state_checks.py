"""What the worker wrote to Redis, read back and compared with an oracle.

The oracle is the in-memory state store (the pure core's reference semantics) given every
event at once: the Redis state must equal it customer by customer, whatever order, batching,
faults or restarts the events went through. Features are computed as of :data:`AS_OF`. The
recommendation counts' oracle is the Python rule (worker/recommend/decay.py) given every placed
order once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas import OrderEvent
from segstream.settings import Settings
from tests.support.synthetic import Event
from tests.support.waiting import wait_for
from tests.support.worker_process import WorkerProcess
from worker.connect import keyspace, sync_redis
from worker.core import Batch, CustomerState, InMemoryStateStore, Record, features
from worker.recommend.decay import SHOP, DecayedCounts, as_of, half_life_ms
from worker.recommend.rank import member
from worker.state.reader import StateReader

AS_OF = datetime(2026, 6, 1, tzinfo=UTC)


def oracle_rows(events: Sequence[Event]) -> dict[str, dict[str, object]]:
    """Every export column per customer, from the in-memory store given all events at once."""
    store = InMemoryStateStore()
    records = [Record("oracle", 0, i, ev) for i, ev in enumerate(events)]
    store.apply(Batch(records, {("oracle", 0): len(records) - 1}, {}))
    return {s.customer_id: features(s, AS_OF) for s in store.customers()}


Summaries = tuple[object, object, object]


def _summaries(state: CustomerState) -> Summaries:
    a = state.attributes
    return a.spend_by_category, a.views_by_category, a.clicks_by_device


def oracle_summaries(events: Sequence[Event]) -> dict[str, Summaries]:
    """Per customer the whole category/device summaries (the rows hold only their top names)."""
    store = InMemoryStateStore()
    records = [Record("oracle", 0, i, ev) for i, ev in enumerate(events)]
    store.apply(Batch(records, {("oracle", 0): len(records) - 1}, {}))
    return {s.customer_id: _summaries(s) for s in store.customers()}


def redis_summaries(settings: Settings) -> dict[str, Summaries]:
    """Per customer the whole summaries, as the worker left them in Redis."""
    with StateReader(settings.redis, settings.redis.prefix) as reader:
        return {s.customer_id: _summaries(s) for s in reader.customers()}


def redis_rows(settings: Settings) -> dict[str, dict[str, object]]:
    """Every export column per customer, as the worker left them in Redis."""
    with StateReader(settings.redis, settings.redis.prefix) as reader:
        return {s.customer_id: features(s, AS_OF) for s in reader.customers()}


def counters(settings: Settings) -> dict[str, int]:
    """The ingest counters in Redis (received, valid, dead_lettered, duplicates, ...)."""
    with StateReader(settings.redis, settings.redis.prefix) as reader:
        return reader.counters()


def wait_received(settings: Settings, n: int, timeout: float = 90.0) -> dict[str, int]:
    """Until the counters have received ``n`` records; they must add up then."""

    def done() -> dict[str, int] | None:
        c = counters(settings)
        return c if c["received"] >= n else None

    got = wait_for(done, timeout, f"{n} records received in Redis counters")
    assert got["received"] == n, got
    assert got["valid"] + got["dead_lettered"] == got["received"], got
    return dict(got)


def wait_drained(
    settings: Settings, n: int, worker: WorkerProcess, timeout: float = 180.0
) -> dict[str, int]:
    """Until the Redis counters have received ``n`` records; fails at once if the worker exits.

    (The original outage ends the process within a second; waiting out the timeout would only
    hide its traceback.)
    """

    def done() -> dict[str, int] | None:
        code = worker.proc.poll()
        assert code is None, f"{worker.name} exited with {code}:\n{worker.tail(60)}"
        c = counters(settings)
        return c if c["received"] >= n else None

    got: dict[str, int] = wait_for(done, timeout, f"{worker.name} to drain {n} records", 0.2)
    assert got["received"] == n, got
    assert got["valid"] + got["dead_lettered"] == got["received"], got
    return dict(got)


def assert_same_state(actual: dict[str, dict[str, object]], expected: dict[str, Any]) -> None:
    """The same customers with the same columns; the message names the first that differs."""
    assert actual.keys() == expected.keys()
    diffs = [cid for cid in expected if actual[cid] != expected[cid]]
    assert not diffs, f"{len(diffs)} customers differ, e.g. {diffs[0]}: " + (
        f"{actual[diffs[0]]} != {expected[diffs[0]]}" if diffs else ""
    )


def wait_progress(settings: Settings, at_least: int, worker: WorkerProcess) -> int:
    """Until the counters have received at least ``at_least`` records (``worker`` alive)."""

    def moved() -> int | None:
        assert worker.alive, f"{worker.name} exited:\n{worker.tail()}"
        n = counters(settings)["received"]
        return n if n >= at_least else None

    return int(wait_for(moved, 90, f"{at_least} records received", every=0.02))


def counts_by_rule(
    settings: Settings, orders: Sequence[OrderEvent], segments: dict[str, str] | None = None
) -> DecayedCounts:
    """The Python rule's counts of ``orders``, in order, each under its customer's segment in
    ``segments`` (none: the shop's only)."""
    counts = DecayedCounts(half_life_ms(settings.recommend.half_life_days))
    segment_of = segments or {}
    counts.add_batch(
        (segment_of.get(o.customer_id), o.event_time_ms,
         [(member(i.category, i.sku), i.quantity) for i in o.items])
        for o in orders
    )  # fmt: skip
    return counts


def assert_shop_counts_match_oracle(settings: Settings, events: Sequence[Any]) -> None:
    """The shop's recommendation counts equal the Python rule over every placed order once.

    Waits until every space's list of lines owed to the counts (``{space}:rbox``) is drained,
    then compares every space's shop counts, read as of the newest order, summed, with the rule
    given each placed order once (its first event, as the state's fingerprints keep it). The
    shop's counts, not a segment's: which segment an order counts for depends on when scoring
    got to its customer.
    """
    half_life = half_life_ms(settings.recommend.half_life_days)
    space = keyspace(settings.redis, settings.redis.prefix)
    with sync_redis(settings.redis, decode_responses=True) as r:
        wait_for(
            lambda: not any(r.llen(f"{sp}:rbox") for sp in space.spaces),
            60,
            "the lines owed to the recommendation counts drained",
        )
        placed: dict[str, OrderEvent] = {}
        for ev in events:
            if isinstance(ev, OrderEvent) and ev.status == "placed":
                placed.setdefault(ev.order_id, ev)
        latest = max(o.event_time_ms for o in placed.values())
        want = counts_by_rule(settings, list(placed.values()))
        got: dict[str, float] = {}
        for sp in space.spaces:
            landmark = r.hget(f"{sp}:rmeta", "L")
            for m, score in r.zrange(f"{sp}:rpop", 0, -1, withscores=True):
                got[m] = got.get(m, 0.0) + as_of(score, int(landmark), latest, half_life)
    wanted = dict(want.top(SHOP, len(got) + 1000, latest))
    assert got.keys() == wanted.keys()
    for m, v in got.items():
        assert v == pytest.approx(wanted[m], rel=1e-9), m
