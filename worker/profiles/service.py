"""The profiles consumer: a mode ``Service`` the worker runs beside ingestion.

Platform services write customer-profile updates (key = customer id, value =
:class:`schemas.CustomerProfile` JSON) to ``settings.kafka.profiles_topic``. This service reads
them in its own consumer group (``<group_id>-profiles``, so it never joins ingestion's
rebalances) and, per fetched batch:

1. decodes every record (:mod:`worker.profiles.batch`); a record that is null, not JSON, of an
   unknown version or with a bad value is dead-lettered with its reason (original bytes kept,
   one WARNING line each) and the rest goes on;
2. applies the valid updates with one ``profile.lua`` call per space
   (:class:`~worker.profiles.store.ProfileStore`): per-partition fence, per-attribute last write
   wins, forgotten customers' old updates dropped, changed customers marked for re-scoring;
3. tells the change listener (scoring) which customers to re-score, then commits the offsets.

Failures, as ingestion's (docs/state.md, "When a batch fails"): an outage (Redis or the broker
unreachable) is waited out with backoff, nothing committed; a batch Redis keeps refusing for
another reason is retried ``poison_retries`` times (``SEGSTREAM_POISON_RETRIES``; 0 = forever),
then applied record by record, and a record that is still refused is dead-lettered with the
error. Re-applying is always safe (the fence, and the merge is idempotent), so a batch processed
again after a crash changes nothing. No line at INFO or above names a customer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
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
from worker.ingest.listener import ChangeListener
from worker.kafka_clients import started
from worker.profiles.batch import ProfileBatch, assemble
from worker.profiles.metrics import ProfileMetrics
from worker.profiles.store import ProfileResult, ProfileStore

log = logging.getLogger(__name__)

__all__ = ["ProfileService"]

#: Records per fetch: profile updates are rarer than clicks, and one batch is one script call
#: per space whose arguments grow with it.
FETCH_MAX_RECORDS = 1000
FETCH_TIMEOUT_MS = 500

Fetched = Mapping[TopicPartition, Sequence[ConsumerRecord[Any, Any]]]


class _Stopping(Exception):
    """The service is stopping: leave the current batch uncommitted."""


class ProfileService(Service):
    """Consumes profile updates and merges them into the customer hashes (module docstring)."""

    def __init__(
        self, settings: Settings, listener: ChangeListener | None = None, **kwargs: Any
    ) -> None:
        self.settings = settings
        self.listener = listener
        self.metrics = ProfileMetrics()
        self.group_id = f"{settings.kafka.group_id}-profiles"
        self._consumer: AIOKafkaConsumer | None = None
        self._sink: DeadLetterSink | None = None
        self._store: ProfileStore | None = None
        self._stopping = False
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

    async def _connect(self) -> None:
        s = self.settings
        options = kafka_options(s.kafka)
        self._store = ProfileStore(s.redis, s.redis.prefix)
        self._sink = DeadLetterSink(s.kafka.bootstrap, s.kafka.dead_letter_topic, client=options)
        await self._retry("start the profiles dead-letter producer", self._sink.start)
        session_ms = int(s.kafka.session_timeout_s * 1000)

        async def connect() -> None:
            consumer = AIOKafkaConsumer(
                s.kafka.profiles_topic,
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

        await self._retry("start the profiles consumer", connect)
        log.info("profiles: consuming %s as group %s", s.kafka.profiles_topic, self.group_id)

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
                self.metrics.note_error(f"fetch profiles failed: {type(exc).__name__}: {exc}")
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
                self.metrics.note_error(f"profile batch failed: {type(exc).__name__}: {exc}")
                log.exception("a profile batch failed; it is read again (attempt %d)", attempt + 1)
                for tp, records in fetched.items():
                    consumer.seek(tp, records[0].offset)
                await asyncio.sleep(backoff(attempt))
                attempt += 1
                continue
            await self._commit(consumer, {tp: rs[-1].offset + 1 for tp, rs in fetched.items()})

    async def handle(self, fetched: Fetched) -> None:
        """One fetched batch: dead letters sent, updates applied, listener told (not committed)."""
        self.metrics.records += sum(len(records) for records in fetched.values())
        batch, rejected = assemble(fetched.values())
        if rejected:
            await self._dead_letter(rejected)
        raw = {(r.topic, r.partition, r.offset): r for rs in fetched.values() for r in rs}
        result = await self._apply(batch, raw)
        if result.marked and self.listener is not None:
            try:
                await self.listener.on_changed(list(result.marked), None, None)
            except Exception:  # scoring's repair finds them in {prefix}:unscored anyway
                log.exception("on_changed failed for %d customer(s)", len(result.marked))

    async def _apply(
        self, batch: ProfileBatch, raw: Mapping[tuple[str, int, int], ConsumerRecord[Any, Any]]
    ) -> ProfileResult:
        """Apply ``batch``: outages waited out, a batch refused too often applied record by
        record, a record refused too often dead-lettered. The result carries the customers
        marked for re-scoring (the counts are in the metrics)."""
        marked: list[str] = []
        result, error = await self._attempts(batch, marked)
        if result is not None:
            return ProfileResult(marked=tuple(marked))
        self.metrics.isolated_batches += 1
        log.error("a profile batch was refused %d times (%s); applying it record by record",
                  self.settings.ingest.poison_retries, error)  # fmt: skip
        for one in batch.items():
            got, error = await self._attempts(one, marked)
            if got is not None:
                continue
            if one.records:
                r = one.records[0]
                source = raw[(r.topic, r.partition, r.offset)]
                limit = self.settings.ingest.poison_retries
                reason = f"the state store refused this record {limit} times: {error}"
                value = source.value if isinstance(source.value, bytes) else b""
                await self._dead_letter(
                    [Rejected(r.topic, r.partition, r.offset, source.key, value,
                              SchemaError("$", reason[:300]))]
                )  # fmt: skip
                tp = (r.topic, r.partition)
                accounting = ProfileBatch(
                    (), [(*tp, r.offset)], {tp: r.offset}, route=r.profile.customer_id
                )
                got, error = await self._attempts(accounting, marked)
            if got is None:  # not even the dead letter's accounting: logged, the batch goes on
                log.error("a profile record's accounting was refused (%s); not counted", error)
        return ProfileResult(marked=tuple(marked))

    async def _attempts(
        self, batch: ProfileBatch, marked: list[str]
    ) -> tuple[ProfileResult | None, str]:
        """Apply until it works (-> result) or was refused ``poison_retries`` times (-> None and
        the last error); outages are retried for as long as they last. What each space's call
        did is counted as it returns (a later space's failure does not undo it), and the
        customers it marked for re-scoring are added to ``marked``."""
        store = self._store
        assert store is not None
        limit = self.settings.ingest.poison_retries
        m = self.metrics

        def count(part: ProfileResult) -> None:
            m.applied += part.applied
            m.changed += part.changed
            m.fenced += part.fenced
            m.suppressed += part.suppressed
            marked.extend(part.marked)

        attempt = refused = 0
        while True:
            if self._stopping:
                raise _Stopping("profiles")
            try:
                result = await store.apply(batch, count)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failure = classify(exc)
                m.note_error(f"profile batch failed: {failure.text}")
                if failure.kind is Kind.POISON:
                    refused += 1
                    if limit and refused >= limit:
                        return None, failure.text
                if attempt == 0 or attempt % 10 == 0:
                    log.warning("a profile batch failed (%s); retrying (attempt %d)",
                                failure.text, attempt + 1)  # fmt: skip
                await asyncio.sleep(backoff(attempt))
                attempt += 1
                continue
            return result, ""

    async def _dead_letter(self, rejected: Sequence[Rejected]) -> None:
        sink = self._sink
        assert sink is not None
        await self._retry("dead-letter profile records", lambda: sink.send(rejected))
        self.metrics.dead_lettered += len(rejected)

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        """Commit; a failure is logged only (the next commit covers it, and a batch applied
        again changes nothing)."""
        try:
            await consumer.commit(offsets)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.metrics.note_error(f"commit of profiles failed: {type(exc).__name__}: {exc}")
            log.warning("commit of profiles failed (%s: %s)", type(exc).__name__, exc)

    async def _retry(self, what: str, op: Callable[[], Awaitable[Any]]) -> Any:
        def give_up() -> None:
            if self._stopping:
                raise _Stopping(what)

        return await retry(what, op, noted=self.metrics.note_error, give_up=give_up)

    def report(self) -> dict[str, Any]:
        """The counters, for a page or a test."""
        m = self.metrics
        return {
            "records": m.records,
            "applied": m.applied,
            "changed": m.changed,
            "fenced": m.fenced,
            "suppressed": m.suppressed,
            "dead_lettered": m.dead_lettered,
            "isolated_batches": m.isolated_batches,
            "failures": m.failures,
            "last_error": m.last_error,
        }
