"""The erase-requests consumer: a :class:`~worker.side_consumer.SideConsumer` beside ingestion.

Platform services write erase requests (key = customer id, value = ``schemas.erase``'s JSON) to
``settings.kafka.erase_requests_topic``. This service reads them in its own consumer group
(``<group_id>-erase``, so it never joins ingestion's rebalances) and, per request, in order:

1. decodes it; a malformed request is dead-lettered with its reason (the original bytes kept)
   and the consumer goes on;
2. forgets the customer (:class:`~worker.erase.eraser.Eraser`: Redis, then the tombstone);
3. commits the partition's offset once every request before it is done.

Failures: an outage (Redis or the broker unreachable) is waited out with backoff, nothing
committed; any other exception from one request is retried ``poison_retries`` times
(``SEGSTREAM_POISON_RETRIES``; 0 = forever), then that request is dead-lettered with the error
and the consumer goes on. Forgetting is idempotent, so a request processed again after a crash
(its offset not committed yet) is harmless. No line at INFO or above names a customer.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import ConsumerRecord

from schemas.erase import decode_erase_request
from schemas.errors import SchemaError
from segstream.settings import Settings
from worker.erase import failures
from worker.erase.eraser import Eraser
from worker.erase.metrics import EraseMetrics
from worker.erase.store import ForgetStore
from worker.erase.tombstones import TombstonePublisher
from worker.side_consumer import Fetched, SideConsumer

log = logging.getLogger(__name__)

__all__ = ["EraseService"]


class EraseService(SideConsumer):
    """Consumes erase requests and forgets each customer (see the module docstring)."""

    part = "erase"
    noun = "erase requests"
    #: Erasures are rare; each one is a Redis call and an acknowledged send.
    fetch_max_records = 100
    metrics: EraseMetrics

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self._eraser: Eraser | None = None
        super().__init__(settings, settings.kafka.erase_requests_topic, EraseMetrics(), **kwargs)

    async def _open(self) -> None:
        s = self.settings
        store = ForgetStore(s.redis, s.redis.prefix, s.ingest.erase_suppress_days)
        tombstones = TombstonePublisher(s.kafka, client_id=f"segstream-erase-{self.group_id}")
        self._closers += [tombstones.stop, store.close]
        self._eraser = Eraser(store, tombstones, self.metrics)
        await self._retry("start the tombstone producer", tombstones.start)

    async def _take(self, fetched: Fetched) -> None:
        """Request by request, each partition committed once its requests are done."""
        for tp, records in fetched.items():
            for record in records:
                await self.handle_one(record)
            await self._commit({tp: records[-1].offset + 1})

    async def handle_one(self, record: ConsumerRecord[Any, Any]) -> None:
        """One request: erased, or dead-lettered; returns only then (or raises when stopping)."""
        self.metrics.requests += 1
        try:
            request = decode_erase_request(record.key, record.value)
        except SchemaError as exc:
            await self._dead_letter(record, exc)
            return
        eraser = self._eraser
        assert eraser is not None
        cid = request.customer_id
        error = await self._attempts(
            "an erasure", lambda: eraser.erase(cid), is_outage=failures.is_outage, hide=[cid]
        )
        if error is not None:
            limit = self.settings.ingest.poison_retries
            log.error("an erasure failed %d times; its request is dead-lettered (%s)", limit, error)
            reason = f"could not be erased {limit} times: {error}"[:300]
            await self._dead_letter(record, SchemaError("$", reason))
