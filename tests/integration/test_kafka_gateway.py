"""Real clients over SASL_SSL + SCRAM-SHA-512 to a real tansu, through devstack/kafka_gateway.py.

The module starts its own tansu (plaintext, advertising the gateway's address) and the gateway
(``python -m devstack.kafka_gateway``: TLS from a throwaway CA, one SCRAM-SHA-512 user), both on
free ports. aiokafka and kafka-python produce and consume through it; wrong passwords, a CA the
client does not trust, an unsupported mechanism and clients that skip TLS or SASL are refused.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.conn import create_conn
from aiokafka.errors import (
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.protocol.metadata import MetadataRequest
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError

from devstack.certs import LocalCerts, issue_local_certs
from devstack.kafka_gateway import GatewayConfig, KafkaGateway, gateway_answers
from devstack.ports import free_port, kafka_answers
from devstack.processes import tansu_binary
from devstack.sasl import User, UserStore, write_users_file
from segstream.security import kafka_options
from segstream.settings import KafkaSettings
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

USER, PASSWORD = "alice", "correct horse:battery"
#: A refused client must know within this many seconds (the gateway answers at once).
FAIL_FAST_S = 5.0
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class SecuredBroker:
    bootstrap: str
    port: int
    backend_port: int
    certs: LocalCerts
    password_file: Path
    gateway_log: Path

    def settings(self, **overrides: Any) -> KafkaSettings:
        fields: dict[str, Any] = {
            "bootstrap": self.bootstrap,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": USER,
            "sasl_password_file": str(self.password_file),
            "ssl_cafile": str(self.certs.ca),
        }
        return KafkaSettings(**(fields | overrides))

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.certs.ca))

    def log(self) -> str:
        return self.gateway_log.read_text()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    base = tmp_path_factory.mktemp("secured-kafka")
    certs = issue_local_certs(base / "certs")
    users = write_users_file(base / "users", [User(USER, "SCRAM-SHA-512", PASSWORD)])
    password_file = base / "kafka-password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    backend_port, port = free_port(), free_port()
    tansu = subprocess.Popen(
        [
            str(tansu_binary()), "broker",
            "--listener-url", f"tcp://127.0.0.1:{backend_port}",
            "--advertised-listener-url", f"tcp://localhost:{port}",
            "--storage-engine", "memory://tansu/",
        ],
        stdout=(base / "tansu.log").open("wb"), stderr=subprocess.STDOUT, cwd=base,
    )  # fmt: skip
    gateway_log = base / "gateway.log"
    gateway = subprocess.Popen(
        [
            sys.executable, "-m", "devstack.kafka_gateway",
            "--listen", f"127.0.0.1:{port}", "--backend", f"127.0.0.1:{backend_port}",
            "--cert", str(certs.server_cert), "--key", str(certs.server_key),
            "--users-file", str(users),
        ],
        stdout=subprocess.DEVNULL, stderr=gateway_log.open("wb"), cwd=ROOT,
    )  # fmt: skip
    try:
        wait_for(lambda: kafka_answers(backend_port), 15, "tansu behind the gateway")
        context = ssl.create_default_context(cafile=str(certs.ca))
        wait_for(lambda: gateway_answers(port, ssl_context=context), 15, "the kafka gateway")
        yield SecuredBroker(
            f"localhost:{port}", port, backend_port, certs, password_file, gateway_log
        )
    finally:
        _stop(gateway)
        _stop(tansu)


def _topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- records flow ---------------------------------------------------------------------------------
def test_aiokafka_round_trips_records_over_sasl_ssl_scram_sha_512_from_the_settings(
    secured: SecuredBroker,
) -> None:
    options = kafka_options(secured.settings())
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    topic = _topic("aiokafka")
    sent = [f"value-{i}".encode() for i in range(50)]

    async def round_trip() -> list[bytes]:
        producer = AIOKafkaProducer(bootstrap_servers=secured.bootstrap, **options)
        await producer.start()
        try:
            for value in sent:
                await producer.send(topic, value, key=b"same-key")
            await producer.flush()
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=secured.bootstrap, group_id=f"g-{topic}",
            auto_offset_reset="earliest", session_timeout_ms=6000, **options,
        )  # fmt: skip
        await consumer.start()
        got: list[bytes] = []
        try:
            deadline = time.monotonic() + 60
            while len(got) < len(sent) and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                got += [m.value for batch in batches.values() for m in batch if m.value]
            await consumer.commit()
            committed = await consumer.committed(TopicPartition(topic, 0))
        finally:
            await consumer.stop()
        assert committed is not None, "the group's offsets went through the gateway too"
        return got

    assert asyncio.run(round_trip()) == sent
    assert f"authenticated '{USER}'" in secured.log()


def test_kafka_python_admin_producer_and_consumer_work_over_sasl_ssl_scram_sha_512(
    secured: SecuredBroker,
) -> None:
    options = kafka_options(secured.settings())
    topic = _topic("kafka-python")
    admin = KafkaAdminClient(bootstrap_servers=secured.bootstrap, **options)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=secured.bootstrap, **options)
    try:
        for i in range(20):
            producer.send(topic, f"kp-{i}".encode()).get(timeout=30)
    finally:
        producer.close()
    consumer = KafkaConsumer(
        bootstrap_servers=secured.bootstrap, group_id=None, auto_offset_reset="earliest",
        enable_auto_commit=False, **options,
    )  # fmt: skip
    try:
        consumer.assign([KpTopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        got: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(got) < 20 and time.monotonic() < deadline:
            polled = consumer.poll(timeout_ms=500)
            got += [m.value for batch in polled.values() for m in batch]
    finally:
        consumer.close()
    assert got == [f"kp-{i}".encode() for i in range(20)]


def test_an_old_client_logs_in_with_bare_sasl_tokens_after_a_v0_handshake(
    secured: SecuredBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """Clients of Kafka 0.10 send SCRAM tokens unframed after SaslHandshake v0; they work too."""
    options = kafka_options(secured.settings())
    topic = _topic("old-client")
    admin = KafkaAdminClient(bootstrap_servers=secured.bootstrap, **options)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()
    caplog.set_level(logging.DEBUG, logger="kafka")
    old = KafkaAdminClient(bootstrap_servers=secured.bootstrap, api_version=(0, 10, 1), **options)
    try:
        assert topic in old.list_topics()
    finally:
        old.close()
    assert "SaslHandshakeRequest(version=0" in caplog.text
    assert "SaslBytesRequest" in caplog.text


# -- refusals -------------------------------------------------------------------------------------
def test_a_wrong_password_fails_fast_with_an_authentication_error(
    secured: SecuredBroker, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = kafka_options(secured.settings(sasl_password="not the password"))

    async def connect() -> None:
        conn = await create_conn("localhost", secured.port, **wrong)
        conn.close()

    started = time.monotonic()
    with pytest.raises(SaslAuthenticationFailed, match="invalid credentials"):
        asyncio.run(connect())
    assert time.monotonic() - started < FAIL_FAST_S

    async def start_producer() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=secured.bootstrap, **wrong)
        try:
            await producer.start()
        finally:
            await producer.stop()

    started = time.monotonic()
    with caplog.at_level(logging.ERROR), pytest.raises(KafkaConnectionError):
        asyncio.run(start_producer())
    assert time.monotonic() - started < FAIL_FAST_S
    assert "SaslAuthenticationFailed: Authentication failed: invalid credentials" in caplog.text

    # kafka-python is refused too; it retries until its bootstrap timeout and does not always
    # log the broker's reason (segstream's own commands check their login with aiokafka first:
    # worker/preflight.py), so the gateway's log says why
    with pytest.raises(KafkaError):
        KafkaProducer(bootstrap_servers=secured.bootstrap, bootstrap_timeout_ms=5000, **wrong)
    assert "e=invalid-proof" in secured.log()


def test_an_unknown_user_is_refused_like_a_wrong_password(secured: SecuredBroker) -> None:
    options = kafka_options(secured.settings(sasl_username="mallory"))
    with pytest.raises(SaslAuthenticationFailed, match="invalid credentials"):
        asyncio.run(create_conn("localhost", secured.port, **options))


def test_a_client_that_trusts_another_ca_fails_on_the_certificate(
    secured: SecuredBroker, tmp_path: Path
) -> None:
    stranger = issue_local_certs(tmp_path / "other-ca")
    options = kafka_options(secured.settings(ssl_cafile=str(stranger.ca)))
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        asyncio.run(create_conn("localhost", secured.port, **options))


def test_a_plaintext_client_is_refused(secured: SecuredBroker) -> None:
    async def start_producer() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=secured.bootstrap, request_timeout_ms=3000)
        try:
            await producer.start()
        finally:
            await producer.stop()

    started = time.monotonic()
    with pytest.raises(KafkaConnectionError):
        asyncio.run(start_producer())
    assert time.monotonic() - started < FAIL_FAST_S


def test_a_tls_client_that_skips_sasl_gets_no_request_through(secured: SecuredBroker) -> None:
    async def metadata_without_login() -> None:
        conn = await create_conn(
            "localhost", secured.port, security_protocol="SSL", ssl_context=secured.context()
        )
        try:
            await conn.send(MetadataRequest([]))
        finally:
            conn.close()

    with pytest.raises(KafkaConnectionError):
        asyncio.run(metadata_without_login())
    assert "request api_key=3" in secured.log()


def test_a_mechanism_no_user_has_is_refused_at_the_handshake(secured: SecuredBroker) -> None:
    options = kafka_options(secured.settings(sasl_mechanism="SCRAM-SHA-256"))
    with pytest.raises(UnsupportedSaslMechanismError):
        asyncio.run(create_conn("localhost", secured.port, **options))
    assert "SASL mechanism 'SCRAM-SHA-256' not enabled" in secured.log()


# -- the Python API -------------------------------------------------------------------------------
def test_the_in_process_gateway_relays_metadata_after_a_plain_login(
    secured: SecuredBroker,
) -> None:
    """``KafkaGateway`` without TLS, PLAIN only, in front of the same tansu (SASL_PLAINTEXT)."""
    users = UserStore([User("bob", "PLAIN", "builder")])
    config = GatewayConfig(
        listen=("127.0.0.1", 0), backend=("127.0.0.1", secured.backend_port), users=users
    )

    async def login_and_ask(password: str) -> list[tuple[str, int]]:
        async with KafkaGateway(config) as gateway:
            conn = await create_conn(
                "127.0.0.1", gateway.port, security_protocol="SASL_PLAINTEXT",
                sasl_mechanism="PLAIN", sasl_plain_username="bob", sasl_plain_password=password,
            )  # fmt: skip
            try:
                response = await conn.send(MetadataRequest([]))
            finally:
                conn.close()
            return [(broker[1], broker[2]) for broker in response.brokers]

    # tansu names itself by the address it advertises: the TLS gateway's, never its own port.
    assert asyncio.run(login_and_ask("builder")) == [("localhost", secured.port)]
    with pytest.raises(SaslAuthenticationFailed):
        asyncio.run(login_and_ask("fixer"))
