"""Producing test records with kafka-python, as an upstream service would.

Two styles: :func:`produce` and :class:`PacedProducer` send ``(topic, key, value)`` triples
(all at once, or at a steady rate so faults land mid-stream); :func:`send_all` sends
:class:`Outgoing` records and returns each one's partition and offset as :class:`Sent`, so a
test can match every dead letter to the record it came from.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from kafka import KafkaProducer

from schemas import OrderEvent, encode
from segstream.settings import Settings
from tests.support.synthetic import Event


# -- (topic, key, value) triples -----------------------------------------------------------------
def key_of(event: Event) -> bytes:
    """The record key upstream uses: the customer id, else the anonymous id."""
    return (event.customer_id or getattr(event, "anonymous_id", None) or "").encode()


def produce(bootstrap: str, items: Sequence[tuple[str, bytes | None, bytes | None]]) -> None:
    """Send ``(topic, key, value)`` records and wait until all are acknowledged."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    for topic, key, value in items:
        producer.send(topic, value=value, key=key)
    producer.flush(60)
    producer.close()


def records_for(settings: Settings, events: Sequence[Event]) -> list[tuple[str, bytes, bytes]]:
    """Each event as a triple on its topic (orders or clicks of ``settings``), keyed by customer."""
    out = []
    for ev in events:
        topic = (
            settings.kafka.orders_topic
            if isinstance(ev, OrderEvent)
            else settings.kafka.clicks_topic
        )
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


# -- records with their coordinates --------------------------------------------------------------
@dataclass(frozen=True)
class Kind:
    """One way a record can be malformed, and a phrase its dead letter's reason must contain."""

    name: str
    value: bytes | None
    phrase: str


@dataclass(frozen=True)
class Outgoing:
    """A record to send; ``kind`` is None for a valid event."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None
    headers: list[tuple[str, bytes]] | None = None
    kind: Kind | None = None
    event: Event | None = None


@dataclass(frozen=True)
class Sent:
    """A record as the broker acknowledged it."""

    record: Outgoing
    partition: int
    offset: int

    @property
    def where(self) -> tuple[str, int, int]:
        return (self.record.topic, self.partition, self.offset)

    @property
    def what(self) -> str:
        kind = self.record.kind
        return f"{kind.name if kind else 'valid event'} on {self.record.topic}[{self.partition}]"


def send_all(bootstrap: str, items: Sequence[Outgoing]) -> list[Sent]:
    """Send in order, wait for every acknowledgement; each record's partition and offset."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    futures = [
        producer.send(
            o.topic, value=o.value, key=o.key, partition=o.partition, headers=o.headers or None
        )
        for o in items
    ]
    producer.flush(120)
    producer.close()
    sent = []
    for o, future in zip(items, futures, strict=True):
        meta = future.get(timeout=0)
        sent.append(Sent(o, meta.partition, meta.offset))
    return sent


def valid_records(settings: Settings, events: Sequence[Event]) -> list[Outgoing]:
    """Valid events keyed by customer (the default partitioner spreads them); some with headers."""
    out = []
    for i, ev in enumerate(events):
        topic = (
            settings.kafka.orders_topic
            if isinstance(ev, OrderEvent)
            else settings.kafka.clicks_topic
        )
        headers = [("source", b"poison-test")] if i % 10 == 0 else None
        out.append(Outgoing(topic, key_of(ev), encode(ev), headers=headers, event=ev))
    return out


def interleave(valid: Sequence[Outgoing], bad: Sequence[Outgoing], seed: int) -> list[Outgoing]:
    """``bad`` inserted at seeded random places of ``valid`` (each list keeps its own order)."""
    total = len(valid) + len(bad)
    taken = set(random.Random(seed).sample(range(total), len(bad)))
    good, poison = iter(valid), iter(bad)
    return [next(poison) if i in taken else next(good) for i in range(total)]


def next_offsets(sent: Sequence[Sent]) -> dict[tuple[str, int], int]:
    """Per input partition written to: the offset after its last record (what a commit holds)."""
    out: dict[tuple[str, int], int] = {}
    for s in sent:
        tp = (s.record.topic, s.partition)
        out[tp] = max(out.get(tp, 0), s.offset + 1)
    return out
