"""Producers against the real broker: file replay, synthetic, topic replay, lost deliveries."""

from __future__ import annotations

import csv
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from devstack.services import LocalServices
from producers.cli import produce, replay
from producers.file_source import FileSource
from producers.readers import Reject
from producers.sinks import KafkaSink, KafkaSinkConfig
from producers.synthetic import SyntheticConfig, generate
from schemas import ClickEvent, OrderEvent, decode_click, decode_order
from segstream.settings import Settings

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def consume(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0) -> list[Any]:
    """Every record of ``topic`` from the start; waits until ``expected`` arrived, then a bit
    longer, so a test also sees records beyond the ones it expects."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        settle: float | None = None
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
            if len(records) >= expected:
                settle = settle or time.monotonic() + 1.0
                if time.monotonic() > settle:
                    break
        return records
    finally:
        consumer.close()


def _args(settings: Settings) -> list[str]:
    return [
        "--kafka-bootstrap", settings.kafka.bootstrap,
        "--orders-topic", settings.kafka.orders_topic,
        "--clicks-topic", settings.kafka.clicks_topic,
        "--no-progress",
    ]  # fmt: skip


def _run(command: Any, args: list[str]) -> Result:
    result = CliRunner().invoke(command, args, catch_exceptions=False)
    return result


def _expected(path: Path, fmt: str) -> tuple[list[OrderEvent | ClickEvent], list[Reject]]:
    items = list(FileSource(path, fmt))
    events = [i for i in items if not isinstance(i, Reject)]
    return events, [i for i in items if isinstance(i, Reject)]  # type: ignore[return-value]


def test_replay_orders_file_sends_exactly_the_expected_events(
    settings: Settings, tmp_path: Path
) -> None:
    rejects = tmp_path / "rejects.csv"
    fixture = FIXTURES / "orders_small.csv"
    result = _run(replay, [*_args(settings), "--file", str(fixture), "--rejects", str(rejects)])
    assert result.exit_code == 0, result.output
    assert "rows read     17" in result.output
    assert "events sent   7 (confirmed 7, failed 0)" in result.output
    assert "rows rejected 10" in result.output

    records = consume(settings.kafka.bootstrap, settings.kafka.orders_topic, 7)
    got = sorted((decode_order(r.value) for r in records), key=lambda e: e.event_id)
    expected, _ = _expected(fixture, "orders-csv")
    assert got == sorted(expected, key=lambda e: e.event_id)  # count, ids and every field
    assert all(r.key == decode_order(r.value).customer_id.encode() for r in records)
    # one customer's events share a partition, in file order
    c1 = [decode_order(r.value) for r in sorted(records, key=lambda r: r.offset)
          if r.key == b"C1"]  # fmt: skip
    assert len({r.partition for r in records if r.key == b"C1"}) == 1
    assert [(e.order_id, e.status) for e in c1] == [("O1", "placed"), ("O3", "placed"),
                                                   ("O1", "returned")]  # fmt: skip

    with rejects.open() as f:
        rows = {int(r["line"]): r for r in csv.DictReader(f)}
    assert sorted(rows) == list(range(8, 18))
    assert "unparsable timestamp" in rows[8]["reason"]
    assert "non-numeric amount" in rows[9]["reason"]
    assert rows[10]["reason"] == "missing customer_id"
    assert rows[11]["row"] == "C5,,2024-03-04T10:00:00Z,10.00,EUR,placed"


def test_replaying_the_same_file_twice_gives_the_same_ids(
    settings: Settings, tmp_path: Path
) -> None:
    fixture = FIXTURES / "orders_small.csv"
    for run in range(2):
        args = [*_args(settings), "--file", str(fixture), "--rejects", str(tmp_path / f"r{run}")]
        assert _run(replay, args).exit_code == 0
    records = consume(settings.kafka.bootstrap, settings.kafka.orders_topic, 14)
    ids = Counter(decode_order(r.value).event_id for r in records)
    expected, _ = _expected(fixture, "orders-csv")
    assert ids == Counter({e.event_id: 2 for e in expected})


def test_replay_clicks_file_to_the_clicks_topic(settings: Settings, tmp_path: Path) -> None:
    fixture = FIXTURES / "clicks_small.csv"
    args = [*_args(settings), "--file", str(fixture), "--format", "clicks-csv",
            "--rejects", str(tmp_path / "r.csv")]  # fmt: skip
    result = _run(replay, args)
    assert result.exit_code == 0, result.output
    records = consume(settings.kafka.bootstrap, settings.kafka.clicks_topic, 4)
    expected, rejects = _expected(fixture, "clicks-csv")
    assert sorted((decode_click(r.value) for r in records), key=lambda e: e.event_id) == sorted(
        expected, key=lambda e: e.event_id
    )
    assert {r.key for r in records} == {b"C1", b"A-77"}  # anonymous visitors keyed by their id
    assert len(rejects) == 3


def test_replay_online_retail_groups_invoices(settings: Settings, tmp_path: Path) -> None:
    fixture = FIXTURES / "online_retail_small.csv"
    rejects = tmp_path / "rejects.csv"
    args = [*_args(settings), "--file", str(fixture), "--format", "online-retail",
            "--rejects", str(rejects)]  # fmt: skip
    result = _run(replay, args)
    assert result.exit_code == 0, result.output
    assert "rows unsent   2 (no CustomerID" in result.output
    records = consume(settings.kafka.bootstrap, settings.kafka.orders_topic, 6)
    got = {e.order_id: e for e in (decode_order(r.value) for r in records)}
    assert sorted(got) == sorted(["536365", "536366", "536367", "C536379", "C536383", "536394"])
    assert (got["536365"].total, len(got["536365"].items)) == (57.64, 3)
    assert (got["536367"].total, len(got["536367"].items)) == (70.88, 2)
    assert (got["C536379"].status, got["C536379"].total) == ("returned", 27.5)
    assert {e.customer_id for e in got.values()} == {"17850", "13047", "14527", "15311", "17514"}
    with rejects.open() as f:
        lines = sorted(int(r["line"]) for r in csv.DictReader(f))
    assert lines == [9, 12, 13, 14, 15, 16, 17]


def test_synthetic_to_kafka_sends_every_event_keyed_by_customer(
    settings: Settings, tmp_path: Path
) -> None:
    start = "2025-09-01T00:00:00Z"
    labels = tmp_path / "labels.csv"
    args = [*_args(settings), "--customers", "60", "--days", "30", "--seed", "4",
            "--start", start, "--labels", str(labels)]  # fmt: skip
    result = _run(produce, ["synthetic", *args])
    assert result.exit_code == 0, result.output
    data = generate(
        SyntheticConfig(customers=60, days=30, seed=4, start=datetime(2025, 9, 1, tzinfo=UTC))
    )
    orders = consume(settings.kafka.bootstrap, settings.kafka.orders_topic, data.n_orders)
    clicks = consume(settings.kafka.bootstrap, settings.kafka.clicks_topic, data.n_clicks)
    assert len(orders) == data.n_orders and len(clicks) == data.n_clicks
    sent = {(r.key, r.value) for r in orders + clicks}
    assert sent == {(key, value) for _, key, value in data.records()}
    with labels.open() as f:
        assert {r["customer_id"]: r["persona"] for r in csv.DictReader(f)} == data.labels


def test_topic_replay_copies_a_range_with_keys(settings: Settings, make_topic: Any) -> None:
    fixture = FIXTURES / "orders_small.csv"
    args = [*_args(settings), "--file", str(fixture), "--rejects", "/dev/null"]
    assert _run(replay, args).exit_code == 0
    source = consume(settings.kafka.bootstrap, settings.kafka.orders_topic, 7)
    assert len(source) == 7

    target = make_topic("replayed")
    common = ["--kafka-bootstrap", settings.kafka.bootstrap, "--no-progress"]
    orders = settings.kafka.orders_topic
    result = _run(replay, [*common, "--from-topic", orders, "--start-offset", "0",
                           "--to-topic", target])  # fmt: skip
    assert result.exit_code == 0, result.output
    copied = consume(settings.kafka.bootstrap, target, 7)
    assert Counter((r.key, r.value) for r in copied) == Counter((r.key, r.value) for r in source)

    # from offset 1: every partition loses its first record
    partial = make_topic("partial")
    result = _run(replay, [*common, "--from-topic", orders, "--start-offset", "1",
                           "--to-topic", partial])  # fmt: skip
    assert result.exit_code == 0, result.output
    firsts = {r.partition for r in source}
    assert len(consume(settings.kafka.bootstrap, partial, 7 - len(firsts))) == 7 - len(firsts)

    # a time window after everything: nothing to copy, and it still ends
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    empty = make_topic("empty")
    result = _run(replay, [*common, "--from-topic", orders, "--start-time", later,
                           "--to-topic", empty])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "events sent   0" in result.output
    # a time window that covers everything
    earlier = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    window = make_topic("window")
    result = _run(replay, [*common, "--from-topic", orders, "--start-time", earlier,
                           "--end-time", later, "--to-topic", window])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(consume(settings.kafka.bootstrap, window, 7)) == 7


def test_unconfirmed_sends_are_counted_as_failures(tmp_path: Path) -> None:
    """A broker that goes away: every record it never acknowledged is a failure, none is lost."""
    services = LocalServices(tmp_path / "own")
    started = services.up(0, 0)
    try:
        config = KafkaSinkConfig(
            bootstrap=started["kafka"].url, orders_topic="o", clicks_topic="c",
            delivery_timeout_ms=3000,
        )  # fmt: skip
        sink = KafkaSink(config)
        sink.send_raw("o", b"k", b"first")
        sink._producer.flush()  # metadata known, one record confirmed
    finally:
        services.down()
    for i in range(25):
        sink.send_raw("o", b"k", b"lost %d" % i)
    result = sink.close()
    assert (result.sent, result.failed, result.delivered) == (26, 25, 1)
    assert result.errors and "KafkaTimeoutError" in result.errors[0]
