"""The campaign consumer: assigns an arm to every customer entering a campaign's segment.

A mode ``Service`` the worker runs beside ingestion (like the erase-requests consumer), reading
the segment-changes topic in its own consumer group (``<group_id>-campaigns``). Per batch:

1. the registry (``{prefix}:campaigns``, one HGETALL: a new campaign is seen at the next batch);
2. each record: a tombstone (a forgotten customer) is skipped; a record that is not a
   ``SegmentChange`` is dead-lettered with its reason; a change whose ``new_segment`` is a
   running campaign's segment at its ``processing_time`` is a candidate, assigned at that time;
3. the candidates are recorded once each (``assign.lua``: the first assignment wins, a forgotten
   customer's replayed change assigns nothing), the records not yet published are published to
   ``campaign-assignments`` and acknowledged, then marked published;
4. the offsets are committed.

Exactly once in Redis (HSET only when absent, the arm a pure function); at least once on the
topic, with a stable ``assignment_id`` (a crash between the broker's acknowledgement and the
mark republishes the same record). A replay of the topic (a reset group) finds every assignment
recorded and published: nothing changes, nothing is sent. Failures: an outage is waited out
with backoff, nothing committed; anything else is retried ``poison_retries`` times, then the
batch's records are handled one by one and a record that still fails is dead-lettered with the
error. No line at INFO or above names a customer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from mode import Service

from schemas import SchemaError, SegmentChange, decode
from segstream.security import kafka_options
from segstream.settings import Settings
from worker.backoff import backoff, retry
from worker.campaigns.metrics import CampaignMetrics
from worker.campaigns.model import Assignment, Campaign
from worker.campaigns.publisher import AssignmentPublisher, record_of
from worker.campaigns.registry import AsyncCampaignRegistry
from worker.campaigns.store import AssignmentStore, Candidate
from worker.connect import async_redis, keyspace
from worker.erase.failures import is_outage
from worker.ingest.batch import Rejected
from worker.ingest.dead_letter import DeadLetterSink
from worker.kafka_clients import started

log = logging.getLogger(__name__)

__all__ = ["CampaignService", "candidates_of"]

FETCH_MAX_RECORDS = 2000
FETCH_TIMEOUT_MS = 500

Record: TypeAlias = "ConsumerRecord[Any, Any]"


class _Stopping(Exception):
    """The service is stopping: leave the current batch uncommitted."""


def candidates_of(
    records: Sequence[Record], campaigns: Any
) -> tuple[list[tuple[Candidate, Record]], list[tuple[Record, SchemaError]]]:
    """The assignments a batch of segment-change records asks for, and its bad records.

    One candidate per (campaign, customer): the earliest entry in the batch.
    """
    out: dict[tuple[str, str], tuple[Candidate, Record]] = {}
    bad: list[tuple[Record, SchemaError]] = []
    for record in records:
        if record.value is None:
            continue  # a tombstone: the customer was forgotten
        try:
            change = decode(SegmentChange, record.value)
        except SchemaError as exc:
            bad.append((record, exc))
            continue
        at_ms = int(change.processing_time.timestamp() * 1000)
        for campaign in campaigns.entering(change.new_segment, at_ms):
            key = (campaign.name, change.customer_id)
            if key not in out or at_ms < out[key][0][2]:
                out[key] = ((campaign, change.customer_id, at_ms), record)
    return list(out.values()), bad


class CampaignService(Service):
    """Consumes segment changes and assigns campaign arms (see the module docstring)."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self.settings = settings
        self.metrics = CampaignMetrics()
        self.group_id = f"{settings.kafka.group_id}-campaigns"
        self._consumer: AIOKafkaConsumer | None = None
        self._sink: DeadLetterSink | None = None
        self._redis: Any = None
        self._registry: AsyncCampaignRegistry | None = None
        self._store: AssignmentStore | None = None
        self._publisher: AssignmentPublisher | None = None
        self._stopping = False
        super().__init__(**kwargs)

    # -- lifecycle ------------------------------------------------------------------------------
    async def on_stop(self) -> None:
        self._stopping = True
        for closer in (
            self._consumer.stop if self._consumer else None,
            self._sink.stop if self._sink else None,
            self._publisher.stop if self._publisher else None,
            self._redis.aclose if self._redis is not None else None,
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
        self._redis = async_redis(s.redis)
        self._registry = AsyncCampaignRegistry(self._redis, s.redis.prefix)
        self._store = AssignmentStore(self._redis, keyspace(s.redis, s.redis.prefix))
        self._publisher = AssignmentPublisher(
            s.kafka, s.kafka.campaign_assignments_topic, client_id=f"segstream-{self.group_id}"
        )
        self._sink = DeadLetterSink(s.kafka.bootstrap, s.kafka.dead_letter_topic, client=options)
        await self._retry("start the campaign dead-letter producer", self._sink.start)
        session_ms = int(s.kafka.session_timeout_s * 1000)

        async def connect() -> None:
            consumer = AIOKafkaConsumer(
                s.kafka.segment_changes_topic,
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

        await self._retry("start the campaign consumer", connect)
        log.info("campaigns: consuming %s as group %s", s.kafka.segment_changes_topic,
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
                self.metrics.note_error(
                    f"fetch segment changes failed: {type(exc).__name__}: {exc}"
                )
                await asyncio.sleep(backoff(attempt))
                attempt += 1
                continue
            records = [r for rs in fetched.values() for r in rs]
            if not records:
                continue
            self.metrics.changes += len(records)
            await self.handle(records)
            offsets = {tp: rs[-1].offset + 1 for tp, rs in fetched.items() if rs}
            try:
                await consumer.commit(offsets)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next commit covers it; a batch done twice is harmless
                self.metrics.note_error(f"commit failed: {type(exc).__name__}: {exc}")

    async def handle(self, records: Sequence[Record]) -> None:
        """One batch: assigned, published and marked, or its bad records dead-lettered."""
        registry = self._registry
        assert registry is not None
        campaigns = await self._retry("read the campaign registry", registry.load)
        if not campaigns.by_name:
            return
        wanted, bad = candidates_of(records, campaigns)
        for record, error in bad:
            await self._dead_letter(record, error)
        if not wanted:
            return
        try:
            await self._attempts([c for c, _ in wanted], whole=True)
        except _Isolate:
            for candidate, record in wanted:  # one by one: only what still fails is dropped
                try:
                    await self._attempts([candidate], whole=False)
                except _Isolate as failed:
                    await self._dead_letter(record, SchemaError("$", failed.reason))

    async def _attempts(self, items: list[Candidate], whole: bool) -> None:
        limit = self.settings.ingest.poison_retries
        attempt = refused = 0
        while True:
            if self._stopping:
                raise _Stopping("campaigns")
            try:
                await self._assign(items)
                return
            except (asyncio.CancelledError, _Stopping):
                raise
            except Exception as exc:
                text = f"{type(exc).__name__}: {exc}"
                for _, cid, _ in items:
                    text = text.replace(cid, "<customer>")
                self.metrics.note_error(f"campaign assignment failed: {text}")
                if not is_outage(exc):
                    refused += 1
                    if limit and refused >= limit:
                        log.error("campaign assignment failed %d times (%s)%s", refused, text,
                                  "; trying its records one by one" if whole else "")  # fmt: skip
                        raise _Isolate(
                            f"could not be assigned {refused} times: {text}"[:300]
                        ) from exc
                if attempt == 0 or attempt % 10 == 0:
                    log.warning("campaign assignment failed (%s); retrying (attempt %d)", text,
                                attempt + 1)  # fmt: skip
                await asyncio.sleep(backoff(attempt))
                attempt += 1

    async def _assign(self, items: list[Candidate]) -> None:
        store, publisher = self._store, self._publisher
        assert store is not None and publisher is not None
        stored = await store.record(items)
        owed: list[tuple[Assignment, Campaign]] = []
        for (campaign, _, _), got in zip(items, stored, strict=True):
            if got is not None:
                self.metrics.assigned += 1
                if not got.published:
                    owed.append((got, campaign))
        if owed:
            await publisher.publish([record_of(a, c) for a, c in owed])
            self.metrics.published += len(owed)
            await store.mark_published([a for a, _ in owed])

    async def _dead_letter(self, record: Record, error: SchemaError) -> None:
        sink = self._sink
        assert sink is not None
        value = record.value if isinstance(record.value, bytes) else b""
        rejected = Rejected(record.topic, record.partition, record.offset, record.key, value, error)
        await self._retry("dead-letter a segment change", lambda: sink.send([rejected]))
        self.metrics.dead_lettered += 1

    async def _retry(self, what: str, op: Callable[[], Awaitable[Any]]) -> Any:
        def give_up() -> None:
            if self._stopping:
                raise _Stopping(what)

        return await retry(what, op, noted=self.metrics.note_error, give_up=give_up)

    def report(self) -> dict[str, Any]:
        m = self.metrics
        return {
            "changes": m.changes,
            "assigned": m.assigned,
            "published": m.published,
            "dead_lettered": m.dead_lettered,
            "failures": m.failures,
            "last_error": m.last_error,
        }


class _Isolate(Exception):
    """Assignment kept failing for a reason that is not an outage."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
