"""Tombstones on segment-changes: key = customer id, value = null.

A consumer that compacts the topic (or keeps a table keyed by customer) drops the customer on
seeing it. The record goes to the partition Kafka's default partitioner gives the key, the one
every segment change of the customer went to (the scoring publisher computes the same
murmur2), so it comes after them in the partition's order.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer

from segstream.security import kafka_options
from segstream.settings import KafkaSettings
from worker.kafka_clients import started


class TombstonePublisher:
    """An aiokafka producer (acks=all) for tombstones, with the settings' security options."""

    def __init__(self, kafka: KafkaSettings, client_id: str) -> None:
        self.topic = kafka.segment_changes_topic
        self._options: dict[str, Any] = {
            "bootstrap_servers": kafka.bootstrap,
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": False,
            "linger_ms": 0,
            **kafka_options(kafka),
        }
        self._producer: AIOKafkaProducer | None = None
        self.published = 0

    async def start(self) -> None:
        self._producer = await started(AIOKafkaProducer(**self._options))

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def publish(self, customer_id: str) -> None:
        """Send the tombstone and wait for the broker's acknowledgement."""
        if self._producer is None:
            await self.start()
        assert self._producer is not None
        await self._producer.send_and_wait(self.topic, value=None, key=customer_id.encode())
        self.published += 1
