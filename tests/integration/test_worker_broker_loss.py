"""The broker restarted empty (tansu keeps topics in memory): reported, paused, never skipped.

A worker runs against a broker of its own. The broker is killed and started again on the same
port with no topics: the worker must say so on ``/health`` and in its log instead of looking
idle. When the topics are created again and new events arrive, their offsets start at 0, below
the fence of what was applied from the old log: the worker must pause those partitions rather
than skip the new events as already applied, and resume once the operator drops the fences.
The state at the end is exactly the oracle of every event, old and new.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from devstack.services import LocalServices
from segstream.settings import Settings
from tests.support.producing import produce, records_for
from tests.support.state_checks import (
    assert_same_state,
    counters,
    oracle_rows,
    redis_rows,
    wait_received,
)
from tests.support.synthetic import dataset
from tests.support.waiting import wait_for
from tests.support.worker_process import WorkerProcess
from worker.state import keys

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalServices]:
    services = LocalServices(tmp_path / "own-services")
    services.up(0, 0)
    yield services
    services.down()


def wait_health(
    worker: WorkerProcess, check: Callable[[dict[str, Any]], bool], timeout: float, what: str
) -> dict[str, Any]:
    """Until ``check(/health)`` holds; the last answer is in the failure message."""
    last: dict[str, Any] = {}

    def holds() -> bool:
        last.clear()
        last.update(worker.health() or {})
        return check(last)

    try:
        wait_for(holds, timeout, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last /health: {last}\n{worker.tail(30)}") from None
    return dict(last)


def create_topics(bootstrap: str, settings: Settings) -> None:
    """The test's topics on ``bootstrap``; one the worker re-created meanwhile is kept."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    names = [settings.kafka.orders_topic, settings.kafka.clicks_topic]
    names += [
        settings.kafka.dead_letter_topic,
        settings.kafka.segment_changes_topic,
        settings.kafka.control_topic,
    ]
    for name in names:
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics([NewTopic(name, num_partitions=4, replication_factor=1)])
    admin.close()


def test_a_broker_restarted_empty_is_reported_and_its_new_log_paused_not_skipped(
    settings: Settings, own_broker: LocalServices, workers: Callable[..., WorkerProcess]
) -> None:
    # own_broker before workers: the worker is stopped while its broker still runs (a worker
    # whose broker is gone waits out its shutdown timeout before it is killed)
    kafka = own_broker.recorded()["kafka"]
    settings = settings.with_(kafka_bootstrap=kafka.url, batch_max_records=200)
    create_topics(kafka.url, settings)
    old = dataset(60, 500, 150, seed=71)
    worker = workers(settings, "survivor")
    worker.wait_assigned()
    produce(kafka.url, records_for(settings, old))
    wait_received(settings, len(old))
    pid = worker.proc.pid

    os.kill(kafka.pid, signal.SIGKILL)
    wait_for(lambda: not kafka.alive(), 10, "the broker to die")
    own_broker.restart_kafka(kafka.port)

    # The worker's own clients may have the broker auto-create the topics again before the
    # watch looks: then the empty new logs already show as reset behind their fences. Either
    # way the worker says what happened instead of looking idle.
    inputs = {settings.kafka.orders_topic, settings.kafka.clicks_topic}
    health = wait_health(
        worker,
        lambda h: inputs <= set(h.get("missing_topics") or []) or bool(h.get("reset_partitions")),
        60,
        "/health to report the missing input topics or their empty new logs",
    )
    assert health["status"] == "degraded"
    log_text = worker.log_path.read_text(errors="replace")
    assert "do not exist on the broker" in log_text or "the broker lost its data" in log_text
    # The topics come back and new events arrive; their offsets start at 0 again.
    create_topics(kafka.url, settings)
    new = [e for e in dataset(60, 300, 100, seed=72) if e.event_id not in {o.event_id for o in old}]
    produce(kafka.url, records_for(settings, new))

    health = wait_health(
        worker,
        lambda h: bool(h.get("reset_partitions")),
        90,
        "/health to report partitions reset behind the fence",
    )
    assert health["status"] == "degraded"
    before = counters(settings)
    assert before["received"] == len(old), "records of the new log were skipped as duplicates"
    assert before["duplicates"] == 0
    assert "the topic was re-created or the broker lost its data" in worker.log_path.read_text(
        errors="replace"
    )

    # The operator drops the fences (the fix /health names); the worker resumes by itself.
    client = redis.Redis.from_url(settings.redis.url)
    for topic in (settings.kafka.orders_topic, settings.kafka.clicks_topic):
        client.delete(keys.fence(settings.redis.prefix, topic))
    client.close()
    wait_received(settings, len(old) + len(new), timeout=120)
    assert_same_state(redis_rows(settings), oracle_rows([*old, *new]))
    wait_health(worker, lambda h: h.get("status") == "ok", 60, "/health to be ok again")
    assert worker.alive and worker.proc.pid == pid
