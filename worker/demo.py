"""``segstream demo``: what a new user runs first, on a fresh machine, with nothing but this repo.

It starts its own broker and Redis on free ports (never the machine's own), streams events
through them and stops everything it started, also on Ctrl-C.
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta

import click

from schemas import (
    ClickEvent,
    LineItem,
    OrderEvent,
    SchemaError,
    decode_click,
    decode_order,
    encode,
)
from worker.services import local_services


def _sample_records() -> list[tuple[str, bytes]]:
    """A few valid orders and clicks, and one of each common kind of broken record."""
    now = datetime.now(UTC).replace(microsecond=0)
    records: list[tuple[str, bytes]] = []
    for i in range(5):
        items = [LineItem(sku=f"SKU-{i}", quantity=i + 1, unit_price=12.5)]
        order = OrderEvent(
            event_id=f"demo-o-{i}", schema_version=1, customer_id=f"C{i % 3}",
            order_id=f"O{i}", event_time=now - timedelta(days=i), status="placed",
            items=items, total=12.5 * (i + 1), currency="EUR",
        )  # fmt: skip
        records.append(("orders", encode(order)))
        click_event = ClickEvent(
            event_id=f"demo-c-{i}", schema_version=1, customer_id=f"C{i % 3}",
            session_id=f"S{i}", event_time=now - timedelta(days=i), type="product_view",
            sku=f"SKU-{i}",
        )  # fmt: skip
        records.append(("clicks", encode(click_event)))
    valid = encode(OrderEvent(
        event_id="demo-bad", schema_version=1, customer_id="C9", order_id="O9",
        event_time=now, status="placed", items=[LineItem(sku="X", quantity=1, unit_price=5.0)],
        total=5.0,
    ))  # fmt: skip
    records += [
        ("orders", b"{this is not json"),
        ("orders", b"\xff\xfe\x00binary"),
        ("orders", valid.replace(b'"quantity":1', b'"quantity":0')),
        ("orders", valid.replace(b'"total":5.0', b'"total":7.5')),
        ("orders", valid.replace(b'"schema_version":1', b'"schema_version":9')),
        ("clicks", b'{"event_id":"x","schema_version":1,"session_id":"s","type":"search"}'),
    ]
    return records


@click.command("demo")
def demo() -> None:
    """Start a broker and Redis, round-trip valid and invalid events through them, stop them."""
    import redis
    from kafka import KafkaConsumer, KafkaProducer

    with (
        tempfile.TemporaryDirectory(prefix="segstream-demo-") as run_dir,
        local_services(run_dir) as started,
    ):
        kafka_url, redis_url = started["kafka"].url, started["redis"].url
        click.echo(f"broker {kafka_url}   redis {redis_url}   (started for this demo)")
        records = _sample_records()
        producer = KafkaProducer(bootstrap_servers=kafka_url, linger_ms=5)
        for topic, value in records:
            producer.send(f"demo-{topic}", value)
        producer.flush()
        producer.close()
        consumer = KafkaConsumer(
            "demo-orders", "demo-clicks", bootstrap_servers=kafka_url,
            auto_offset_reset="earliest", group_id=f"demo-{time.time_ns()}",
            session_timeout_ms=6000, consumer_timeout_ms=10000,
        )  # fmt: skip
        store = redis.Redis.from_url(redis_url)
        seen = accepted = 0
        for message in consumer:
            seen += 1
            decode = decode_order if message.topic == "demo-orders" else decode_click
            try:
                event = decode(message.value)
            except SchemaError as exc:
                click.secho(f"  rejected {message.topic}@{message.offset}: {exc}", fg="red")
            else:
                accepted += 1
                store.hincrby(f"demo:{{{event.customer_id}}}", event.kind, 1)
                click.echo(
                    f"  accepted {message.topic}@{message.offset}: {event.kind} "
                    f"{event.event_id} customer {event.customer_id}"
                )
            if seen == len(records):
                break
        consumer.close()
        keys = sorted(k.decode() for k in store.scan_iter("demo:*"))
        click.echo(
            f"{seen} records round-tripped, {accepted} valid, {seen - accepted} rejected; "
            f"Redis holds {len(keys)} customer keys"
        )
        store.close()
    click.echo("services stopped")
