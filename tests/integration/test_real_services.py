"""The test run's own broker and Redis work with every client segstream uses.

kafka-python (producers, admin), faust-streaming (the worker's framework, here a real agent in
its own process) and redis-py all talk to the services started by the session fixtures.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from devstack.ports import free_port
from schemas import OrderEvent, decode_order, encode

pytestmark = pytest.mark.integration


def _order(i: int) -> OrderEvent:
    from datetime import UTC, datetime

    from schemas import LineItem

    return OrderEvent(
        event_id=f"e{i}", schema_version=1, customer_id=f"C{i % 7}", order_id=f"O{i}",
        event_time=datetime(2025, 1, 1, tzinfo=UTC), status="placed",
        items=[LineItem(sku="S", quantity=1, unit_price=float(i))], total=float(i),
    )  # fmt: skip


def test_kafka_python_round_trip_keeps_keys_and_bytes(
    kafka_bootstrap: str, make_topic: Callable[..., str], group_id: str
) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    topic = make_topic("orders", partitions=3)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    sent = [_order(i) for i in range(200)]
    futures = [producer.send(topic, encode(e), key=e.customer_id.encode()) for e in sent]
    for future in futures:
        future.get(timeout=10)
    producer.close()

    consumer = KafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, group_id=group_id,
        auto_offset_reset="earliest", session_timeout_ms=6000, consumer_timeout_ms=15000,
    )  # fmt: skip
    received: dict[str, tuple[bytes, int]] = {}
    partition_of_key: dict[bytes, int] = {}
    for message in consumer:
        event = decode_order(message.value)
        received[event.event_id] = (message.key, message.partition)
        # Keyed by customer: one customer's events all land in one partition (ordering).
        assert partition_of_key.setdefault(message.key, message.partition) == message.partition
        if len(received) == len(sent):
            break
    consumer.close()
    assert set(received) == {e.event_id for e in sent}


def test_redis_read_write(redis_client, redis_prefix: str) -> None:  # type: ignore[no-untyped-def]
    key = f"{redis_prefix}:c:{{C1}}"
    redis_client.hset(key, mapping={"frequency": 2, "monetary_cents": 1999})
    assert redis_client.hincrby(key, "frequency", 1) == 3
    assert redis_client.hget(key, "monetary_cents") == b"1999"
    # The machine's own Redis on 6379 is never the one under test.
    assert redis_client.connection_pool.connection_kwargs["port"] != 6379


FAUST_APP = textwrap.dedent(
    """
    import faust, redis
    app = faust.App(
        "{app_id}", broker="kafka://{bootstrap}", store="memory://", web_port={web_port},
        broker_session_timeout=6, topic_partitions=1, topic_replication_factor=1,
    )
    source = app.topic("{source}", value_serializer="raw")
    sink = app.topic("{sink}", value_serializer="raw")
    store = redis.Redis.from_url("{redis_url}")

    @app.agent(source)
    async def relay(stream):
        async for value in stream:
            store.incr("{counter}")
            await sink.send(value=value.upper())
    """
)


def test_faust_agent_consumes_writes_redis_and_produces(
    kafka_bootstrap: str,
    redis_url: str,
    redis_client,  # type: ignore[no-untyped-def]
    redis_prefix: str,
    make_topic: Callable[..., str],
    unique: str,
    tmp_path: Path,
) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    source, sink = make_topic("faust-in", partitions=1), make_topic("faust-out", partitions=1)
    counter = f"{redis_prefix}:faust-count"
    module = tmp_path / "faust_probe.py"
    module.write_text(
        FAUST_APP.format(
            app_id=f"probe-{unique}",
            bootstrap=kafka_bootstrap,
            web_port=free_port(),
            source=source,
            sink=sink,
            redis_url=redis_url,
            counter=counter,
        )
    )
    log = tmp_path / "faust.log"
    worker = subprocess.Popen(
        [sys.executable, "-m", "faust", "-A", "faust_probe", "worker", "-l", "warn",
         "--without-web"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)},
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        for i in range(20):
            producer.send(source, f"hello-{i}".encode()).get(timeout=10)
        producer.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and int(redis_client.get(counter) or 0) < 20:
            assert worker.poll() is None, log.read_text()
            time.sleep(0.2)
        assert int(redis_client.get(counter) or 0) == 20

        consumer = KafkaConsumer(
            sink, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
            group_id=f"check-{unique}", session_timeout_ms=6000, consumer_timeout_ms=15000,
        )  # fmt: skip
        out = set()
        for message in consumer:
            out.add(message.value)
            if len(out) == 20:
                break
        consumer.close()
        assert out == {f"HELLO-{i}".encode() for i in range(20)}
    finally:
        worker.terminate()
        worker.wait(timeout=30)
