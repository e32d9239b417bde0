"""Follows the ``segment-changes`` topic into a :class:`~dashboard.tally.ChangeTally`.

Its own consumer, with no group (it commits nothing and takes no partition from anyone): it
assigns itself every partition of the topic. Start-up is ordered so the sizes are exact:

1. the end offsets of every partition are read *first*;
2. then every customer's current segment and ``segment_seq`` is read from Redis
   (:meth:`worker.state.StateReader.customers`);
3. then the topic is read from those end offsets on.

A change published between 1 and 2 is read in 3 and, its counter being already in the state
read in 2, skipped as a repeat; a change published after 2 is applied. So the sizes are never
counted twice nor missed. Changes per minute and the transition matrix count what happened
since the dashboard started.

A broker that goes away is waited out (the consumer reconnects by itself; an error that escapes
it restarts the loop from the last positions read, after a pause, without reading Redis again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from dashboard.records import read_record
from dashboard.tally import ChangeTally
from segstream.redact import redact
from segstream.security import kafka_options
from segstream.settings import Settings
from worker.state import StateReader

__all__ = ["FeedStatus", "current_segments", "follow_changes"]

log = logging.getLogger(__name__)

#: Pause before the loop starts again after an error (s).
RETRY_S = 2.0


@dataclass
class FeedStatus:
    """What the follower is doing, for the page: ``starting``, ``reading state``,
    ``waiting for topic``, ``following``, ``retrying``; the last error, redacted."""

    state: str = "starting"
    error: str | None = None
    partitions: int = 0


def current_segments(settings: Settings) -> Iterator[tuple[str, int | None, str]]:
    """``(customer_id, segment_seq, segment)`` of every customer that has a segment (SCAN)."""
    with StateReader(settings.redis, settings.redis.prefix) as reader:
        for state in reader.customers():
            if state.segment is not None:
                yield state.customer_id, state.segment_seq, state.segment


async def follow_changes(settings: Settings, tally: ChangeTally, status: FeedStatus) -> None:
    """Keep ``tally`` in step with the topic until cancelled."""
    topic = settings.kafka.segment_changes_topic
    positions: dict[TopicPartition, int] = {}
    while True:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            client_id="segstream-dashboard",
            **kafka_options(settings.kafka),
        )
        try:
            await consumer.start()
            partitions = await _partitions(consumer, topic, status)
            consumer.assign(partitions)
            if not positions:
                ends = await consumer.end_offsets(partitions)
                status.state = "reading state"
                tally.seed(await asyncio.to_thread(lambda: list(current_segments(settings))))
                positions = dict(ends)
            for tp in partitions:
                consumer.seek(tp, positions.get(tp, 0))
            status.state, status.error = "following", None
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=5000)
                for tp, messages in batches.items():
                    for message in messages:
                        tally.apply(read_record(message.key, message.value, message.headers))
                    if messages:
                        positions[tp] = messages[-1].offset + 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            status.state, status.error = "retrying", redact(f"{type(exc).__name__}: {exc}")
            log.warning("segment-changes follower: %s; retrying", status.error)
            await asyncio.sleep(RETRY_S)
        finally:
            await consumer.stop()


async def _partitions(
    consumer: AIOKafkaConsumer, topic: str, status: FeedStatus
) -> list[TopicPartition]:
    """Every partition of ``topic``, waiting (and saying so) until the topic exists."""
    while True:
        await consumer.topics()  # refreshes the metadata
        found = consumer.partitions_for_topic(topic)
        if found:
            status.partitions = len(found)
            return [TopicPartition(topic, p) for p in sorted(found)]
        status.state = f"waiting for topic {topic}"
        await asyncio.sleep(RETRY_S)
