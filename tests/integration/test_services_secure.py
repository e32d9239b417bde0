"""`segstream services up --secure`, then `services env`, as a user runs them: TLS + SCRAM + ACL.

The round trips use the real clients segstream uses (kafka-python, aiokafka, redis-py) with the
options :mod:`segstream.security` builds from the evaluated environment, so they prove the
lines a user evals are enough; the refusals prove the passwords and the ACL are really enforced.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from devstack.ports import kafka_answers, port_in_use
from devstack.services import LocalServices
from segstream.errors import ServiceError
from segstream.security import kafka_options
from segstream.settings import Settings
from tests.support.state_checks import assert_same_state, oracle_rows, redis_rows, wait_drained
from tests.support.synthetic import dataset
from tests.support.waiting import wait_for
from worker.connect import sync_redis

pytestmark = pytest.mark.integration

TOPIC_SETTINGS = (
    "orders_topic",
    "clicks_topic",
    "dead_letter_topic",
    "segment_changes_topic",
    "control_topic",
)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any SEGSTREAM_* setting (the test's own are given)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGSTREAM_")}
    return env | extra


def segstream(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segstream", *args],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        check=False,
    )


def evaluated(lines: str, base: dict[str, str]) -> dict[str, str]:
    """The environment of a bash that started with ``base`` and ran ``eval "$lines"``."""
    done = subprocess.run(
        ["bash", "-c", 'eval "$LINES"; env -0'],
        env=base | {"LINES": lines},
        capture_output=True,
        check=True,
    )
    pairs = (item.split("=", 1) for item in done.stdout.decode().split("\0") if "=" in item)
    return {k: v for k, v in pairs if k != "LINES"}


def exited(pid: int) -> bool:
    """True when ``pid`` is gone or a zombie (exited; reaping is its parent's business)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return True
    return state == "Z"


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str], str]]:
    """Secure services from the CLI: (run dir, the evaluated client env, `up`'s output)."""
    run_dir = tmp_path_factory.mktemp("secure-services")
    prefix = f"t{uuid.uuid4().hex[:8]}"
    base = clean_env(SEGSTREAM_RUN_DIR=str(run_dir))
    up = segstream(
        "services", "up", "--secure", "--kafka-port", "0", "--redis-port", "0",
        "--redis-prefix", prefix, env=base,
    )  # fmt: skip
    try:
        assert up.returncode == 0, up.stderr
        printed = segstream("services", "env", env=base)
        assert printed.returncode == 0, printed.stderr
        yield run_dir, evaluated(printed.stdout, base), up.stdout + printed.stdout
    finally:
        segstream("services", "down", env=base)


def test_env_lines_give_every_security_setting_and_name_password_files_not_passwords(
    secure: tuple[Path, dict[str, str], str],
) -> None:
    run_dir, env, printed = secure
    assert env["SEGSTREAM_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["SEGSTREAM_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert env["SEGSTREAM_REDIS_URL"].startswith("rediss://segstream@127.0.0.1:")
    secret_files = [
        Path(env["SEGSTREAM_KAFKA_SASL_PASSWORD_FILE"]),
        Path(env["SEGSTREAM_REDIS_PASSWORD_FILE"]),
        run_dir / "secure" / "storefront.password",
    ]
    for path in secret_files:
        assert path.parent == run_dir / "secure"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        password = path.read_text().strip()
        assert len(password) >= 32 and password not in printed
    assert "SEGSTREAM_KAFKA_SASL_PASSWORD" not in env
    assert stat.S_IMODE((run_dir / "secure").stat().st_mode) == 0o700


def test_kafka_round_trip_over_sasl_ssl_with_both_client_libraries(
    secure: tuple[Path, dict[str, str], str],
) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    settings = Settings.from_env(secure[1])
    options = kafka_options(settings.kafka)
    assert options["security_protocol"] == "SASL_SSL"
    topic = f"secure-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap, **options)
    producer.send(topic, b"over tls", key=b"k1").get(timeout=30)
    producer.close()

    async def consume() -> list[bytes | None]:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=settings.kafka.bootstrap,
            auto_offset_reset="earliest",
            **kafka_options(settings.kafka),
        )
        await consumer.start()
        try:
            batch = await consumer.getmany(timeout_ms=15_000, max_records=1)
            return [m.value for records in batch.values() for m in records]
        finally:
            await consumer.stop()

    assert asyncio.run(consume()) == [b"over tls"]
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
        **kafka_options(settings.kafka),
    )
    try:
        assert next(iter(consumer)).value == b"over tls"  # StopIteration after 10 s of nothing
    finally:
        consumer.close()


def test_kafka_refuses_a_wrong_password_and_a_client_that_skips_tls(
    secure: tuple[Path, dict[str, str], str],
) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaConnectionError

    async def starts(settings: Settings) -> bool:
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka.bootstrap, **kafka_options(settings.kafka)
        )
        try:
            await producer.start()
            return True
        except KafkaConnectionError:  # the gateway answers SASL_AUTHENTICATION_FAILED, closes
            return False
        finally:
            await producer.stop()

    right = Settings.from_env(secure[1])
    wrong = Settings.from_env(secure[1], kafka_sasl_password="not-the-password")
    assert asyncio.run(starts(right))
    assert not asyncio.run(starts(wrong))
    port = int(right.kafka.bootstrap.rsplit(":", 1)[1])
    assert not kafka_answers(port)  # plaintext ApiVersions to the TLS port gets nothing


def test_redis_acl_user_works_under_its_prefix_only_and_the_storefront_only_reads(
    secure: tuple[Path, dict[str, str], str],
) -> None:
    env = secure[1]
    settings = Settings.from_env(env)
    prefix = settings.redis.prefix
    client = sync_redis(settings.redis)
    try:
        client.hset(f"{prefix}:c:{{42}}", mapping={"segment": "loyal", "model_version": "7"})
        assert client.hget(f"{prefix}:c:{{42}}", "segment") == b"loyal"
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.set("elsewhere:key", "1")
    finally:
        client.close()

    storefront_lines = segstream("services", "env", "--user", "storefront", env=env)
    assert storefront_lines.returncode == 0, storefront_lines.stderr
    assert "KAFKA" not in storefront_lines.stdout
    storefront = sync_redis(Settings.from_env(evaluated(storefront_lines.stdout, env)).redis)
    try:
        assert storefront.hmget(f"{prefix}:c:{{42}}", ["segment", "model_version"]) == [
            b"loyal",
            b"7",
        ]
        with pytest.raises(redis.exceptions.NoPermissionError):
            storefront.hset(f"{prefix}:c:{{42}}", "segment", "hacked")
    finally:
        storefront.close()

    anonymous = redis.Redis.from_url(
        settings.redis.url.replace("segstream@", ""), ssl_ca_certs=settings.redis.ssl_ca_certs
    )
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()  # the default user is off: only the ACL users get in
    anonymous.close()


def test_eval_of_the_env_lines_makes_segstream_commands_work(
    secure: tuple[Path, dict[str, str], str],
) -> None:
    env = secure[1]
    settings = Settings.from_env(env)
    client = sync_redis(settings.redis)
    client.hset(f"{settings.redis.prefix}:c:{{e-77}}", mapping={"segment": "vip"})
    client.close()
    exported = segstream("export", "--format", "jsonl", env=env)
    assert exported.returncode == 0, exported.stderr
    assert '"customer_id":"e-77"' in exported.stdout.replace(" ", "")
    status = segstream("services", "status", env=env)
    assert status.returncode == 0 and status.stdout.count(" running ") == 3
    assert "secured" in status.stdout


def test_down_stops_the_gateway_the_broker_and_redis_and_removes_the_secrets(
    tmp_path: Path,
) -> None:
    base = clean_env(SEGSTREAM_RUN_DIR=str(tmp_path))
    up = segstream("services", "up", "--secure", "--kafka-port", "0", "--redis-port", "0", env=base)
    assert up.returncode == 0, up.stderr
    recorded = LocalServices(tmp_path).recorded()
    assert set(recorded) == {"kafka", "kafka-backend", "redis"}
    assert all(svc.alive() for svc in recorded.values())
    down = segstream("services", "down", env=base)
    assert down.returncode == 0, down.stderr
    assert down.stdout.count("stopped") == 3
    assert all(exited(svc.pid) for svc in recorded.values())
    assert not any(port_in_use(svc.port) for svc in recorded.values())
    assert not (tmp_path / "secure").exists() and not (tmp_path / "secure.json").exists()
    after = segstream("services", "env", env=base)
    assert after.returncode == 1
    assert after.stderr.startswith("segstream: error:") and "not running" in after.stderr


def test_a_taken_port_is_one_error_line_and_nothing_secure_is_left_behind(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        result = segstream(
            "services", "up", "--secure", "--kafka-port", str(taken), "--redis-port", "0",
            "--run-dir", str(tmp_path), env=clean_env(),
        )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("segstream: error:")
    assert f"port {taken} for kafka is already taken" in lines[0]
    assert LocalServices(tmp_path).recorded() == {}
    assert not (tmp_path / "secure").exists()


def test_a_secure_service_that_dies_at_start_stops_the_others_and_removes_the_secrets(
    tmp_path: Path,
) -> None:
    class BrokenRedis(LocalServices):
        def _start_redis_tls(self, port, material):  # type: ignore[no-untyped-def]
            script = "echo 'FATAL: TLS not supported'; exit 3"
            return self._spawn("redis", port, f"rediss://x:{port}", Path("/bin/sh"), ["-c", script])

    services = BrokenRedis(tmp_path)
    with pytest.raises(ServiceError, match=r"redis exited during start-up .*TLS not supported"):
        services.up(0, 0, secure=True)
    assert services.recorded() == {}
    assert not (tmp_path / "secure").exists()


# -- the whole pipeline over the secure services, against the same run in plaintext --------------
AS_OF = "2026-01-01T00:00:00Z"
#: Export columns that name a run rather than a state: model versions carry a time and a random
#: suffix, a segment's sequence counts changes, which depend on when the model arrived, and a
#: customer near a boundary may land on either side in two runs (the online model follows the
#: order in which rounds met the events), whatever the transport. The state columns must match
#: exactly; every customer must have a segment in both runs.
VOLATILE = ("model_version", "segment_seq", "segment")


def create_topics(settings: Settings) -> None:
    """The test's topics on the secure broker (the session's plain broker has them already)."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka.bootstrap, **kafka_options(settings.kafka)
    )
    k = settings.kafka
    wide = (k.orders_topic, k.clicks_topic, k.segment_changes_topic)
    narrow = (k.dead_letter_topic, k.control_topic)
    admin.create_topics(
        [NewTopic(t, num_partitions=k.partitions, replication_factor=1) for t in wide]
        + [NewTopic(t, num_partitions=1, replication_factor=1) for t in narrow]
    )
    admin.close()


def run_pipeline(
    settings: Settings, events_file: Path, events: list[Any], workers: Callable[..., Any]
) -> list[dict[str, Any]]:
    """replay -> worker -> train -> rescore -> export + report, as ops run them; the export.

    Without hysteresis a customer's segment is the nearest centroid's, whatever segment the
    rules gave it before the model arrived (that depends on timing, not on the transport); and
    training and scoring use one fixed clock, or recency would differ between the two runs.
    """
    settings = settings.with_(hysteresis_margin=0.0, scoring_as_of=AS_OF)
    env = settings.to_env(clean_env())
    worker = workers(settings)
    replayed = segstream("replay", "--file", str(events_file), "--format", "jsonl", env=env)
    assert replayed.returncode == 0, replayed.stderr
    wait_drained(settings, len(events), worker)
    assert_same_state(redis_rows(settings), oracle_rows(events))
    trained = segstream(
        "train", "--from", "redis", "--seed", "3", "--k", "3", "--as-of", AS_OF, env=env
    )
    assert trained.returncode == 0, trained.stderr
    rescored = segstream("rescore", env=env)
    assert rescored.returncode == 0, rescored.stderr

    def rescored_rows() -> list[dict[str, Any]] | None:
        done = segstream("export", "--format", "jsonl", "--as-of", AS_OF, env=env)
        assert done.returncode == 0, done.stderr
        rows = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        versions = {row["model_version"] for row in rows}
        return rows if len(versions) == 1 and str(versions.pop()).startswith("km-") else None

    rows: list[dict[str, Any]] = wait_for(rescored_rows, 90, "every customer rescored")
    assert all(row["segment"] for row in rows)
    report = segstream(
        "report", "--out", str(events_file.parent / "report"), "--as-of", AS_OF, env=env
    )
    assert report.returncode == 0, report.stderr
    assert worker.alive and "NOPERM" not in worker.tail(400)
    return sorted(
        ({k: v for k, v in row.items() if k not in VOLATILE} for row in rows),
        key=lambda row: str(row["customer_id"]),
    )


def test_replay_worker_train_rescore_export_report_over_sasl_ssl_and_rediss_match_plaintext(
    secure: tuple[Path, dict[str, str], str],
    settings: Settings,
    workers: Callable[..., Any],
    tmp_path: Path,
) -> None:
    from schemas import encode

    events = list(dataset(40, 160, 80, seed=23))
    for mode in ("plain", "secure"):  # one directory per run: its events file and report
        (tmp_path / mode).mkdir()
        (tmp_path / mode / "events.jsonl").write_bytes(b"".join(encode(e) + b"\n" for e in events))
    secured = Settings.from_env(secure[1]).with_(
        **{name: settings.get(name) for name in TOPIC_SETTINGS},
        group_id=settings.kafka.group_id,
        session_timeout_s=settings.kafka.session_timeout_s,
        model_dir=str(tmp_path / "secure" / "models"),
        run_dir=str(tmp_path / "secure" / "run"),
    )
    assert secured.kafka.security_protocol == "SASL_SSL"
    assert secured.redis.url.startswith("rediss://")
    with sync_redis(secured.redis) as client:  # the keys the other tests of this module wrote
        for key in client.scan_iter(match=f"{secured.redis.prefix}:*"):
            client.delete(key)
    create_topics(secured)

    plain_rows = run_pipeline(settings, tmp_path / "plain" / "events.jsonl", events, workers)
    secure_rows = run_pipeline(secured, tmp_path / "secure" / "events.jsonl", events, workers)
    assert len(secure_rows) == len(oracle_rows(events))
    assert secure_rows == plain_rows
    assert (tmp_path / "secure" / "report" / "report.html").is_file()
