"""Read a whole topic from its beginning to its end, without a consumer group.

The report (segment changes) and the impact computation (orders) read a topic the same way:
every partition assigned by hand (no group: nothing committed, nothing rebalances), from the
beginning, decoded in batches with :func:`schemas.decode_many` (what does not decode is counted,
not raised), until every partition has reached the end offset it had at the start and nothing new
came for ``idle_s`` seconds, or until ``timeout_s`` (the read is then marked incomplete).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from schemas import ClickEvent, CustomerProfile, DeadLetter, OrderEvent, SegmentChange
from segstream.errors import SegstreamError

#: The events :func:`schemas.decode_many` decodes.
T = TypeVar("T", OrderEvent, ClickEvent, CustomerProfile, SegmentChange, DeadLetter)


@dataclass(frozen=True)
class TopicRead:
    """How a whole-topic read went."""

    records: int
    rejected: int
    complete: bool
    seconds: float


def read_whole_topic(
    bootstrap: str,
    topic: str,
    model: type[T],
    take: Callable[[Sequence[T]], None],
    *,
    error: type[SegstreamError],
    client_id: str,
    idle_s: float,
    timeout_s: float,
    max_records: int = 5000,
    client: Mapping[str, Any] | None = None,
) -> TopicRead:
    """Hand every batch of valid ``model`` events on ``topic`` to ``take``, in poll order.

    ``error``: the exception raised (one line) when the broker cannot be reached or read;
    ``client``: the consumer's TLS/SASL options (:func:`segstream.security.kafka_options`).
    """
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    from schemas import decode_many

    started = time.monotonic()
    records = rejected = 0
    complete = False
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=30_000,
            **(client or {}),
        )
    except KafkaError as exc:
        raise error(f"cannot reach the broker at {bootstrap}: {exc}") from exc
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return TopicRead(0, 0, True, time.monotonic() - started)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        position = {tp: -1 for tp in tps}
        last_new = time.monotonic()
        while time.monotonic() < started + timeout_s:
            batch = consumer.poll(timeout_ms=250, max_records=max_records)
            if batch:
                last_new = time.monotonic()
            for tp, messages in batch.items():
                records += len(messages)
                position[tp] = max(position[tp], messages[-1].offset)
                valid, bad = decode_many(model, [m.value or b"" for m in messages])
                rejected += len(bad)
                take([event for _, event in valid])
            reached = all(position[tp] + 1 >= ends.get(tp, 0) for tp in tps)
            if reached and time.monotonic() - last_new >= idle_s:
                complete = True
                break
    except KafkaError as exc:
        raise error(f"cannot read {topic} from {bootstrap}: {exc}") from exc
    finally:
        consumer.close()
    return TopicRead(records, rejected, complete, time.monotonic() - started)
