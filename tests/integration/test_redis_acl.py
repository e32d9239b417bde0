"""The worker under the least-privilege Redis ACL over TLS; the storefront's read-only ACL;
and a login or permission that can never work stops a process at once with one line.

Redis is a TLS-only redis-server of this module's own (``--tls-port``, certificates from a
throwaway CA, the default user behind a password); Kafka is the session's broker.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from devstack.certs import issue_local_certs
from segstream.acl import segstream_acl, storefront_acl
from segstream.settings import Settings
from tests.support.producing import produce, records_for
from tests.support.secure_redis import TlsRedis
from tests.support.state_checks import assert_same_state, oracle_rows, redis_rows, wait_drained
from tests.support.synthetic import dataset
from tests.support.waiting import wait_for
from tests.support.worker_process import REPO, WorkerProcess
from worker.connect import sync_redis

pytestmark = pytest.mark.integration

PREFIX = "acl"
WORKER_PASSWORD = "worker-pw-7c1e"
STOREFRONT_PASSWORD = "storefront-pw-93ab"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    server = TlsRedis(tmp_path_factory.mktemp("tls-redis"))
    server.start()
    server.add_user("segstream", WORKER_PASSWORD, segstream_acl(PREFIX))
    server.add_user("storefront", STOREFRONT_PASSWORD, storefront_acl(PREFIX))
    yield server
    server.stop()


def secured(settings: Settings, server: TlsRedis, user: str, password: str) -> Settings:
    """``settings`` with Redis as ``user`` over TLS; the password in a file, not the URL."""
    secret = server.dir / f"{user}.password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    return settings.with_(
        redis_url=server.url(user),
        redis_prefix=PREFIX,
        redis_password_file=str(secret),
        redis_ssl_ca_certs=str(server.certs.ca),
    )


def run_worker_briefly(settings: Settings, timeout: float = 30.0) -> tuple[int, str, float]:
    """``segstream worker`` that is expected to stop by itself: (status, stderr, seconds)."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "segstream", "worker"],
        env=settings.to_env(), cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    return done.returncode, done.stderr, time.monotonic() - started


def assert_one_line_error(status: int, stderr: str, *needles: str) -> None:
    assert status == 1, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("segstream: error:")]
    assert len(errors) == 1, stderr[-2000:]
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_the_worker_keeps_exact_state_under_the_least_privilege_acl_over_tls(
    settings: Settings, tls_redis: TlsRedis, workers: Callable[..., WorkerProcess]
) -> None:
    s = secured(settings, tls_redis, "segstream", WORKER_PASSWORD).with_(
        model_poll_s=0.5, dirty_repair_s=2.0
    )
    events = dataset(60, 300, 120, seed=21)
    worker = workers(s)
    produce(s.kafka.bootstrap, records_for(s, events))
    wait_drained(s, len(events), worker)
    assert_same_state(redis_rows(s), oracle_rows(events))

    # scoring wrote every customer's segment (rules, no model yet) under the same user
    customers = list(oracle_rows(events))
    with sync_redis(s.redis) as client:

        def all_scored() -> bool:
            pipe = client.pipeline(transaction=False)
            for cid in customers:
                pipe.hget(f"{PREFIX}:c:{{{cid}}}", "segment")
            return all(pipe.execute())

        wait_for(all_scored, 60, "every customer scored under the ACL")
    assert worker.alive and "NOPERM" not in worker.tail(400)


def test_the_storefront_acl_reads_a_segment_and_can_write_nothing(
    settings: Settings, tls_redis: TlsRedis
) -> None:
    writer = secured(settings, tls_redis, "segstream", WORKER_PASSWORD)
    with sync_redis(writer.redis) as client:
        client.hset(f"{PREFIX}:c:{{shopper-1}}", mapping={"segment": "loyal", "model_version": "v"})
    store = secured(settings, tls_redis, "storefront", STOREFRONT_PASSWORD)
    with sync_redis(store.redis) as client:
        got = client.hmget(f"{PREFIX}:c:{{shopper-1}}", "segment", "model_version")
        assert got == [b"loyal", b"v"]
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.hset(f"{PREFIX}:c:{{shopper-1}}", "segment", "vip")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.delete(f"{PREFIX}:c:{{shopper-1}}")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.evalsha("0" * 40, 0)
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.hgetall("elsewhere:c:{shopper-1}")


def test_a_user_lacking_one_command_stops_the_worker_at_once_naming_it(
    settings: Settings, tls_redis: TlsRedis
) -> None:
    rules = [rule for rule in segstream_acl(PREFIX) if rule != "+hincrby"]
    tls_redis.add_user("lacking", "lacking-pw", rules)
    status, stderr, took = run_worker_briefly(secured(settings, tls_redis, "lacking", "lacking-pw"))
    assert_one_line_error(status, stderr, "may not run HINCRBY", "docs/security.md")
    assert took < 20, took


def test_a_wrong_redis_password_stops_the_worker_at_once_without_showing_it(
    settings: Settings, tls_redis: TlsRedis
) -> None:
    s = secured(settings, tls_redis, "segstream", "not-the-password-5d2")
    status, stderr, took = run_worker_briefly(s)
    assert_one_line_error(status, stderr, "refused the login")
    assert "not-the-password-5d2" not in stderr
    assert took < 20, took


def test_an_untrusted_redis_certificate_stops_the_worker_at_once(
    settings: Settings, tls_redis: TlsRedis, tmp_path: Path
) -> None:
    other_ca = issue_local_certs(tmp_path / "other-ca").ca
    s = secured(settings, tls_redis, "segstream", WORKER_PASSWORD).with_(
        redis_ssl_ca_certs=str(other_ca)
    )
    status, stderr, took = run_worker_briefly(s)
    assert_one_line_error(status, stderr, "TLS to Redis", "SEGSTREAM_REDIS_SSL_CA_CERTS")
    assert took < 20, took
