"""The worker under faults: SIGKILL mid-stream, a group member dying, Redis paused and restarted.

Events are produced at a steady pace in the background while the faults happen, so every fault
lands mid-stream; at the end the state must equal the oracle exactly (nothing lost, nothing
counted twice) and the Redis counters must add up to what was produced; so must the shop's
recommendation counts (every placed order counted once).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from segstream.settings import Settings
from tests.support.modes import MODES, on_redis
from tests.support.producing import PacedProducer, records_for
from tests.support.state_checks import (
    assert_same_state,
    assert_shop_counts_match_oracle,
    counters,
    oracle_rows,
    redis_rows,
    wait_progress,
    wait_received,
)
from tests.support.synthetic import dataset
from tests.support.waiting import wait_for
from tests.support.worker_process import WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: A recommendation half-life of ~27,000 years: the dataset's orders, spread over months, all
#: weigh about their units, so an order counted twice or lost shows in the counts (with the
#: default week, an old order's weight is too small to see).
NO_DECAY = 10_000_000.0


@pytest.fixture(autouse=True)
def _remove_keys_afterwards(redis_client: object) -> None:
    """``redis_client`` deletes every key under this test's prefix when the test ends."""


@pytest.fixture(params=MODES)
def settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """Every test here runs on a single Redis and on a 3-primary Redis Cluster."""
    return on_redis(request, settings)


def test_sigkill_three_times_mid_stream_then_restart_gives_the_oracle_state(
    settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    events = dataset(150, 1200, 500, seed=31)
    settings = settings.with_(batch_max_records=50, recommend_half_life_days=NO_DECAY)
    # The last fifth is held back until after the third kill: every kill lands mid-stream
    # however slowly this machine starts workers (each restart waits for the dead member's
    # session to expire).
    held = len(events) * 4 // 5
    producer = PacedProducer(
        settings.kafka.bootstrap, records_for(settings, events), 60.0, hold_from=held
    )
    producer.start()
    rng = random.Random(4)
    killed_at = []
    for round_ in range(3):
        worker = workers(settings, f"doomed-{round_}")
        worker.wait_assigned()
        now = counters(settings)["received"]
        target = now + rng.randint(50, 300)
        wait_progress(settings, min(target, held - 1), worker)
        worker.kill()
        killed_at.append(counters(settings)["received"])
    assert killed_at[-1] <= held < len(events), "the stream ended before the last kill"
    survivor = workers(settings, "final")
    producer.finish()  # releases the held-back records
    survivor.wait_assigned()
    got = wait_received(settings, len(events))
    assert_same_state(redis_rows(settings), oracle_rows(events))
    assert got["valid"] == len(events), (got, killed_at)
    assert_shop_counts_match_oracle(settings, events)


def test_survivor_takes_over_when_one_of_two_workers_is_killed(
    settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    events = dataset(150, 1200, 500, seed=41)
    settings = settings.with_(batch_max_records=100, recommend_half_life_days=NO_DECAY)
    first, second = workers(settings, "first"), workers(settings, "second")
    first.wait_assigned()
    second.wait_assigned()
    wait_for(
        lambda: all(len((w.health() or {}).get("assigned", [])) < 8 for w in (first, second)),
        60,
        "the two workers to split the partitions",
    )
    producer = PacedProducer(settings.kafka.bootstrap, records_for(settings, events), 200.0)
    producer.start()
    wait_progress(settings, len(events) // 3, first)
    first.kill()
    producer.finish()
    got = wait_received(settings, len(events))
    assert_same_state(redis_rows(settings), oracle_rows(events))
    assert got["valid"] == len(events)
    assert_shop_counts_match_oracle(settings, events)
    health = second.health()
    assert health is not None and len(health["assigned"]) == 8, health
    assert second.alive


def test_broker_paused_mid_stream_loses_and_doubles_nothing(
    settings: Settings, workers: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    """A broker of its own (the session's is shared), frozen with SIGSTOP for ~4 s mid-stream."""
    from kafka.admin import KafkaAdminClient, NewTopic

    from devstack.services import local_services

    events = dataset(100, 800, 300, seed=61)
    with local_services(tmp_path / "own-services") as started:
        broker = started["kafka"]
        settings = settings.with_(kafka_bootstrap=broker.url, batch_max_records=100)
        admin = KafkaAdminClient(bootstrap_servers=broker.url)
        admin.create_topics(
            [
                NewTopic(name, num_partitions=n, replication_factor=1)
                for name, n in [
                    (settings.kafka.orders_topic, 4),
                    (settings.kafka.clicks_topic, 4),
                    (settings.kafka.dead_letter_topic, 1),
                    (settings.kafka.control_topic, 1),
                    (settings.kafka.segment_changes_topic, 4),
                ]
            ]
        )
        admin.close()
        worker = workers(settings, "patient")
        worker.wait_assigned()
        producer = PacedProducer(broker.url, records_for(settings, events), 150.0)
        producer.start()
        wait_progress(settings, len(events) // 4, worker)
        os.kill(broker.pid, signal.SIGSTOP)
        try:
            # ~4 s frozen: the worker must neither exit nor lose its place.
            thaw_at = time.monotonic() + 4.0
            wait_for(lambda: not worker.alive or time.monotonic() >= thaw_at, 10, "the pause")
            assert worker.alive, worker.tail()
        finally:
            os.kill(broker.pid, signal.SIGCONT)
        producer.finish()
        got = wait_received(settings, len(events))
        assert got["valid"] == len(events)
        assert_same_state(redis_rows(settings), oracle_rows(events))
        assert worker.alive
        worker.stop()
