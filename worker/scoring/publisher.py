"""The producer of ``segment-changes`` (and of control notices): aiokafka, acks=all, in order.

One record per real change, key = customer id (so one customer's changes land on one partition,
in order), value = ``schemas.SegmentChange`` JSON, headers ``segment_seq`` (the customer's change
counter, also in Redis) and ``model_version``. ``publish`` returns once the broker acknowledged
every record; the caller then deletes them from the outbox. A crash in between republishes them
on start-up: delivery is at-least-once, and a consumer drops a repeat by keeping the highest
``segment_seq`` seen per customer.

Ordering per customer: aiokafka keeps at most one produce request in flight per broker, so a
retried batch is never overtaken by a later one. Kafka's idempotent producer is not switched on:
the local broker (tansu) answers ``InitProducerId`` with an unknown error, and the outbox plus
``segment_seq`` already make a duplicate harmless.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from segstream.partitioning import default_partitions
from worker.kafka_clients import started
from worker.scoring.plan import OutgoingChange

#: Uncompressed bytes per record batch (aiokafka's default is 16 KiB, ~40 change events). A
#: round's changes to one partition then fit in one or two batches instead of ~30: every batch
#: is compressed, framed and written to the socket on its own, and those writes were ~5 % of
#: the worker's CPU while it published a burst's changes. Compressed (to ~1/8 of this) a
#: batch stays well under the 1 MB a Kafka broker accepts by default (``message.max.bytes``).
MAX_BATCH_BYTES = 512 * 1024


class ChangePublisher:
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        control_topic: str,
        client_id: str,
        *,
        client: Mapping[str, Any] | None = None,
    ) -> None:
        """``client``: the producer's TLS/SASL options (from :mod:`segstream.security`)."""
        self.bootstrap = bootstrap
        self._client = dict(client or {})
        self.topic = topic
        self.control_topic = control_topic
        self.client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self.published = 0

    async def start(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            acks="all",
            enable_idempotence=False,
            linger_ms=5,
            # zstd, not lz4: aiokafka compresses lz4 at level 9 (LZ4-HC, ~65 MB/s here), which
            # took ~2 % of the worker's CPU over a burst; zstd's level 3 runs at ~250 MB/s and
            # packs change events tighter (0.12 of their size vs 0.18).
            compression_type="zstd",
            max_batch_size=MAX_BATCH_BYTES,
            **self._client,
        )
        self._producer = await started(producer)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, items: Sequence[OutgoingChange]) -> None:
        """Send the changes as records (key, headers, JSON value); wait for the acks.

        Records are appended to one batch per partition (the default partitioner's choice for
        the key, as ``send`` would make it, computed for all keys at once:
        :mod:`segstream.partitioning`) and sent with ``send_batch``: ``send`` per record
        costs ~30 us of Python each, more than scoring the customer.
        """
        producer = self._producer
        assert producer is not None, "publisher not started"
        if not items:
            return
        partitions = sorted(await producer.partitions_for(self.topic))
        keys = [c.customer_id.encode() for c in items]
        batches: dict[int, Any] = {}
        futures = []
        for key, part, (_, seq, version, value) in zip(
            keys, default_partitions(keys, partitions), items, strict=True
        ):
            headers = [("segment_seq", str(seq).encode()), ("model_version", version.encode())]
            batch = batches.get(part)
            if batch is None:
                batch = batches[part] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                # Full: send it (in order) and start the partition's next batch.
                futures.append(await producer.send_batch(batch, self.topic, partition=part))
                batch = batches[part] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None, headers=headers)
        for part, batch in batches.items():
            futures.append(await producer.send_batch(batch, self.topic, partition=part))
        await asyncio.gather(*futures)
        self.published += len(items)

    async def notice(self, value: bytes) -> None:
        producer = self._producer
        assert producer is not None, "publisher not started"
        await producer.send_and_wait(self.control_topic, value)
