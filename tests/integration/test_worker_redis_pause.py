"""The worker while its single Redis is paused (SIGSTOP), then stopped and restarted.

A Redis of the test's own (pausing the session's would break every other test); the cluster
counterpart, a primary paused, is in test_cluster_state.py.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from segstream.settings import Settings
from tests.support.producing import PacedProducer, records_for
from tests.support.redis_servers import DedicatedRedis
from tests.support.state_checks import (
    assert_same_state,
    oracle_rows,
    redis_rows,
    wait_progress,
    wait_received,
)
from tests.support.synthetic import dataset
from tests.support.waiting import wait_for
from tests.support.worker_process import WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def dedicated_redis(tmp_path: Path) -> Iterator[DedicatedRedis]:
    server = DedicatedRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def test_redis_paused_then_restarted_mid_stream_loses_and_doubles_nothing(
    settings: Settings,
    workers: Callable[..., WorkerProcess],
    dedicated_redis: DedicatedRedis,
) -> None:
    events = dataset(150, 1200, 500, seed=51)
    settings = settings.with_(redis_url=dedicated_redis.url, batch_max_records=100)
    worker = workers(settings, "steadfast")
    worker.wait_assigned()
    producer = PacedProducer(settings.kafka.bootstrap, records_for(settings, events), 150.0)
    producer.start()

    # 1. Paused: the server holds connections but answers nothing (SIGSTOP) for ~3 s.
    wait_progress(settings, len(events) // 5, worker)
    dedicated_redis.signal(signal.SIGSTOP)
    paused = producer.sent
    wait_for(lambda: producer.sent >= paused + 450, 30, "3 s of events produced while paused")
    assert worker.alive
    dedicated_redis.signal(signal.SIGCONT)

    # 2. Stopped: connections refused for ~3 s, then restarted with its append-only file.
    wait_progress(settings, len(events) // 2, worker)
    dedicated_redis.stop()
    stopped = producer.sent
    seen_degraded = wait_for(
        lambda: (worker.health() or {}).get("status") == "degraded", 30, "/health to say degraded"
    )
    wait_for(lambda: producer.sent >= stopped + 450, 30, "3 s of events produced while down")
    assert worker.alive and seen_degraded
    dedicated_redis.start()

    producer.finish()
    got = wait_received(settings, len(events))
    assert got["valid"] == len(events)
    assert_same_state(redis_rows(settings), oracle_rows(events))
    assert worker.alive
    health = worker.health()
    assert health is not None and health["status"] == "ok", health
    assert health["process"]["apply_failures"]["outage"] > 0
