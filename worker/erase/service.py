"""The erase-requests consumer: a mode ``Service`` the worker runs beside ingestion.

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

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from mode import Service

from schemas.erase import decode_erase_request
from schemas.errors import SchemaError
from segstream.security import kafka_options
from segstream.settings import Settings
from worker.backoff import backoff, retry
from worker.erase import failures
from worker.erase.eraser import Eraser
from worker.erase.metrics import EraseMetrics
from worker.erase.store import ForgetStore
from worker.erase.tombstones import TombstonePublisher
from worker.ingest.batch import Rejected
from worker.ingest.dead_letter import DeadLetterSink
from worker.kafka_clients import started

log = logging.getLogger(__name__)

__all__ = ["EraseService"]

#: Requests per fetch (erasures are rare; each one is a Redis call and an acknowledged send).
FETCH_MAX_RECORDS = 100
FETCH_TIMEOUT_MS = 500


class _Stopping(Exception):
    """The service is stopping: leave the current request uncommitted."""


class EraseService(Service):
    """Consumes erase requests and forgets each customer (see the module docstring)."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self.settings = settings
        self.metrics = EraseMetrics()
        self.group_id = f"{settings.kafka.group_id}-erase"
        self._consumer: AIOKafkaConsumer | None = None
        self._sink: DeadLetterSink | None = None
        self._store: ForgetStore | None = None
        self._tombstones: TombstonePublisher | None = None
        self._eraser: Eraser | None = None
        self._stopping = False
        super().__init__(**kwargs)

    # -- lifecycle ------------------------------------------------------------------------------
    async def on_stop(self) -> None:
        self._stopping = True
        for closer in (
            self._consumer.stop if self._consumer else None,
            self._sink.stop if self._sink else None,
            self._tombstones.stop if self._tombstones else None,
            self._store.close if self._store else None,
        ):
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()

    @Service.task
    async def _run(self) -> None:
        try:
            await self._connect()
            await self._consume_forever()
        except (asyncio.CancelledError, _Stopping):
            pass

    async def _connect(self) -> None:
        s = self.settings
        options = kafka_options(s.kafka)
        self._store = ForgetStore(s.redis, s.redis.prefix, s.ingest.erase_suppress_days)
        self._tombstones = TombstonePublisher(s.kafka, client_id=f"segstream-erase-{self.group_id}")
        self._eraser = Eraser(self._store, self._tombstones, self.metrics)
        self._sink = DeadLetterSink(s.kafka.bootstrap, s.kafka.dead_letter_topic, client=options)
        await self._retry("start the erase dead-letter producer", self._sink.start)
        await self._retry("start the tombstone producer", self._tombstones.start)
        session_ms = int(s.kafka.session_timeout_s * 1000)

        async def connect() -> None:
            consumer = AIOKafkaConsumer(
                s.kafka.erase_requests_topic,
                bootstrap_servers=s.kafka.bootstrap,
                group_id=self.group_id,
                client_id=f"segstream-{self.group_id}",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=session_ms,
                heartbeat_interval_ms=max(500, session_ms // 3),
                **options,
            )
            self._consumer = await started(consumer)

        await self._retry("start the erase-requests consumer", connect)
        log.info("erase requests: consuming %s as group %s", s.kafka.erase_requests_topic,
                 self.group_id)  # fmt: skip

    # -- the loop -------------------------------------------------------------------------------
    async def _consume_forever(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        attempt = 0
        while not self._stopping:
            try:
                fetched = await consumer.getmany(
                    timeout_ms=FETCH_TIMEOUT_MS, max_records=FETCH_MAX_RECORDS
                )
                attempt = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.note_error(f"fetch erase requests failed: {type(exc).__name__}: {exc}")
                await asyncio.sleep(backoff(attempt))
                attempt += 1
                continue
            for tp, records in fetched.items():
                for record in records:
                    await self.handle(record)
                await self._commit(consumer, tp, records[-1].offset + 1)

    async def handle(self, record: ConsumerRecord[Any, Any]) -> None:
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
        limit = self.settings.ingest.poison_retries
        attempt = refused = 0
        while True:
            if self._stopping:
                raise _Stopping("erase")
            try:
                await eraser.erase(cid)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                outage = failures.is_outage(exc)
                text = f"{type(exc).__name__}: {exc}".replace(cid, "<customer>")
                self.metrics.note_error(f"erasure failed: {text}")
                if not outage:
                    refused += 1
                    if limit and refused >= limit:
                        error = SchemaError("$", failures.reason(exc, cid, refused))
                        log.error("an erasure failed %d times; its request is dead-lettered "
                                  "(%s)", refused, text)  # fmt: skip
                        await self._dead_letter(record, error)
                        return
                if attempt == 0 or attempt % 10 == 0:
                    log.warning("an erasure failed (%s); retrying (attempt %d)", text, attempt + 1)
                await asyncio.sleep(backoff(attempt))
                attempt += 1

    async def _dead_letter(self, record: ConsumerRecord[Any, Any], error: SchemaError) -> None:
        sink = self._sink
        assert sink is not None
        value = record.value if isinstance(record.value, bytes) else b""
        rejected = Rejected(record.topic, record.partition, record.offset, record.key, value, error)
        await self._retry("dead-letter an erase request", lambda: sink.send([rejected]))
        self.metrics.dead_lettered += 1

    async def _commit(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
        """Commit ``offset``; a failure is logged only (the next commit covers it, and a
        request processed again is harmless)."""
        try:
            await consumer.commit({tp: offset})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.metrics.note_error(f"commit of erase requests failed: {type(exc).__name__}: {exc}")
            log.warning("commit of erase requests failed (%s: %s)", type(exc).__name__, exc)

    async def _retry(self, what: str, op: Callable[[], Awaitable[Any]]) -> Any:
        def give_up() -> None:
            if self._stopping:
                raise _Stopping(what)

        return await retry(what, op, noted=self.metrics.note_error, give_up=give_up)

    def report(self) -> dict[str, Any]:
        """The counters, for a page or a test."""
        m = self.metrics
        return {
            "requests": m.requests,
            "forgotten": m.forgotten,
            "absent": m.absent,
            "tombstones": m.tombstones,
            "dead_lettered": m.dead_lettered,
            "failures": m.failures,
            "outbox_timeouts": m.outbox_timeouts,
            "last_error": m.last_error,
        }
