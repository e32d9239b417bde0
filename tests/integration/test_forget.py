"""Forgetting a customer end to end, against the real broker and Redis (docs/forget.md).

A worker runs as ops run it; the stream is produced in two halves, and the customer is
forgotten between them while the second half is still arriving: once with ``segstream forget``,
once with a request on the erase-requests topic (after a malformed one, which must be
dead-lettered without stopping the consumer). Then the customer's whole old file is replayed.
In the end: no key, index entry or unpublished change of the customer in Redis (only the
suppression entry), nobody of that name in ``segstream export``, a tombstone as their last
record on segment-changes, their replayed events counted as suppressed, and every other
customer exactly as the oracle computes it from their events alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from kafka import KafkaConsumer, TopicPartition

from schemas.erase import encode_erase_request, erase_request
from segstream.settings import Settings
from tests.support.kafka_reads import read_dead_letters
from tests.support.producing import PacedProducer, produce, records_for
from tests.support.state_checks import (
    AS_OF,
    assert_same_state,
    counters,
    oracle_rows,
    redis_rows,
    wait_received,
)
from tests.support.synthetic import Event, dataset
from tests.support.waiting import wait_for
from tests.support.worker_process import REPO, WorkerProcess
from worker.connect import keyspace, sync_redis
from worker.state.keys import Keyspace
from worker.state.reader import StateReader

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _remove_keys_afterwards(redis_client: object) -> None:
    """``redis_client`` deletes every key under this test's prefix when the test ends."""


@pytest.fixture(params=["single", "cluster"])
def erase_settings(
    request: pytest.FixtureRequest, settings: Settings, make_topic: Callable[..., str]
) -> Settings:
    """This test's settings, on the single Redis and on the session's Redis Cluster."""
    s = settings.with_(erase_requests_topic=make_topic("erase-requests-1p", partitions=1))
    if request.param == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        s = s.with_(redis_url=cluster.url, redis_cluster=1)
    return s


# -- helpers -------------------------------------------------------------------------------------
def the_busiest_customer(events: list[Event]) -> str:
    counts = Counter(e.customer_id for e in events if e.customer_id)
    return counts.most_common(1)[0][0]


def client(settings: Settings) -> redis.Redis:
    return sync_redis(settings.redis)


def spaces(settings: Settings) -> Keyspace:
    return keyspace(settings.redis, settings.redis.prefix)


def wait_scored(settings: Settings, customer_id: str) -> None:
    key = spaces(settings).customer(customer_id)
    with client(settings) as r:
        wait_for(lambda: r.hget(key, "segment"), 60, "the customer to be scored")


def wait_settled(settings: Settings) -> None:
    """Until scoring owes nobody a segment and the outbox is empty (everything published)."""
    every = spaces(settings).spaces
    with client(settings) as r:
        wait_for(
            lambda: all(r.hlen(f"{p}:unscored") == 0 and r.hlen(f"{p}:outbox") == 0 for p in every),
            90,
            "scoring to settle",
            0.2,
        )


def topic_records(settings: Settings, topic: str) -> list[tuple[int, int, bytes, bytes | None]]:
    """Every record of ``topic``: (partition, offset, key, value), in partition order."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap, group_id=None, enable_auto_commit=False
    )
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        end = consumer.end_offsets(tps)
        out: list[tuple[int, int, bytes, bytes | None]] = []

        def drained() -> bool:
            for batch in consumer.poll(timeout_ms=300).values():
                out.extend((m.partition, m.offset, m.key, m.value) for m in batch)
            return all(consumer.position(tp) >= end[tp] for tp in tps)

        wait_for(drained, 60, f"the whole of {topic}", 0)
        return sorted(out)
    finally:
        consumer.close()


def export_rows(settings: Settings, tmp_path: Path) -> dict[str, dict[str, Any]]:
    out = tmp_path / "export.jsonl"
    subprocess.run(
        [sys.executable, "-m", "segstream", "export", "--format", "jsonl", "--out", str(out),
         "--as-of", AS_OF.isoformat()],
        env=settings.to_env(), cwd=REPO, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return {r["customer_id"]: r for r in map(json.loads, out.read_text().splitlines())}


def keys_naming(settings: Settings, customer_id: str) -> list[str]:
    with client(settings) as r:
        pattern = f"{settings.redis.prefix}:*"
        return sorted(k.decode() for k in r.scan_iter(pattern, 1000) if customer_id in k.decode())


def assert_forgotten(
    settings: Settings, victim: str, events: list[Event], replayed: int, tmp_path: Path
) -> None:
    """The customer is gone from everything; everyone else is exactly as their events say."""
    wait_settled(settings)
    p = spaces(settings).space_of(victim)  # the prefix itself on a single Redis
    # Redis: only the suppression entry names them (no storefront copy either, on a cluster);
    # no index, queue or outbox holds them
    assert keys_naming(settings, victim) == [f"{p}:x:{{{victim}}}"]
    with client(settings) as r:
        assert r.hget(f"{p}:unscored", victim) is None
        buckets = list(r.scan_iter(f"{settings.redis.prefix}:*lo:*", 1000))
        assert buckets, "the sweep index is there for everyone else"
        assert all(r.zscore(b, victim) is None for b in buckets)
        assert all(victim.encode() not in v for v in r.hgetall(f"{p}:outbox").values())
        assert 0 < r.pttl(f"{p}:x:{{{victim}}}") <= 90 * 86_400_000
    # every other customer exactly as the oracle computes it from their events alone
    others = [e for e in events if e.customer_id != victim]
    expected = oracle_rows(others)
    assert_same_state(redis_rows(settings), expected)
    exported = export_rows(settings, tmp_path)
    assert victim not in exported
    assert sorted(exported) == sorted(expected)
    # counted: the replay's events were dropped, and the counters still add up
    c = counters(settings)
    with StateReader(settings.redis, settings.redis.prefix) as reader:
        erased = reader.erasure_counters()
    assert erased["erasures"] == 1 and erased["forgotten"] == 1, erased
    assert erased["suppressed"] >= replayed, erased
    assert c["valid"] == c["applied"] + c["deduped"] + c["anonymous"] + erased["suppressed"], c
    # the tombstone is the customer's last record on segment-changes, after their changes
    records = topic_records(settings, settings.kafka.segment_changes_topic)
    theirs = [value for _, _, key, value in records if key == victim.encode()]
    assert len(theirs) >= 2 and theirs[-1] is None, [v is None for v in theirs]
    assert all(value is not None for value in theirs[:-1])
    assert not [key for _, _, key, value in records if value is None and key != victim.encode()]


def stream_with_a_gap(
    settings: Settings, events: list[Event], workers: Callable[..., WorkerProcess]
) -> tuple[WorkerProcess, PacedProducer, str]:
    """A worker that has the first half of the stream and scored the victim; the second half
    starts arriving (paced) when the caller releases the returned producer."""
    victim = the_busiest_customer(events)
    half = len(events) // 2
    worker = workers(settings)
    produce(settings.kafka.bootstrap, records_for(settings, events[:half]))
    worker.wait_assigned()
    wait_received(settings, half)
    wait_scored(settings, victim)
    rest = PacedProducer(
        settings.kafka.bootstrap, records_for(settings, events[half:]), per_second=150, hold_from=0
    )
    rest.start()
    return worker, rest, victim


# -- tests ---------------------------------------------------------------------------------------
def test_a_customer_forgotten_mid_stream_stays_gone_when_their_old_file_is_replayed(
    erase_settings: Settings, workers: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    settings = erase_settings
    events = dataset(120, 1200, 500, seed=17)
    worker, rest, victim = stream_with_a_gap(settings, events, workers)
    rest.release()
    forgot = subprocess.run(
        [sys.executable, "-m", "segstream", "forget", victim],
        env=settings.to_env(), cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert forgot.returncode == 0, forgot.stderr
    assert "forgot 1 customer(s): 1 had data, 0 had none; 1 tombstone(s)" in forgot.stdout
    assert victim not in forgot.stdout + forgot.stderr
    assert rest.sent < len(events) - len(events) // 2, "the stream was over before the erasure"
    rest.finish()
    wait_received(settings, len(events))

    theirs = [e for e in events if e.customer_id == victim]
    produce(settings.kafka.bootstrap, records_for(settings, theirs))  # the old file, again
    wait_received(settings, len(events) + len(theirs))

    assert_forgotten(settings, victim, events, len(theirs), tmp_path)
    assert worker.alive
    log = worker.log_path.read_text(errors="replace")
    assert victim not in log and "Traceback" not in log


def test_an_erase_request_on_the_topic_forgets_and_a_malformed_one_is_dead_lettered(
    erase_settings: Settings, workers: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    settings = erase_settings
    topic = settings.kafka.erase_requests_topic
    events = dataset(120, 1200, 500, seed=23)
    worker, rest, victim = stream_with_a_gap(settings, events, workers)
    rest.release()
    good = encode_erase_request(erase_request(victim, datetime.now(UTC), request_id="R-1"))
    produce(
        settings.kafka.bootstrap,
        [
            (topic, victim.encode(), b'{"schema_version": 1, "customer_id": '),
            (topic, victim.encode(), good),
        ],
    )
    with StateReader(settings.redis, settings.redis.prefix) as reader:
        wait_for(lambda: reader.erasure_counters()["erasures"] == 1, 60, "the erasure")
    assert rest.sent < len(events) - len(events) // 2, "the stream was over before the erasure"
    rest.finish()
    wait_received(settings, len(events))

    [letter] = read_dead_letters(settings, at_least=1)
    assert letter.letter.source_topic == topic and letter.letter.offset == 0
    assert letter.letter.error.startswith("$: not JSON"), letter.letter.error
    assert letter.message_key == victim.encode()

    theirs = [e for e in events if e.customer_id == victim]
    produce(settings.kafka.bootstrap, records_for(settings, theirs))
    wait_received(settings, len(events) + len(theirs))

    assert_forgotten(settings, victim, events, len(theirs), tmp_path)
    # both requests done: the consumer committed past them, in its own group
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap,
        group_id=f"{settings.kafka.group_id}-erase",
        enable_auto_commit=False,
    )
    try:
        tp = TopicPartition(topic, 0)
        wait_for(lambda: consumer.committed(tp) == 2, 30, "the erase offsets committed")
    finally:
        consumer.close()
    assert worker.alive
    log = worker.log_path.read_text(errors="replace")
    assert victim not in log and "Traceback" not in log
