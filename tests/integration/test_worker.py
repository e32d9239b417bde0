"""``segstream worker`` as a subprocess against the real broker and Redis: exactness end to end.

Every test runs the worker exactly as ops would (``python -m segstream worker`` with the test's
settings in ``SEGSTREAM_*`` variables), produces with kafka-python and reads the state back from
Redis, comparing it customer by customer with an oracle: a pandas group-by for RFM, and the
in-memory state store (the pure core's reference semantics) for every exported column.

The helpers here are shared by ``test_worker_faults.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from kafka import KafkaConsumer, KafkaProducer

from devstack.services import free_port
from schemas import ClickEvent, DeadLetter, LineItem, OrderEvent, decode, encode
from segstream.settings import ENV, Settings
from tests import state_events
from worker.core import Batch, InMemoryStateStore, Record, features
from worker.state.store import StateReader

pytestmark = pytest.mark.integration

AS_OF = datetime(2026, 6, 1, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]
Event = OrderEvent | ClickEvent


@pytest.fixture(autouse=True)
def _remove_keys_afterwards(redis_client: object) -> None:
    """``redis_client`` deletes every key under this test's prefix when the test ends."""


# -- the worker as a subprocess ------------------------------------------------------------------
def settings_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    for f in fields(settings):
        value = getattr(settings, f.name)
        if f.name in ENV:
            env[ENV[f.name]] = (
                ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)
            )
    return env


class WorkerProcess:
    """One ``segstream worker`` process with its own web port and log file."""

    def __init__(self, settings: Settings, log_dir: Path, name: str) -> None:
        self.settings = settings.with_(web_port=free_port())
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "segstream", "worker"],
            env=settings_env(self.settings),
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def health(self) -> dict[str, Any] | None:
        url = f"http://127.0.0.1:{self.settings.web_port}/health"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                data: dict[str, Any] = json.load(resp)
                return data
        except OSError:
            return None

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.settings.web_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return str(resp.read().decode())

    def wait_assigned(self, timeout: float = 60.0) -> dict[str, Any]:
        """Until this worker's ingest consumer owns at least one partition."""

        def ready() -> dict[str, Any] | None:
            assert self.alive, f"{self.name} exited early:\n{self.tail()}"
            h = self.health()
            return h if h and h.get("assigned") else None

        health: dict[str, Any] = wait_for(ready, timeout, f"{self.name} to be assigned partitions")
        return health

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> int | None:
        if self.alive:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def worker_pool(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker processes for a test; all are stopped (SIGTERM, then SIGKILL) after it."""
    started: list[WorkerProcess] = []

    def start(settings: Settings, name: str = "worker") -> WorkerProcess:
        w = WorkerProcess(settings, tmp_path / "logs", f"{name}-{len(started)}")
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    yield from worker_pool(tmp_path)


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


# -- producing -----------------------------------------------------------------------------------
def key_of(event: Event) -> bytes:
    return (event.customer_id or getattr(event, "anonymous_id", None) or "").encode()


def produce(bootstrap: str, items: Sequence[tuple[str, bytes | None, bytes | None]]) -> None:
    """Send ``(topic, key, value)`` records and wait until all are acknowledged."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    for topic, key, value in items:
        producer.send(topic, value=value, key=key)
    producer.flush(60)
    producer.close()


def records_for(settings: Settings, events: Sequence[Event]) -> list[tuple[str, bytes, bytes]]:
    out = []
    for ev in events:
        topic = settings.orders_topic if isinstance(ev, OrderEvent) else settings.clicks_topic
        out.append((topic, key_of(ev), encode(ev)))
    return out


class PacedProducer(threading.Thread):
    """Produces records at a steady rate in the background, so kills land mid-stream.

    With ``hold_from=N`` it stops before record N until :meth:`release` is called, so a test
    can be sure the stream is still going at its last fault, however slowly the machine runs.
    """

    def __init__(
        self,
        bootstrap: str,
        items: Sequence[tuple[str, bytes, bytes]],
        per_second: float,
        hold_from: int | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.items, self.per_second = bootstrap, items, per_second
        self.hold_from = hold_from
        self._released = threading.Event()
        self.sent = 0
        self.error: BaseException | None = None

    def release(self) -> None:
        """Let a producer created with ``hold_from`` send the rest."""
        self._released.set()

    def run(self) -> None:
        try:
            producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, acks="all")
            start = time.monotonic()
            for i, (topic, key, value) in enumerate(self.items):
                if i == self.hold_from:
                    producer.flush(60)
                    if not self._released.wait(timeout=600):
                        raise TimeoutError(f"never released after {i} records")
                    start = time.monotonic() - i / self.per_second
                due = start + i / self.per_second
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing the offered load, not waiting for a condition
                producer.send(topic, value=value, key=key)
                self.sent = i + 1
            producer.flush(60)
            producer.close()
        except BaseException as exc:
            self.error = exc

    def finish(self, timeout: float = 120.0) -> None:
        self.release()
        self.join(timeout)
        assert not self.is_alive(), "producer did not finish"
        assert self.error is None, f"producer failed: {self.error!r}"


# -- oracles and reads ---------------------------------------------------------------------------
def dataset(n_customers: int, n_orders: int, n_sessions: int, seed: int) -> list[Event]:
    """Orders (with cancellations and partial returns) and clicks, in event-time order."""
    events: list[Event] = [
        *state_events.orders(n_customers, n_orders, seed=seed),
        *state_events.clicks(n_customers, n_sessions, seed=seed + 1),
    ]
    events.sort(key=lambda e: (e.event_time, e.event_id))
    return events


def oracle_rows(events: Sequence[Event]) -> dict[str, dict[str, object]]:
    """Every export column per customer, from the in-memory store given all events at once."""
    store = InMemoryStateStore()
    records = [Record("oracle", 0, i, ev) for i, ev in enumerate(events)]
    store.apply(Batch(records, {("oracle", 0): len(records) - 1}, {}))
    return {s.customer_id: features(s, AS_OF) for s in store.customers()}


def redis_rows(settings: Settings) -> dict[str, dict[str, object]]:
    with StateReader(settings.redis_url, settings.redis_prefix) as reader:
        return {s.customer_id: features(s, AS_OF) for s in reader.customers()}


def counters(settings: Settings) -> dict[str, int]:
    with StateReader(settings.redis_url, settings.redis_prefix) as reader:
        return reader.counters()


def wait_received(settings: Settings, n: int, timeout: float = 90.0) -> dict[str, int]:
    def done() -> dict[str, int] | None:
        c = counters(settings)
        return c if c["received"] >= n else None

    got = wait_for(done, timeout, f"{n} records received in Redis counters")
    assert got["received"] == n, got
    assert got["valid"] + got["dead_lettered"] == got["received"], got
    return dict(got)


def assert_same_state(actual: dict[str, dict[str, object]], expected: dict[str, Any]) -> None:
    assert actual.keys() == expected.keys()
    diffs = [cid for cid in expected if actual[cid] != expected[cid]]
    assert not diffs, f"{len(diffs)} customers differ, e.g. {diffs[0]}: " + (
        f"{actual[diffs[0]]} != {expected[diffs[0]]}" if diffs else ""
    )


# -- tests ---------------------------------------------------------------------------------------
def test_replayed_orders_file_matches_pandas_and_a_second_replay_changes_nothing(
    settings: Settings, workers: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    orders = state_events.orders(300, 3000, seed=21)  # ~3.3k events, cancels and returns
    replay_file = tmp_path / "orders.jsonl"
    replay_file.write_bytes(b"".join(encode(o) + b"\n" for o in orders))

    def replay() -> None:
        lines = replay_file.read_bytes().splitlines()
        events = [decode(OrderEvent, line) for line in lines]
        produce(settings.kafka_bootstrap, records_for(settings, events))

    worker = workers(settings)
    replay()
    worker.wait_assigned()
    wait_received(settings, len(orders))

    out = tmp_path / "export.jsonl"
    subprocess.run(
        [sys.executable, "-m", "segstream", "export", "--format", "jsonl", "--out", str(out),
         "--as-of", AS_OF.isoformat()],
        env=settings_env(settings), cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    exported = {r["customer_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    expected = state_events.pandas_rfm(orders)
    assert sorted(exported) == sorted(expected.index)
    for cid, row in expected.iterrows():
        got = exported[str(cid)]
        assert got["frequency"] == row["frequency"], cid
        assert round(got["monetary"] * 100) == row["monetary_cents"], cid
        assert got["aov"] == pytest.approx(row["aov"], abs=1e-9), cid
        first = datetime.fromisoformat(got["first_order_ts"])
        last = datetime.fromisoformat(got["last_order_ts"])
        assert int(first.timestamp() * 1000) == row["first_ms"], cid
        assert int(last.timestamp() * 1000) == row["last_ms"], cid

    before = redis_rows(settings)
    replay()  # ops replay the very same file: new offsets, same event ids
    got = wait_received(settings, 2 * len(orders))
    assert got["duplicates"] == len(orders), got
    assert redis_rows(settings) == before
    assert worker.alive


def test_shuffled_events_give_the_in_order_state(
    settings: Settings,
    make_topic: Callable[..., str],
    workers: Callable[..., WorkerProcess],
) -> None:
    events = dataset(200, 1500, 600, seed=5)
    shuffled = list(events)
    random.Random(99).shuffle(shuffled)
    other = settings.with_(
        orders_topic=make_topic("orders-shuffled"),
        clicks_topic=make_topic("clicks-shuffled"),
        redis_prefix=f"{settings.redis_prefix}-shuffled",  # cleaned up with the test's prefix
        group_id=f"{settings.group_id}-shuffled",
    )
    in_order, out_of_order = workers(settings, "in-order"), workers(other, "shuffled")
    produce(settings.kafka_bootstrap, records_for(settings, events))
    produce(settings.kafka_bootstrap, records_for(other, shuffled))
    in_order.wait_assigned()
    out_of_order.wait_assigned()
    wait_received(settings, len(events))
    wait_received(other, len(events))
    expected = redis_rows(settings)
    assert_same_state(expected, oracle_rows(events))
    assert_same_state(redis_rows(other), expected)


def _valid_order(i: int) -> OrderEvent:
    return OrderEvent(
        event_id=f"ok-{i}", schema_version=1, customer_id=f"C{i % 7}", order_id=f"O{i}",
        event_time=datetime(2025, 3, 1, tzinfo=UTC), status="placed",
        items=[LineItem(sku="S", quantity=1, unit_price=5.0)], total=5.0,
    )  # fmt: skip


#: (what is wrong, topic, value, a phrase the dead letter's reason must contain)
def malformed(settings: Settings) -> list[tuple[str, str, bytes | None, str]]:
    good = encode(_valid_order(0))
    o, c = settings.orders_topic, settings.clicks_topic
    return [
        ("not json", o, b"{this is not json", "not JSON"),
        ("not utf-8", o, b"\xff\xfe\x00binary", "not UTF-8"),
        ("null value", o, None, "empty record"),
        ("missing field", o, good.replace(b'"customer_id":"C0",', b""), "missing required"),
        ("wrong type", o, good.replace(b'"total":5.0', b'"total":"5"'), "wrong type"),
        ("bad enum", o, good.replace(b'"placed"', b'"shipped"'), "unknown value"),
        ("unknown version", o, good.replace(b'"schema_version":1', b'"schema_version":9'),
         "unknown schema_version"),
        ("total mismatch", o, good.replace(b'"total":5.0', b'"total":7.5'), "disagrees"),
        ("zero quantity", o, good.replace(b'"quantity":1', b'"quantity":0').replace(
            b'"total":5.0', b'"total":0.0'), "at least 1"),
        ("bad timestamp", o, good.replace(b"2025-03-01", b"2025-13-45"), "timestamp"),
        ("oversize", o, b'{"pad":"' + b"x" * 70_000 + b'"}', "oversize"),
        ("order on clicks", c, good, "session_id"),
        ("click without customer", c,
         b'{"event_id":"x","schema_version":1,"session_id":"s","type":"search",'
         b'"event_time":"2025-03-01T00:00:00Z"}', "customer_id"),
    ]  # fmt: skip


def test_each_malformed_kind_is_dead_lettered_with_its_reason_and_counts_add_up(
    settings: Settings, workers: Callable[..., WorkerProcess], kafka_bootstrap: str
) -> None:
    bad = malformed(settings)
    valid = [_valid_order(i) for i in range(1, 41)]
    items: list[tuple[str, bytes | None, bytes | None]] = []
    items += [(t, b"K", v) for t, v in [(settings.orders_topic, encode(e)) for e in valid[:20]]]
    items += [(topic, b"K", value) for _, topic, value, _ in bad]
    items += [(t, b"K", v) for t, v in [(settings.orders_topic, encode(e)) for e in valid[20:]]]
    worker = workers(settings)
    produce(kafka_bootstrap, items)
    worker.wait_assigned()
    got = wait_received(settings, len(items))
    assert got["valid"] == len(valid) and got["dead_lettered"] == len(bad), got

    consumer = KafkaConsumer(
        settings.dead_letter_topic, bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest", group_id=f"{settings.group_id}-dl-reader",
        session_timeout_ms=6000, consumer_timeout_ms=15000,
    )  # fmt: skip
    letters: list[DeadLetter] = []
    for message in consumer:
        letters.append(msgspec.json.decode(message.value, type=DeadLetter))
        assert message.key == b"K"
        if len(letters) == len(bad):
            break
    consumer.close()
    assert len(letters) == len(bad)
    by_original = {(d.source_topic, d.original): d for d in letters}
    for what, topic, value, phrase in bad:
        letter = by_original[(topic, value or b"")]
        assert phrase in letter.error, f"{what}: {letter.error!r}"
        assert letter.partition >= 0 and letter.offset >= 0
    logged = worker.log_path.read_text(errors="replace").count("dead-lettered ")
    assert logged == len(bad)
    health = worker.health()
    assert health is not None and health["status"] == "ok", json.dumps(health)
    assert health["counters"]["dead_lettered"] == len(bad)
    metric = f'segstream_ingest_records_total{{outcome="dead_lettered"}} {len(bad)}'
    assert metric in worker.metrics()


def test_worker_stops_cleanly_on_sigterm(
    settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    worker = workers(settings)
    worker.wait_assigned()
    started = time.monotonic()
    assert worker.stop() == 0
    assert time.monotonic() - started < 15
    with contextlib.suppress(OSError):
        assert "Traceback" not in worker.tail(200)
