"""The ingest consumer: aiokafka as the batch loop needs it, and its rebalance callbacks.

Apart from the service so that every choice made for the consumer stands in one place: no
auto-commit (offsets are committed only once their batch is in Redis, :mod:`.offsets`), the
earliest offset for a group that never committed, fetches of up to ``batch_max_records``, and a
short broker-side fetch wait so that a lone event is applied within tens of milliseconds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from segstream.security import kafka_options
from segstream.settings import Settings
from worker.kafka_clients import started

#: How long the broker may hold a fetch waiting for data. aiokafka's default (500 ms) puts up to
#: that much on event-to-state latency when traffic is light; 20 ms costs a few idle fetches.
FETCH_MAX_WAIT_MS = 20

#: A rebalance callback: the partitions revoked, or the partitions assigned.
OnRebalance = Callable[[Sequence[TopicPartition]], Awaitable[None]]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, on_revoked: OnRebalance, on_assigned: OnRebalance) -> None:
        self._on_revoked, self._on_assigned = on_revoked, on_assigned

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._on_assigned(assigned)


async def start_consumer(
    settings: Settings, *, on_revoked: OnRebalance, on_assigned: OnRebalance
) -> AIOKafkaConsumer:
    """A started consumer of the input topics in the ingest group; stopped again if start fails."""
    s = settings
    session_ms = int(s.kafka.session_timeout_s * 1000)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=s.kafka.bootstrap,
        group_id=s.kafka.group_id,
        client_id=f"segstream-ingest-{s.kafka.group_id}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=session_ms,
        heartbeat_interval_ms=max(500, session_ms // 3),
        max_poll_records=s.ingest.batch_max_records,
        max_poll_interval_ms=300_000,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        **kafka_options(s.kafka),
    )
    consumer.subscribe(list(s.kafka.input_topics), listener=_Listener(on_revoked, on_assigned))
    return await started(consumer)
