"""The worker's web pages as ops reach them: bind address, probes, ``/metrics``, compose's Redis.

What ``docker compose`` promises, tested without Docker:

- ``SEGSTREAM_WEB_HOST=0.0.0.0`` (the image's and compose's setting) makes ``/health`` answer on
  a real interface address of this machine, as a mapped container port needs; the CLI's default
  (127.0.0.1) does not answer there;
- ``/metrics`` of a worker that ingested, dead-lettered and scored is Prometheus text that
  Prometheus' own parser reads, with the ingestion, dead-letter, lag and scoring series;
- compose's ``redis-acl`` script yields an ACL file a real redis-server loads, and a worker
  configured as compose configures it (ACL user in the URL, password from a file, prefix ``ss``)
  runs under it and is ready.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import NoPermissionError

from devstack.ports import free_port, redis_answers
from devstack.processes import redis_server_binary
from schemas import OrderEvent, encode
from segstream.settings import Settings
from tests.support.producing import produce, records_for
from tests.support.synthetic import dataset
from tests.support.waiting import wait_for
from tests.support.worker_process import REPO, WorkerProcess
from worker.connect import sync_redis

pytestmark = pytest.mark.integration


def interface_address() -> str:
    """The first non-loopback IPv4 address of this machine (``hostname -I``)."""
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=True).stdout
    for word in out.split():
        address = ipaddress.ip_address(word)
        if address.version == 4 and not address.is_loopback:
            return word
    raise AssertionError(f"this machine has no non-loopback IPv4 address: {out!r}")


def get(host: str, port: int, path: str) -> tuple[int, str]:
    """Status and body of ``GET http://host:port/path`` (an HTTP error is an answer too)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=2) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(family: Any, **labels: str) -> float:
    found = [s.value for s in family.samples if s.labels == labels]
    assert len(found) == 1, (family.name, labels, family.samples)
    return float(found[0])


def test_web_host_0_0_0_0_answers_on_a_real_interface_and_the_default_does_not(
    settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    address = interface_address()
    everywhere: WorkerProcess = workers(settings.with_(web_host="0.0.0.0"), "everywhere")
    default: WorkerProcess = workers(
        settings.with_(group_id=settings.kafka.group_id + "-b",
                       redis_prefix=settings.redis.prefix + "-b"),
        "default",
    )  # fmt: skip
    everywhere.wait_assigned()
    default.wait_assigned()  # it serves, on 127.0.0.1
    port = everywhere.settings.web_port

    status, body = wait_for(
        lambda: (lambda r: r if r[0] == 200 else None)(get(address, port, "/health/ready")),
        60,
        f"/health/ready on {address}:{port}",
    )
    assert json.loads(body)["ready"] is True
    status, body = get(address, port, "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert get(address, port, "/health/live")[0] == 200

    with pytest.raises(urllib.error.URLError):
        get(address, default.settings.web_port, "/health")
    assert get("127.0.0.1", default.settings.web_port, "/health")[0] == 200


def test_metrics_of_a_working_worker_parse_with_ingest_dead_letter_lag_and_scoring_series(
    settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    worker: WorkerProcess = workers(settings.with_(web_host="0.0.0.0"), "metrics")
    worker.wait_assigned()
    events = dataset(40, 120, 40, seed=11)
    good = records_for(settings, events)
    orders_topic = settings.kafka.orders_topic
    bad = [(orders_topic, b"C1", b"{not json"), (orders_topic, b"C1", encode(events[0])[:-9])]
    produce(settings.kafka.bootstrap, [*good, *bad])

    def scraped() -> dict[str, Any] | None:
        found = families(worker.metrics())
        received = found["segstream_ingest_records"]
        if sample(received, outcome="valid") + sample(received, outcome="dead_lettered") < len(
            good
        ) + len(bad):
            return None
        return found if sample(found["segstream_scoring_customers_scored"]) > 0 else None

    found = wait_for(scraped, 90, "the worker to ingest and score everything")
    status, text = get(interface_address(), worker.settings.web_port, "/metrics")
    assert status == 200
    found = families(text)  # the text served on the mapped address parses the same
    dead = found["segstream_ingest_dead_letters"]
    assert sample(dead, reason="malformed") == 2
    assert sum(s.value for s in dead.samples) == 2
    topics = found["segstream_ingest_topic_records"]
    assert sample(topics, topic=orders_topic, outcome="rejected") == 2
    assert sample(topics, topic=orders_topic, outcome="valid") + sample(
        topics, topic=settings.kafka.clicks_topic, outcome="valid"
    ) == len(good)
    lag = found["segstream_ingest_lag_records"]
    assert lag.type == "gauge"
    assert {s.labels["topic"] for s in lag.samples} <= {orders_topic, settings.kafka.clicks_topic}
    assert all(s.labels["partition"].isdigit() for s in lag.samples)
    assert sample(found["segstream_up"]) == 1 and sample(found["segstream_redis_up"]) == 1
    assert sample(found["segstream_scoring_ready"]) == 1
    assert sample(found["segstream_scoring_model_info"], version="rules-v1") == 1
    assert sample(found["segstream_scoring_rounds"]) >= 1
    assert sample(found["segstream_scoring_publish_errors"]) == 0
    for name in ("segstream_scoring_changes_published", "segstream_scoring_pending_customers",
                 "segstream_scoring_outbox_rounds", "segstream_scoring_drift_max",
                 "segstream_ingest_apply_seconds", "segstream_state_counter"):  # fmt: skip
        assert name in found, name
    assert sample(found["segstream_state_counter"], name="dead_lettered") == 2
    for family in found.values():
        assert family.documentation and family.type in ("counter", "gauge", "summary")


@pytest.fixture
def compose_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A redis-server started as docker-compose.yml starts it: the ACL file of its ``redis-acl``
    script; yields the port and the password file the script wrote."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    acl = compose["services"]["redis-acl"]
    secret_dir, acl_dir = tmp_path / "secret", tmp_path / "acl"
    secret_dir.mkdir()
    acl_dir.mkdir()
    script = acl["command"][0].replace("$$", "$")
    script = script.replace("/secret/", f"{secret_dir}/").replace("/acl/", f"{acl_dir}/")
    env = {**os.environ, **acl["environment"], "SEGSTREAM_UID": str(os.getuid())}
    subprocess.run(["sh", "-euc", script], env=env, check=True, timeout=30)
    port = free_port()
    log = open(tmp_path / "redis.log", "ab")  # noqa: SIM115 - the child holds it
    args = [
        str(redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--dir", str(tmp_path), "--aclfile", str(acl_dir / "users.acl"),
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        wait_for(lambda: redis_answers(port), 15, "the compose-style redis-server")
        yield port, secret_dir / "redis-password"
    finally:
        proc.terminate()
        proc.wait(15)


def test_a_worker_configured_like_compose_runs_under_its_redis_acl_user(
    settings: Settings,
    workers: Callable[..., WorkerProcess],
    compose_redis: tuple[int, Path],
) -> None:
    port, password_file = compose_redis
    assert password_file.stat().st_mode & 0o777 == 0o400
    assert len(password_file.read_text()) == 64  # 32 random bytes, hex
    compose_like = settings.with_(
        redis_url=f"redis://segstream@127.0.0.1:{port}/0",
        redis_password_file=str(password_file),
        redis_prefix="ss",
        web_host="0.0.0.0",
    )
    anonymous = sync_redis(f"redis://127.0.0.1:{port}/0")
    try:
        assert anonymous.ping()  # the default user may PING (the healthcheck) ...
        with pytest.raises(NoPermissionError):
            anonymous.get("ss:anything")  # ... and nothing else
    finally:
        anonymous.close()

    worker: WorkerProcess = workers(compose_like, "compose")
    worker.wait_assigned()
    events = dataset(10, 30, 10, seed=3)
    produce(settings.kafka.bootstrap, records_for(settings, events))
    address, web_port = interface_address(), worker.settings.web_port

    def ready_and_scored() -> dict[str, Any] | None:
        if get(address, web_port, "/health/ready")[0] != 200:
            return None
        found = families(get(address, web_port, "/metrics")[1])
        scored = sample(found["segstream_scoring_customers_scored"])
        received = sample(found["segstream_state_counter"], name="received")
        return found if received == len(events) and scored > 0 else None

    wait_for(ready_and_scored, 90, "the compose-configured worker to ingest and score")
    client = sync_redis(compose_like.redis)
    try:
        buyer = next(e.customer_id for e in events if isinstance(e, OrderEvent))
        assert client.exists(f"ss:c:{{{buyer}}}")
    finally:
        client.close()
    log = worker.log_path.read_text(errors="replace")
    assert password_file.read_text() not in log
    assert "NOPERM" not in log and "no permissions" not in log
