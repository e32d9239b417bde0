"""The worker's state on a real 3-primary Redis Cluster: exact, exactly once, across shards.

The same checks as on a single Redis (tests/integration/test_worker*.py): the state equals the
in-memory oracle's after a replay, after the same events replayed twice, after workers are
killed with SIGKILL mid-stream, and with two workers sharing the partitions.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest
import redis

from segstream.settings import Settings
from tests.support.producing import PacedProducer, produce, records_for
from tests.support.redis_cluster import LocalRedisCluster
from tests.support.state_checks import (
    assert_same_state,
    counters,
    oracle_rows,
    redis_rows,
    wait_drained,
)
from tests.support.synthetic import dataset
from tests.support.waiting import wait_for
from tests.support.worker_process import WorkerProcess
from worker.connect import sync_redis

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

    # the customers are spread over the shards, and every primary holds some of them
    with sync_redis(s.redis) as client:
        spaces = {
            key.decode().split(":c:")[0]
            for key in client.scan_iter(match=f"{s.redis.prefix}:{{*}}:c:*", count=1000)
        }
    assert spaces == {f"{s.redis.prefix}:{{{k}}}" for k in range(16)}
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
