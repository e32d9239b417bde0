"""A fetched Kafka record as the ingest code sees it, without a broker."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Raw:
    """What ``aiokafka.ConsumerRecord`` gives batch assembly (``worker.ingest.batch.RawRecord``)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
