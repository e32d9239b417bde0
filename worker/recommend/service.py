"""The recommendations consumer: a mode ``Service`` the worker runs beside ingestion.

It reads the orders topic in its own consumer group (``<group_id>-recommend``, so it never
joins ingestion's rebalances and keeps its own offsets) and, per fetched batch:

1. turns placed orders into purchases (:mod:`worker.recommend.batch`); a record that does not
   decode is skipped and counted (ingestion dead-letters the same record with its reason);
2. applies them with one ``pop.lua`` call per space (:class:`RecommendStore`): per-partition
   fence ``{space}:rfence:<topic>``, decayed counts per segment and for the shop, the
   customers' recently bought skus, forgotten customers' old orders dropped;
3. commits the offsets.

Every ``merge_interval_s`` after it applied something it rewrites the merged top lists of every
space (``RecommendStore.merge``). Failures as ingestion's (docs/state.md, "When a batch fails"):
an outage is waited out with backoff, nothing committed; a batch Redis keeps refusing for
another reason is retried ``poison_retries`` times, then applied purchase by purchase, and a
purchase that is still refused is dead-lettered with the error while the fence moves past it.
No line at INFO or above names a customer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from mode import Service

from schemas.errors import SchemaError
from segstream.security import kafka_options
from segstream.settings import Settings
from worker.backoff import backoff, retry
from worker.ingest.batch import Rejected
from worker.ingest.dead_letter import DeadLetterSink
from worker.ingest.failures import Kind, classify
from worker.kafka_clients import started
from worker.recommend.batch import RecommendBatch, assemble
from worker.recommend.store import RecommendResult, RecommendStore

log = logging.getLogger(__name__)

__all__ = ["RecommendMetrics", "RecommendService"]

FETCH_MAX_RECORDS = 2000
FETCH_TIMEOUT_MS = 500

Fetched = Mapping[TopicPartition, Sequence[ConsumerRecord[Any, Any]]]


class _Stopping(Exception):
    """The service is stopping: leave the current batch uncommitted."""


@dataclass
class RecommendMetrics:
    records: int = 0
    skipped: int = 0
    applied: int = 0
    fenced: int = 0
    suppressed: int = 0
    deduped: int = 0
    dead_lettered: int = 0
    merges: int = 0
    failures: int = 0
    last_error: str = ""

    def note_error(self, text: str) -> None:
        self.failures += 1
        self.last_error = text[:300]


class RecommendService(Service):
    """Keeps the recommendation counts and top lists in step with the orders topic."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self.settings = settings
        self.metrics = RecommendMetrics()
        self.group_id = f"{settings.kafka.group_id}-recommend"
        self._consumer: AIOKafkaConsumer | None = None
        self._sink: DeadLetterSink | None = None
        self._store: RecommendStore | None = None
        self._stopping = False
        self._dirty = True
        #: Woken when a batch applied something, so a merge follows promptly.
        self._applied = asyncio.Event()
        super().__init__(**kwargs)

    # -- lifecycle ------------------------------------------------------------------------------
    async def on_stop(self) -> None:
        self._stopping = True
        for closer in (
            self._consumer.stop if self._consumer else None,
            self._sink.stop if self._sink else None,
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

    @Service.task
    async def _merge_loop(self) -> None:
        """Merge after something was applied, at most once per ``merge_interval_s``."""
        interval = self.settings.recommend.merge_interval_s
        attempt = 0
        while not self._stopping:
            if not self._dirty:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._applied.wait(), timeout=max(interval, 0.05))
                self._applied.clear()
                continue
            store = self._store
            if store is None:
                await asyncio.sleep(0.1)
                continue
            self._dirty = False
            started_at = time.monotonic()
            try:
                await self.merge_now(store)
                attempt = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._dirty = True
                self.metrics.note_error(f"merge failed: {type(exc).__name__}: {exc}")
                if attempt == 0 or attempt % 10 == 0:
                    log.warning("recommendations merge failed (%s); retrying", exc)
                await asyncio.sleep(backoff(attempt))
                attempt += 1
                continue
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started_at)))

    async def merge_now(self, store: RecommendStore) -> None:
        await store.merge()
        self.metrics.merges += 1

    async def _connect(self) -> None:
        s = self.settings
        options = kafka_options(s.kafka)
        self._store = RecommendStore(s.redis, s.redis.prefix, s.recommend)
        self._sink = DeadLetterSink(s.kafka.bootstrap, s.kafka.dead_letter_topic, client=options)
        await self._retry("start the recommendations dead-letter producer", self._sink.start)
        session_ms = int(s.kafka.session_timeout_s * 1000)

        async def connect() -> None:
            consumer = AIOKafkaConsumer(
                s.kafka.orders_topic,
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

        await self._retry("start the recommendations consumer", connect)
        log.info("recommend: consuming %s as group %s", s.kafka.orders_topic, self.group_id)

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
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.note_error(f"fetch orders failed: {type(exc).__name__}: {exc}")
                await asyncio.sleep(backoff(attempt))
                attempt += 1
                continue
            fetched = {tp: records for tp, records in fetched.items() if records}
            if not fetched:
                continue
            try:
                await self.handle(fetched)
                attempt = 0
            except (asyncio.CancelledError, _Stopping):
                raise
            except Exception as exc:  # a bug on this path: go back, retry the batch later
                self.metrics.note_error(f"recommend batch failed: {type(exc).__name__}: {exc}")
                log.exception(
                    "a recommendations batch failed; read again (attempt %d)", attempt + 1
                )
                for tp, records in fetched.items():
                    consumer.seek(tp, records[0].offset)
                await asyncio.sleep(backoff(attempt))
                attempt += 1
                continue
            await self._commit(consumer, {tp: rs[-1].offset + 1 for tp, rs in fetched.items()})

    async def handle(self, fetched: Fetched) -> None:
        """One fetched batch: purchases applied (not committed)."""
        self.metrics.records += sum(len(records) for records in fetched.values())
        batch, skipped = assemble(fetched.values())
        self.metrics.skipped += skipped
        raw = {(r.topic, r.partition, r.offset): r for rs in fetched.values() for r in rs}
        await self._apply(batch, raw)

    async def _apply(
        self, batch: RecommendBatch, raw: Mapping[tuple[str, int, int], ConsumerRecord[Any, Any]]
    ) -> None:
        if await self._attempts(batch) is None:
            return
        log.error("a recommendations batch was refused %d times (%s); applying it piecewise",
                  self.settings.ingest.poison_retries, self.metrics.last_error)  # fmt: skip
        for one in batch.items():
            error = await self._attempts(one)
            if error is None:
                continue
            p = one.purchases[0]
            source = raw[(p.topic, p.partition, p.offset)]
            limit = self.settings.ingest.poison_retries
            reason = f"the recommendations store refused this record {limit} times: {error}"
            value = source.value if isinstance(source.value, bytes) else b""
            await self._dead_letter(
                Rejected(p.topic, p.partition, p.offset, source.key, value,
                         SchemaError("$", reason[:300]))
            )  # fmt: skip
            fence_only = RecommendBatch((), {(p.topic, p.partition): p.offset}, p.customer_id)
            if await self._attempts(fence_only) is not None:
                log.error("a refused purchase's fence move was refused too; it may be retried")
        # the partitions' high offsets (records that were no purchase) go to shard 0 as usual
        await self._attempts(RecommendBatch((), batch.high))

    async def _attempts(self, batch: RecommendBatch) -> str | None:
        """Apply until it works (-> None) or was refused ``poison_retries`` times (-> the last
        error); outages are retried for as long as they last."""
        store = self._store
        assert store is not None
        limit = self.settings.ingest.poison_retries
        m = self.metrics

        def count(part: RecommendResult) -> None:
            m.applied += part.applied
            m.fenced += part.fenced
            m.suppressed += part.suppressed
            m.deduped += part.deduped
            if part.applied:
                self._dirty = True
                self._applied.set()

        attempt = refused = 0
        while True:
            if self._stopping:
                raise _Stopping("recommend")
            try:
                await store.apply(batch, count)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failure = classify(exc)
                m.note_error(f"recommend batch failed: {failure.text}")
                if failure.kind is Kind.POISON:
                    refused += 1
                    if limit and refused >= limit:
                        return failure.text
                if attempt == 0 or attempt % 10 == 0:
                    log.warning("a recommendations batch failed (%s); retrying (attempt %d)",
                                failure.text, attempt + 1)  # fmt: skip
                await asyncio.sleep(backoff(attempt))
                attempt += 1
                continue
            return None

    async def _dead_letter(self, rejected: Rejected) -> None:
        sink = self._sink
        assert sink is not None
        await self._retry("dead-letter a recommendations record", lambda: sink.send([rejected]))
        self.metrics.dead_lettered += 1

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        try:
            await consumer.commit(offsets)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the next commit covers it; a batch applied again is fenced
            self.metrics.note_error(
                f"commit of recommendations failed: {type(exc).__name__}: {exc}"
            )
            log.warning("commit of recommendations failed (%s: %s)", type(exc).__name__, exc)

    async def _retry(self, what: str, op: Callable[[], Awaitable[Any]]) -> Any:
        def give_up() -> None:
            if self._stopping:
                raise _Stopping(what)

        return await retry(what, op, noted=self.metrics.note_error, give_up=give_up)

    def report(self) -> dict[str, Any]:
        """The counters, for a page or a test."""
        return dict(vars(self.metrics))
