"""``segstream worker`` as a subprocess against the real broker and Redis: exactness end to end.

Every test runs the worker exactly as ops would (``python -m segstream worker`` with the test's
settings in ``SEGSTREAM_*`` variables), produces with kafka-python and reads the state back from
Redis, comparing it customer by customer with an oracle: a pandas group-by for RFM, and the
in-memory state store (the pure core's reference semantics) for every exported column.

The helpers live in ``tests/support`` (worker processes, producing, the oracle and reads).
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from kafka import KafkaConsumer

from schemas import DeadLetter, LineItem, OrderEvent, decode, encode
from segstream.settings import Settings
from tests.support import synthetic
from tests.support.modes import MODES, on_redis
from tests.support.producing import produce, records_for
from tests.support.state_checks import (
    AS_OF,
    assert_same_state,
    oracle_rows,
    redis_rows,
    wait_received,
)
from tests.support.synthetic import dataset
from tests.support.worker_process import REPO, WorkerProcess

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _remove_keys_afterwards(redis_client: object) -> None:
    """``redis_client`` deletes every key under this test's prefix when the test ends."""


@pytest.fixture(params=MODES)
def settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """Every test here runs on a single Redis and on a 3-primary Redis Cluster."""
    return on_redis(request, settings)


# -- tests ---------------------------------------------------------------------------------------
def test_replayed_orders_file_matches_pandas_and_a_second_replay_changes_nothing(
    settings: Settings, workers: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    orders = synthetic.orders(300, 3000, seed=21)  # ~3.3k events, cancels and returns
    replay_file = tmp_path / "orders.jsonl"
    replay_file.write_bytes(b"".join(encode(o) + b"\n" for o in orders))

    def replay() -> None:
        lines = replay_file.read_bytes().splitlines()
        events = [decode(OrderEvent, line) for line in lines]
        produce(settings.kafka.bootstrap, records_for(settings, events))

    worker = workers(settings)
    replay()
    worker.wait_assigned()
    wait_received(settings, len(orders))

    out = tmp_path / "export.jsonl"
    subprocess.run(
        [sys.executable, "-m", "segstream", "export", "--format", "jsonl", "--out", str(out),
         "--as-of", AS_OF.isoformat()],
        env=settings.to_env(), cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    exported = {r["customer_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    expected = synthetic.pandas_rfm(orders)
    assert sorted(exported) == sorted(expected.index)
    for cid, row in expected.iterrows():
        got = exported[str(cid)]
        assert got["frequency"] == row["frequency"], cid
        assert round(got["monetary"] * 100) == row["monetary_cents"], cid
        assert got["aov"] == pytest.approx(row["aov"], abs=1e-9), cid
        first = datetime.fromisoformat(got["first_order_ts"])
        last = datetime.fromisoformat(got["last_order_ts"])
        assert int(first.timestamp() * 1000) == row["first_ms"], cid
        assert int(last.timestamp() * 1000) == row["last_ms"], cid

    before = redis_rows(settings)
    replay()  # ops replay the very same file: new offsets, same event ids
    got = wait_received(settings, 2 * len(orders))
    assert got["duplicates"] == len(orders), got
    assert redis_rows(settings) == before
    assert worker.alive


def test_shuffled_events_give_the_in_order_state(
    settings: Settings,
    make_topic: Callable[..., str],
    workers: Callable[..., WorkerProcess],
) -> None:
    events = dataset(200, 1500, 600, seed=5)
    shuffled = list(events)
    random.Random(99).shuffle(shuffled)
    other = settings.with_(
        orders_topic=make_topic("orders-shuffled"),
        clicks_topic=make_topic("clicks-shuffled"),
        redis_prefix=f"{settings.redis.prefix}-shuffled",  # cleaned up with the test's prefix
        group_id=f"{settings.kafka.group_id}-shuffled",
    )
    in_order, out_of_order = workers(settings, "in-order"), workers(other, "shuffled")
    produce(settings.kafka.bootstrap, records_for(settings, events))
    produce(settings.kafka.bootstrap, records_for(other, shuffled))
    in_order.wait_assigned()
    out_of_order.wait_assigned()
    wait_received(settings, len(events))
    wait_received(other, len(events))
    expected = redis_rows(settings)
    assert_same_state(expected, oracle_rows(events))
    shuffled_rows = redis_rows(other)
    # counters and times do not depend on arrival order at all...
    assert_same_state(_without_summaries(shuffled_rows), _without_summaries(expected))
    # ...the category/device summaries are kept in the order each topic delivered the events
    # (beyond four names per customer, or a cancellation before its order, that order matters:
    # docs/state.md): they equal the oracle's given the same shuffled order
    assert_same_state(shuffled_rows, oracle_rows(shuffled))


#: The export columns read from the category/device summaries.
SUMMARY_COLUMNS = ("favourite_category", "top_viewed_category", "device")


def _without_summaries(rows: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    return {
        cid: {k: v for k, v in row.items() if k not in SUMMARY_COLUMNS} for cid, row in rows.items()
    }


def _valid_order(i: int) -> OrderEvent:
    return OrderEvent(
        event_id=f"ok-{i}", schema_version=1, customer_id=f"C{i % 7}", order_id=f"O{i}",
        event_time=datetime(2025, 3, 1, tzinfo=UTC), status="placed",
        items=[LineItem(sku="S", quantity=1, unit_price=5.0)], total=5.0,
    )  # fmt: skip


#: (what is wrong, topic, value, a phrase the dead letter's reason must contain)
def malformed(settings: Settings) -> list[tuple[str, str, bytes | None, str]]:
    good = encode(_valid_order(0))
    o, c = settings.kafka.orders_topic, settings.kafka.clicks_topic
    return [
        ("not json", o, b"{this is not json", "not JSON"),
        ("not utf-8", o, b"\xff\xfe\x00binary", "not UTF-8"),
        ("null value", o, None, "empty record"),
        ("missing field", o, good.replace(b'"customer_id":"C0",', b""), "missing required"),
        ("wrong type", o, good.replace(b'"total":5.0', b'"total":"5"'), "wrong type"),
        ("bad enum", o, good.replace(b'"placed"', b'"shipped"'), "unknown value"),
        ("unknown version", o, good.replace(b'"schema_version":1', b'"schema_version":9'),
         "unknown schema_version"),
        ("total mismatch", o, good.replace(b'"total":5.0', b'"total":7.5'), "disagrees"),
        ("zero quantity", o, good.replace(b'"quantity":1', b'"quantity":0').replace(
            b'"total":5.0', b'"total":0.0'), "at least 1"),
        ("bad timestamp", o, good.replace(b"2025-03-01", b"2025-13-45"), "timestamp"),
        ("oversize", o, b'{"pad":"' + b"x" * 70_000 + b'"}', "oversize"),
        ("order on clicks", c, good, "session_id"),
        ("click without customer", c,
         b'{"event_id":"x","schema_version":1,"session_id":"s","type":"search",'
         b'"event_time":"2025-03-01T00:00:00Z"}', "customer_id"),
    ]  # fmt: skip


def test_each_malformed_kind_is_dead_lettered_with_its_reason_and_counts_add_up(
    settings: Settings, workers: Callable[..., WorkerProcess], kafka_bootstrap: str
) -> None:
    bad = malformed(settings)
    valid = [_valid_order(i) for i in range(1, 41)]
    items: list[tuple[str, bytes | None, bytes | None]] = []
    items += [
        (t, b"K", v) for t, v in [(settings.kafka.orders_topic, encode(e)) for e in valid[:20]]
    ]
    items += [(topic, b"K", value) for _, topic, value, _ in bad]
    items += [
        (t, b"K", v) for t, v in [(settings.kafka.orders_topic, encode(e)) for e in valid[20:]]
    ]
    worker = workers(settings)
    produce(kafka_bootstrap, items)
    worker.wait_assigned()
    got = wait_received(settings, len(items))
    assert got["valid"] == len(valid) and got["dead_lettered"] == len(bad), got

    consumer = KafkaConsumer(
        settings.kafka.dead_letter_topic, bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest", group_id=f"{settings.kafka.group_id}-dl-reader",
        session_timeout_ms=6000, consumer_timeout_ms=15000,
    )  # fmt: skip
    letters: list[DeadLetter] = []
    for message in consumer:
        letters.append(msgspec.json.decode(message.value, type=DeadLetter))
        assert message.key == b"K"
        if len(letters) == len(bad):
            break
    consumer.close()
    assert len(letters) == len(bad)
    by_original = {(d.source_topic, d.original): d for d in letters}
    for what, topic, value, phrase in bad:
        letter = by_original[(topic, value or b"")]
        assert phrase in letter.error, f"{what}: {letter.error!r}"
        assert letter.partition >= 0 and letter.offset >= 0
    logged = worker.log_path.read_text(errors="replace").count("dead-lettered ")
    assert logged == len(bad)
    health = worker.health()
    assert health is not None and health["status"] == "ok", json.dumps(health)
    assert health["counters"]["dead_lettered"] == len(bad)
    metric = f'segstream_ingest_records_total{{outcome="dead_lettered"}} {len(bad)}'
    assert metric in worker.metrics()


def test_worker_stops_cleanly_on_sigterm(
    settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    worker = workers(settings)
    worker.wait_assigned()
    started = time.monotonic()
    assert worker.stop() == 0
    assert time.monotonic() - started < 15
    with contextlib.suppress(OSError):
        assert "Traceback" not in worker.tail(200)
