"""The worker's state on a real 3-primary Redis Cluster: exact, exactly once, across shards.

The same checks as on a single Redis (tests/integration/test_worker*.py): the state equals the
in-memory oracle's after a replay, after the same events replayed twice, after workers are
killed with SIGKILL mid-stream, and with two workers sharing the partitions.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from segstream.settings import Settings
from tests.support.kafka_reads import read_changes
from tests.support.producing import PacedProducer, produce, records_for
from tests.support.redis_cluster import LocalRedisCluster
from tests.support.state_checks import (
    AS_OF,
    assert_same_state,
    counters,
    oracle_rows,
    oracle_summaries,
    redis_rows,
    redis_summaries,
    wait_drained,
    wait_progress,
)
from tests.support.synthetic import dataset
from tests.support.waiting import wait_for
from tests.support.worker_process import REPO, WorkerProcess
from worker.connect import keyspace, sync_redis

pytestmark = pytest.mark.integration


def on_cluster(settings: Settings, cluster: LocalRedisCluster, **changes: object) -> Settings:
    return settings.with_(redis_url=cluster.url, redis_cluster=1, redis_shards=16, **changes)


def test_a_replay_on_a_cluster_equals_the_oracle_with_a_bounded_number_of_calls_per_batch(
    settings: Settings, redis_cluster: LocalRedisCluster, workers: Callable[..., WorkerProcess]
) -> None:
    s = on_cluster(settings, redis_cluster, scoring=0)
    events = dataset(300, 2000, 800, seed=31)
    worker = workers(s)
    produce(s.kafka.bootstrap, records_for(s, events))
    wait_drained(s, len(events), worker)
    assert_same_state(redis_rows(s), oracle_rows(events))
    assert redis_summaries(s) == oracle_summaries(events)

    # the customers are spread over the shards, and every primary holds some of them
    with sync_redis(s.redis) as client:
        spaces = {
            key.decode().split(":c:")[0]
            for key in client.scan_iter(match=f"{s.redis.prefix}:{{*}}:c:*", count=1000)
        }
    assert spaces == set(keyspace(s.redis, s.redis.prefix).spaces)
    for node in redis_cluster.primaries():
        with redis.Redis(port=node.port) as one:
            assert one.dbsize() > 0, node


def test_the_same_events_twice_and_workers_killed_mid_stream_still_end_exact_on_a_cluster(
    settings: Settings, redis_cluster: LocalRedisCluster, workers: Callable[..., WorkerProcess]
) -> None:
    s = on_cluster(settings, redis_cluster, scoring=0, batch_max_records=500)
    events = dataset(200, 1500, 600, seed=32)
    records = records_for(s, events)
    first = workers(s, "first")
    second = workers(s, "second")  # two workers share the partitions
    producer = PacedProducer(s.kafka.bootstrap, records + records, per_second=1500)
    producer.start()
    for victim in (first, second):
        time.sleep(random.Random(7).uniform(0.8, 1.6))
        victim.kill()  # SIGKILL mid-stream, then a replacement
        workers(s, "replacement")
    producer.join()
    survivor = workers(s, "last")
    wait_drained(s, 2 * len(events), survivor, timeout=240)
    assert_same_state(redis_rows(s), oracle_rows(events))
    got = counters(s)
    assert got["applied"] + got["deduped"] + got["anonymous"] == got["valid"], got
    wait_for(lambda: survivor.alive, 5, "the last worker still alive")


def segment_fields(s: Settings, customers: list[str]) -> dict[str, tuple[list[Any], list[Any]]]:
    """Per customer: (state hash, storefront copy) segment, model_version and segment_seq.

    The copy is written when a change is published: its segment and segment_seq are the state
    hash's; its model_version is the one of the last change (the state hash also records a
    newer model that kept the segment).
    """
    space = keyspace(s.redis, s.redis.prefix)
    fields = ("segment", "model_version", "segment_seq")
    with sync_redis(s.redis, decode_responses=True) as client:
        return {
            cid: (
                client.hmget(space.customer(cid), fields),
                client.hmget(space.storefront(cid), fields),
            )
            for cid in customers
        }


def test_segments_on_a_cluster_reach_the_storefront_key_and_follow_a_new_model(
    settings: Settings, redis_cluster: LocalRedisCluster, workers: Callable[..., WorkerProcess]
) -> None:
    s = on_cluster(
        settings, redis_cluster, model_poll_s=0.5, dirty_repair_s=2.0, hysteresis_margin=0.0,
        scoring_as_of=AS_OF.isoformat(), rescore_all=1,
    )  # fmt: skip
    events = dataset(120, 700, 250, seed=8)
    worker = workers(s)
    produce(s.kafka.bootstrap, records_for(s, events))
    wait_drained(s, len(events), worker)
    customers = sorted(oracle_rows(events))

    def all_on(version_prefix: str) -> dict[str, tuple[list[Any], list[Any]]] | None:
        got = segment_fields(s, customers)
        ready = all(
            state[0] and state[1].startswith(version_prefix) and state[::2] == copy[::2]
            for state, copy in got.values()
        )
        return got if ready else None

    wait_for(lambda: all_on("rules-"), 90, "every customer scored, storefront copies equal")
    done = subprocess.run(
        [sys.executable, "-m", "segstream", "train", "--from", "redis", "--k", "4", "--seed", "1",
         "--as-of", AS_OF.isoformat()],
        env=s.to_env(), cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    final = wait_for(lambda: all_on("km-"), 120, "every customer rescored onto the model")
    total = sum(int(state[2]) for state, _ in final.values())
    changes = read_changes(s, total)
    assert len(changes) == total
    last_seq: dict[str, int] = {}
    for seq, event in changes:
        assert seq == last_seq.get(event.customer_id, 0) + 1, event
        last_seq[event.customer_id] = seq
    assert {c: str(n) for c, n in last_seq.items()} == {c: v[0][2] for c, v in final.items()}
    # the storefront copy names the model of the customer's last change (docs/state.md)
    last_version = {event.customer_id: event.model_version for _, event in changes}
    assert {c: v[1][1] for c, v in final.items()} == last_version
    assert worker.alive


def test_a_primary_killed_mid_stream_fails_over_to_its_replica_and_loses_nothing_with_wait(
    settings: Settings, workers: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    """Replica safety: with SEGSTREAM_REDIS_WAIT_REPLICAS=1 an offset is committed only once
    the batch is on a replica, so the primary's death right after a batch loses none of it.
    Two replicas per primary: the promoted one still has one to WAIT for (with a single
    replica, ingestion would wait for the dead node's return, safety before availability)."""
    events = dataset(150, 1200, 500, seed=61)
    with LocalRedisCluster(tmp_path / "cluster", primaries=3, replicas=2) as cluster:
        s = on_cluster(settings, cluster, scoring=0, batch_max_records=100, redis_wait_replicas=1)
        worker = workers(s, "steadfast")
        worker.wait_assigned()
        producer = PacedProducer(s.kafka.bootstrap, records_for(s, events), 200.0)
        producer.start()
        wait_progress(s, len(events) // 3, worker)
        victim = cluster.primaries()[1]
        cluster.kill(victim)  # SIGKILL: whatever the replica has not got is gone
        cluster.wait_ok(60)  # its replica serves its slots now
        assert not victim.alive()
        producer.finish()
        got = wait_drained(s, len(events), worker)
        assert got["valid"] == len(events)
        assert_same_state(redis_rows(s), oracle_rows(events))
        assert worker.alive


def test_a_primary_paused_mid_stream_is_an_outage_that_loses_and_doubles_nothing(
    settings: Settings, workers: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    events = dataset(150, 1200, 500, seed=62)
    with LocalRedisCluster(tmp_path / "cluster", primaries=3) as cluster:
        s = on_cluster(settings, cluster, scoring=0, batch_max_records=100)
        worker = workers(s, "steadfast")
        worker.wait_assigned()
        producer = PacedProducer(s.kafka.bootstrap, records_for(s, events), 150.0)
        producer.start()
        wait_progress(s, len(events) // 4, worker)
        paused = cluster.primaries()[0]
        os.kill(paused.pid, signal.SIGSTOP)  # answers nothing; the others see it fail (3 s)
        sent = producer.sent
        wait_for(lambda: producer.sent >= sent + 600, 30, "4 s of events produced while paused")
        assert worker.alive
        os.kill(paused.pid, signal.SIGCONT)
        cluster.wait_ok(60)
        producer.finish()
        got = wait_drained(s, len(events), worker)
        assert got["valid"] == len(events)
        assert_same_state(redis_rows(s), oracle_rows(events))
        assert worker.alive


def twelve_partitions(settings: Settings, make_topic: Callable[..., str]) -> Settings:
    return settings.with_(
        orders_topic=make_topic("orders12", partitions=12),
        clicks_topic=make_topic("clicks12", partitions=12),
    )


def test_three_workers_on_twelve_partitions_end_exact_when_one_is_killed_mid_stream(
    settings: Settings,
    make_topic: Callable[..., str],
    redis_cluster: LocalRedisCluster,
    workers: Callable[..., WorkerProcess],
) -> None:
    s = on_cluster(twelve_partitions(settings, make_topic), redis_cluster, scoring=0)
    s = s.with_(batch_max_records=200)
    events = dataset(300, 2400, 900, seed=71)
    crew = [workers(s, f"w{i}") for i in range(3)]
    wait_for(
        lambda: all(len((w.health() or {}).get("assigned", [])) in (8, 7, 9) for w in crew),
        90,
        "three workers to share the 24 input partitions",
    )
    producer = PacedProducer(s.kafka.bootstrap, records_for(s, events), 400.0)
    producer.start()
    wait_progress(s, len(events) // 3, crew[1])
    crew[1].kill()
    producer.finish()
    got = wait_drained(s, len(events), crew[0], timeout=240)
    assert got["valid"] == len(events)
    assert_same_state(redis_rows(s), oracle_rows(events))
    assert crew[0].alive and crew[2].alive


def test_scaling_from_one_to_three_workers_mid_stream_ends_exact(
    settings: Settings,
    make_topic: Callable[..., str],
    redis_cluster: LocalRedisCluster,
    workers: Callable[..., WorkerProcess],
) -> None:
    s = on_cluster(twelve_partitions(settings, make_topic), redis_cluster, scoring=0)
    s = s.with_(batch_max_records=200)
    events = dataset(300, 2400, 900, seed=72)
    first = workers(s, "first")
    first.wait_assigned()
    producer = PacedProducer(s.kafka.bootstrap, records_for(s, events), 400.0)
    producer.start()
    wait_progress(s, len(events) // 4, first)
    more = [workers(s, "second"), workers(s, "third")]
    wait_progress(s, len(events) // 2, first)
    producer.finish()
    got = wait_drained(s, len(events), first, timeout=240)
    assert got["valid"] == len(events)
    assert_same_state(redis_rows(s), oracle_rows(events))
    for w in (first, *more):
        assert w.alive, w.tail()
    assert all((w.health() or {}).get("assigned") for w in more), "the new workers took part"
