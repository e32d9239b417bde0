"""Reading back what the worker left on the broker: dead letters, committed offsets, changes."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient

from schemas import DeadLetter, SegmentChange
from segstream.settings import Settings

#: A segment change as read back: its ``segment_seq`` header and the event.
Change = tuple[int, SegmentChange]


@dataclass(frozen=True)
class Letter:
    """A dead letter and the key of the Kafka message that carried it."""

    letter: DeadLetter
    message_key: bytes | None


def read_dead_letters(settings: Settings, at_least: int, quiet_s: float = 3.0) -> list[Letter]:
    """The whole dead-letter topic: at least ``at_least`` letters, then ``quiet_s`` of nothing.

    The caller has already seen every record counted in Redis, and a batch's dead letters are
    acknowledged before its Redis write, so all of them are on the topic by now; the quiet
    period catches any extra one.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest",
    )  # fmt: skip
    consumer.assign([TopicPartition(settings.kafka.dead_letter_topic, 0)])
    consumer.seek_to_beginning()
    letters: list[Letter] = []
    deadline = time.monotonic() + 60
    quiet_since: float | None = None
    try:
        while True:
            polled = consumer.poll(timeout_ms=500)
            now = time.monotonic()
            got = [m for batch in polled.values() for m in batch]
            for message in got:
                letter = msgspec.json.decode(message.value, type=DeadLetter)
                letters.append(Letter(letter, message.key))
            if len(letters) < at_least:
                assert now < deadline, f"only {len(letters)} of {at_least} dead letters in 60s"
                continue
            if got or quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= quiet_s:
                return letters
    finally:
        consumer.close()


def committed_offsets(
    settings: Settings, partitions: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """The group's committed offset of each of ``partitions`` (absent: nothing committed)."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    try:
        wanted = [TopicPartition(t, p) for t, p in partitions]
        got = admin.list_group_offsets({settings.kafka.group_id: wanted})[settings.kafka.group_id]
    finally:
        admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in got.items() if meta.offset >= 0}


def read_changes(settings: Settings, expected: int, idle_s: float = 3.0) -> list[Change]:
    """Every record of the segment-changes topic (waits for ``expected``, then ``idle_s`` more)."""
    consumer = KafkaConsumer(
        settings.kafka.segment_changes_topic, bootstrap_servers=settings.kafka.bootstrap,
        auto_offset_reset="earliest", group_id=f"{settings.kafka.group_id}-changes-reader",
        session_timeout_ms=3000, heartbeat_interval_ms=1000, consumer_timeout_ms=int(idle_s * 1000),
    )  # fmt: skip
    out: list[Change] = []
    deadline = time.monotonic() + 60
    while len(out) < expected and time.monotonic() < deadline:
        for message in consumer:
            headers = dict(message.headers)
            event = msgspec.json.decode(message.value, type=SegmentChange)
            assert message.key == event.customer_id.encode()
            assert headers["model_version"].decode() == event.model_version
            out.append((int(headers["segment_seq"]), event))
    consumer.close()
    return out
