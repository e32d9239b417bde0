"""Shared fixtures and the test tiers.

Services: one real broker and one real Redis per test session (per xdist worker process),
started lazily by the first test that asks for them, isolated per test. The session starts its
own tansu broker and redis-server on free ports under its own temporary directory (or, with
``SEGSTREAM_TEST_DOCKER=1`` and a Docker engine, Apache Kafka and Redis containers through
testcontainers) and stops them at the end. It never uses the machine's Redis on 6379. Each test
gets its own topics, consumer group id and Redis key prefix, so tests cannot see each other.

Tiers: every test under ``tests/unit`` that is not marked ``slow`` is marked ``unit``
(``./dev test -m unit``). A unit test needs no service fixture (checked at collection) and
opens no network socket (connect, bind and sendto on IP sockets raise; Unix sockets, which
event loops and multiprocessing use among themselves, stay allowed).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack.services import LocalServices
from segstream.settings import Settings
from tests.support.redis_cluster import LocalRedisCluster
from tests.support.service_backend import choose_backend, docker_engine_answers
from tests.support.worker_process import WorkerProcess, worker_pool

#: Short on purpose: the local broker's group join waits half the session timeout.
TEST_SESSION_TIMEOUT_S = 3.0

UNIT_DIR = Path(__file__).resolve().parent / "unit"
#: The fixtures every broker or Redis fixture depends on: a unit test must not reach them.
SERVICE_FIXTURES = frozenset({"services", "redis_cluster"})


# -- tiers ---------------------------------------------------------------------------------------
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the unit tier; refuse a unit test that would start the session's services."""
    misplaced = []
    for item in items:
        if not item.path.is_relative_to(UNIT_DIR) or item.get_closest_marker("slow"):
            continue
        item.add_marker(pytest.mark.unit)
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            misplaced.append(item.nodeid)
    if misplaced:
        raise pytest.UsageError(
            f"unit tests must not use the session's broker or Redis: {', '.join(misplaced)}"
        )
    items[:] = slow_modules_first(items)


def slow_modules_first(items: list[pytest.Item]) -> list[pytest.Item]:
    """The modules holding a slow test first, each kept whole (its fixtures start once).

    pytest-xdist's workers run their share of the tests from the front and idle ones steal from
    the back: so the minute-long tests start early and short ones fill the end of the run,
    instead of a worker starting the demos when the others are nearly done.
    """
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    return sorted(items, key=lambda item: item.path not in slow)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """With ``-m unit``, test modules outside tests/unit are not imported (none is selected)."""
    if str(config.getoption("markexpr", "")).strip() != "unit":
        return None
    if collection_path.name.startswith("test_") and collection_path.suffix == ".py":
        return not collection_path.resolve().is_relative_to(UNIT_DIR) or None
    return None


def _no_network(name: str, original: Callable[..., object]) -> Callable[..., object]:
    def refuse(sock: socket.socket, *args: object, **kwargs: object) -> object:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            raise OSError(f"unit tests open no network sockets: {name}{args!r} was refused")
        return original(sock, *args, **kwargs)

    return refuse


@pytest.fixture(autouse=True)
def _unit_tests_stay_off_the_network(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a ``unit`` test, IP sockets cannot connect, bind or send (Unix sockets still can)."""
    if request.node.get_closest_marker("unit") is None:
        return
    for name in ("connect", "connect_ex", "bind", "sendto"):
        monkeypatch.setattr(socket.socket, name, _no_network(name, getattr(socket.socket, name)))


# -- services ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServiceEndpoints:
    backend: str
    kafka_bootstrap: str
    redis_url: str


@contextlib.contextmanager
def _docker_services() -> Iterator[ServiceEndpoints]:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.redis import RedisContainer

    with (
        KafkaContainer("apache/kafka:3.9.1").with_kraft() as kafka,
        RedisContainer("redis:7.4-alpine") as redis_container,
    ):
        host = redis_container.get_container_host_ip()
        port = redis_container.get_exposed_port(6379)
        yield ServiceEndpoints("docker", kafka.get_bootstrap_server(), f"redis://{host}:{port}/0")


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceEndpoints]:
    """The broker and Redis this test session started (never a shared global instance)."""
    wants_docker = os.environ.get("SEGSTREAM_TEST_DOCKER", "") not in ("", "0")
    backend = choose_backend(os.environ, docker_engine_answers() if wants_docker else False)
    if backend == "docker":
        with _docker_services() as endpoints:
            yield endpoints
        return
    local = LocalServices(tmp_path_factory.mktemp("services"))
    started = local.up(0, 0)
    try:
        yield ServiceEndpoints("local", started["kafka"].url, started["redis"].url)
    finally:
        local.down()


@pytest.fixture(scope="session")
def kafka_bootstrap(services: ServiceEndpoints) -> str:
    return services.kafka_bootstrap


@pytest.fixture(scope="session")
def redis_url(services: ServiceEndpoints) -> str:
    return services.redis_url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    """A 3-primary Redis Cluster (no replicas) of this session, started by the first test that
    asks for it; shared, so a test that kills or pauses a node starts its own
    :class:`LocalRedisCluster` instead. Isolate by key prefix, as on the single Redis."""
    with LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster"), primaries=3) as cluster:
        yield cluster


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> str:
    """A short token unique to this test, safe in topic names, group ids and key prefixes."""
    name = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name)[:40].strip("-")
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_topic(kafka_bootstrap: str, unique: str) -> Iterator[Callable[..., str]]:
    """Create uniquely named topics for this test; they are deleted when it ends."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id=f"admin-{unique}")
    created: list[str] = []

    def make(base: str = "t", partitions: int = 4) -> str:
        name = f"{base}-{unique}"
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        created.append(name)
        return name

    yield make
    with contextlib.suppress(Exception):
        if created:
            admin.delete_topics(created)
    admin.close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``segstream worker`` processes; all are stopped after the test."""
    yield from worker_pool(tmp_path)


@pytest.fixture
def group_id(unique: str) -> str:
    return f"group-{unique}"


@pytest.fixture
def redis_prefix(unique: str) -> str:
    return f"test-{unique}"


@pytest.fixture
def redis_client(redis_url: str, redis_prefix: str) -> Iterator[object]:
    """A client on the session's Redis; this test's keys are removed afterwards."""
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    for key in client.scan_iter(match=f"{redis_prefix}*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture
def settings(
    kafka_bootstrap: str,
    redis_url: str,
    redis_prefix: str,
    group_id: str,
    make_topic: Callable[..., str],
    tmp_path: Path,
) -> Settings:
    """Settings pointing at this test's own topics, group, key prefix and model directory."""
    return Settings.of(
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        orders_topic=make_topic("orders"),
        clicks_topic=make_topic("clicks"),
        dead_letter_topic=make_topic("dead-letter", partitions=1),
        segment_changes_topic=make_topic("segment-changes"),
        control_topic=make_topic("control", partitions=1),
        # every topic a worker consumes is the test's own: a worker reading the shared default
        # "profiles" topic would apply other tests' profiles under this test's prefix
        profiles_topic=make_topic("profiles"),
        erase_requests_topic=make_topic("erase-requests"),
        campaign_assignments_topic=make_topic("campaign-assignments"),
        group_id=group_id,
        session_timeout_s=TEST_SESSION_TIMEOUT_S,
        run_dir=str(tmp_path / "run"),
        model_dir=str(tmp_path / "models"),
    )
