"""The ``campaign-assignments`` topic: one record per assignment, keyed by the customer id.

:func:`record_of` builds the record (``schemas.campaign.CampaignAssignment``) from what Redis
stored, so a republication is byte-identical (same arm, same ``assigned_at``, same
``assignment_id``). :class:`AssignmentPublisher` is the worker's aiokafka producer (acks=all);
``segstream campaign create`` uses kafka-python's with the same records (worker/campaigns/cli.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from schemas.campaign import CampaignAssignment, encode_assignment
from segstream.security import kafka_options
from segstream.settings import KafkaSettings
from worker.campaigns.model import Assignment, Campaign
from worker.kafka_clients import started

__all__ = ["AssignmentPublisher", "record_of"]


def record_of(assignment: Assignment, campaign: Campaign) -> tuple[bytes, bytes]:
    """(key, value) of the assignment's record."""
    event = CampaignAssignment(
        schema_version=1,
        assignment_id=assignment.assignment_id,
        campaign=assignment.campaign,
        customer_id=assignment.customer_id,
        arm=assignment.arm,
        segment=campaign.segment,
        holdout=campaign.holdout,
        assigned_at=datetime.fromtimestamp(assignment.assigned_ms / 1000, UTC),
    )
    return assignment.customer_id.encode(), encode_assignment(event)


class AssignmentPublisher:
    """An aiokafka producer (acks=all) for the assignments topic; started on first use, so a
    worker with no campaign never connects one."""

    def __init__(self, kafka: KafkaSettings, topic: str, client_id: str) -> None:
        self.topic = topic
        self._options: dict[str, Any] = {
            "bootstrap_servers": kafka.bootstrap,
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": False,
            "linger_ms": 5,
            **kafka_options(kafka),
        }
        self._producer: AIOKafkaProducer | None = None
        self.published = 0

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def publish(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Send every record and wait for the broker's acknowledgement of all of them."""
        if not records:
            return
        if self._producer is None:
            self._producer = await started(AIOKafkaProducer(**self._options))
        producer = self._producer
        futures = [await producer.send(self.topic, value=v, key=k) for k, v in records]
        await asyncio.gather(*futures)
        self.published += len(records)
