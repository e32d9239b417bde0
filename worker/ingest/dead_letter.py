"""Dead-letter sink: rejected input records -> the dead-letter topic, original bytes kept.

Each rejected record becomes one :class:`schemas.DeadLetter` (original bytes, key, source topic,
partition, offset, reason), keyed like the original so a fixed record can be replayed to the
same partition. Each is logged once, with its topic/partition/offset, when it is sent.

A dead letter is plain JSON; read it with ``msgspec.json.decode(value, type=DeadLetter)``: the
input-size limit of :func:`schemas.decode` (64 KiB) is for input events and would refuse the
dead letter of an oversize record.

Delivery is at-least-once: the batch that carried a reject is applied to Redis (and its offsets
committed) only after the dead letters are acknowledged, so a crash in between can resend a dead
letter but never lose one. The exact count lives in Redis, written with the batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from schemas import DeadLetter, encode
from worker.ingest.batch import Rejected

log = logging.getLogger(__name__)

#: Originals above this are cut to it: base64 in JSON grows a record by a third, and a dead letter
#: over the broker's message limit (1 MiB by default) would block the partition forever. The cut
#: is said in ``error``; the whole record stays at its source topic/partition/offset.
MAX_ORIGINAL_BYTES = 512 * 1024


def to_dead_letter(rejected: Rejected, now: datetime) -> DeadLetter:
    """The dead-letter record for one reject (``error`` is ``"<json path>: <reason>"``)."""
    original = rejected.value
    error = str(rejected.error)
    if len(original) > MAX_ORIGINAL_BYTES:
        error += (
            f" (original cut from {len(original)} to {MAX_ORIGINAL_BYTES} bytes; the whole record"
            f" is at {rejected.where})"
        )
        original = original[:MAX_ORIGINAL_BYTES]
    return DeadLetter(
        original=original,
        source_topic=rejected.topic,
        partition=rejected.partition,
        offset=rejected.offset,
        error=error,
        dead_lettered_at=now,
        key=rejected.key,
    )


class DeadLetterSink:
    """Writes dead letters with an aiokafka producer owned by this sink."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        request_timeout_s: float = 10.0,
        client: Mapping[str, Any] | None = None,
    ) -> None:
        """``client``: the producer's TLS/SASL options (from :mod:`segstream.security`)."""
        self.topic = topic
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=5,
            request_timeout_ms=int(request_timeout_s * 1000),
            client_id="segstream-dead-letter",
            **(client or {}),
        )
        self._started = False

    async def start(self) -> None:
        await self._producer.start()
        self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._producer.stop()

    async def send(self, rejected: Sequence[Rejected]) -> None:
        """Send all, wait for every acknowledgement; raises on any failure (caller retries)."""
        if not rejected:
            return
        now = datetime.now(UTC)
        futures = [
            await self._producer.send(self.topic, encode(to_dead_letter(r, now)), key=r.key)
            for r in rejected
        ]
        await asyncio.gather(*futures)
        for r in rejected:
            log.warning("dead-lettered %s: %s", r.where, r.error)
