"""The batched orders + clicks consumer: a mode ``Service`` the faust app starts with itself.

Per fetched batch, in this order:

1. one decode+validate pass over the whole fetch (:func:`worker.ingest.batch.assemble`), and
   the state script's arguments built from it (``StateStore.prepare``, :mod:`.prepare`);
2. rejected records -> dead-letter topic, acknowledged before anything else moves;
3. one ``StateStore.apply(batch)`` call (one Lua script: state, counters, per-partition offset
   fence and event-id dedup, atomically);
4. a manual commit of the Kafka offsets that apply covered (never before the Redis write), by a
   committer task beside the loop (:mod:`.offsets`): the next batch's apply does not wait for
   the broker's answer, and offsets of several batches applied meanwhile go in one commit;
5. the listener's ``on_changed`` (:mod:`.listener`) with the customers whose state changed,
   once the next batch has reached Redis (or at once when no batch follows): the next apply
   does not wait for it (:mod:`.changes`).

While step 3 of batch N runs, batch N+1 is fetched, decoded and prepared (two-stage pipeline:
Redis runs one batch's script while this process builds the next one's arguments); batches are
applied strictly one after another, so the order per partition is kept. What happens when a
batch fails (an outage is waited out, a batch that keeps failing otherwise is isolated record by
record) is :mod:`worker.ingest.applier`'s job, what happens when the loop itself raises is
:mod:`.batch_path`'s; the service never exits on its own. Exactness does not depend on commits
or on who owns a partition: the store skips every record at or below its partition's fence, so
a batch applied twice (after a crash, a rebalance, a timed-out call that did reach Redis)
changes nothing the second time. That is why a rebalance only has to stop *committing* for
revoked partitions, not fence them off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from mode import Service

from segstream.security import kafka_options
from segstream.settings import Settings
from worker.backoff import backoff, retry
from worker.ingest.applier import Applied, BatchApplier, StateStoreLike, Stopping
from worker.ingest.batch import Assembled, Rejected, assemble
from worker.ingest.batch_path import Fetched, InflightFailed, recover
from worker.ingest.changes import ChangeReports
from worker.ingest.consumer import start_consumer
from worker.ingest.dead_letter import DeadLetterSink
from worker.ingest.listener import ChangeListener
from worker.ingest.metrics import IngestMetrics
from worker.ingest.offsets import Committer
from worker.ingest.prepare import prepare
from worker.ingest.watch import WATCH_INTERVAL_S, TopicWatch, last_offsets, names
from worker.redis_io import Pending

log = logging.getLogger(__name__)

__all__ = ["IngestMetrics", "IngestService", "StateStoreLike"]

#: How long a rebalance waits for the in-flight batch before letting it finish uncommitted.
REVOKE_WAIT_S = 5.0
FETCH_TIMEOUT_MS = 200


class IngestService(Service):
    """Consumes the orders and clicks topics in batches and applies them to the state store."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: StateStoreLike,
        listener: ChangeListener,
        **kwargs: Any,
    ) -> None:
        """``store`` is applied to (and closed on stop); ``listener`` hears what changed."""
        self.settings = settings
        self.store = store
        self.listener = listener
        self.applier: BatchApplier | None = None
        self.watch: TopicWatch | None = None
        self.metrics = IngestMetrics()
        self.committer = Committer(self.metrics)
        self.changes = ChangeReports(listener, self.metrics)
        self._consumer: AIOKafkaConsumer | None = None
        self._sink: DeadLetterSink | None = None
        self._inflight: asyncio.Task[None] | None = None
        self._inflight_fetched: Fetched = {}
        #: True while the loop waits in ``getmany`` (no batch is being prepared).
        self._fetching = False
        self._rebalancing = False
        self._stopping = False
        super().__init__(**kwargs)

    # -- lifecycle ------------------------------------------------------------------------------
    async def on_stop(self) -> None:
        self._stopping = True
        await self._wait_inflight(REVOKE_WAIT_S)
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()  # no auto-commit: nothing is committed here
        if self._sink is not None:
            with contextlib.suppress(Exception):
                await self._sink.stop()
        with contextlib.suppress(Exception):
            await self.store.close()
        self.metrics.state = "stopped"

    @Service.task
    async def _run(self) -> None:
        try:
            await self._connect()
            await self._consume_forever()
        except (asyncio.CancelledError, Stopping):
            pass

    async def _connect(self) -> None:
        s = self.settings
        self._sink = DeadLetterSink(
            s.kafka.bootstrap, s.kafka.dead_letter_topic, client=kafka_options(s.kafka)
        )
        await self._retry("start dead-letter producer", self._sink.start)
        self.watch = TopicWatch(
            s.kafka.input_topics,
            self.store.fences,
            s.redis.prefix,
            lambda reported: last_offsets(s.kafka.bootstrap, reported, **kafka_options(s.kafka)),
        )
        self.applier = BatchApplier(
            self.store,
            self._sink,
            poison_retries=s.ingest.poison_retries,
            stopping=lambda: self._stopping,
            on_state=self.metrics.set_state,
        )

        async def connect_consumer() -> None:
            self._consumer = await start_consumer(
                s, on_revoked=self._on_revoked, on_assigned=self._on_assigned
            )

        await self._retry("start consumer", connect_consumer)
        self.metrics.state = "running"
        log.info(
            "ingest consuming %s as group %r (batches of up to %d)",
            ", ".join(s.kafka.input_topics),
            s.kafka.group_id,
            s.ingest.batch_max_records,
        )

    # -- the loop -------------------------------------------------------------------------------
    async def _consume_forever(self) -> None:
        consumer, s = self._consumer, self.settings
        assert consumer is not None
        fetch_errors = loop_failures = 0
        while not self._stopping and not self.should_stop:
            try:
                self._fetching = True
                try:
                    fetched = await consumer.getmany(
                        timeout_ms=FETCH_TIMEOUT_MS, max_records=s.ingest.batch_max_records
                    )
                finally:
                    self._fetching = False
                fetch_errors = 0
            except KafkaError as exc:
                self.metrics.fetch_errors += 1
                self.metrics.note_error(f"fetch failed: {exc!r}")
                await asyncio.sleep(backoff(fetch_errors))
                fetch_errors += 1
                continue
            try:
                await self._handle(fetched)
                if loop_failures and self.metrics.state == "retrying-batch":
                    log.info("ingest resumed: the batch path works again")
                    self.metrics.set_state("running", None)
                loop_failures = 0
            except Stopping:
                return
            except Exception as exc:  # never expected: the batch path itself failed
                loop_failures = await recover(
                    exc,
                    fetched,
                    loop_failures + 1,
                    consumer=self._consumer,
                    applier=self.applier,
                    committer=self.committer,
                    metrics=self.metrics,
                    poison_retries=s.ingest.poison_retries,
                )

    async def _handle(self, fetched: Fetched) -> None:
        """One fetch: hold unchecked partitions, decode + prepare, wait for N-1, start N."""
        store, s = self.store, self.settings
        watch, consumer = self.watch, self._consumer
        if fetched and watch is not None and consumer is not None:
            fetched = await watch.hold_unchecked(consumer, fetched)
        if not fetched:
            if self._inflight is not None and self._inflight.done():
                await self._finish_inflight()
            if self._inflight is None:
                await self.changes.report()
            return
        assembled = assemble(fetched.values(), s.kafka.orders_topic, s.kafka.clicks_topic)
        assembled, prepared = prepare(store, assembled, self.listener.snapshot_spec())
        for tp, records in fetched.items():
            self.metrics.fetched_upto[(tp.topic, tp.partition)] = records[-1].offset
        # Batch N+1 is decoded and its script arguments built; wait for batch N (its apply
        # ran in Redis meanwhile).
        await self._finish_inflight()
        if self._stopping:
            raise Stopping("consume")
        await self._start(assembled, prepared, fetched)
        await self.changes.report()  # the previous batches', while Redis applies this one

    async def _start(self, assembled: Assembled, prepared: Any, fetched: Fetched) -> None:
        """Start applying a batch and return once its request has reached Redis.

        Not sooner: getmany does not yield while records are buffered, so a task merely
        created would only send its script at the next ``_finish_inflight``, and the apply
        would never overlap the next batch's fetch, decode and prepare (the loop's CPU work).
        The batch's task owns the whole apply (a rebalance or a stop waits for it, dead
        letters included); the loop waits for its send (:meth:`BatchApplier.send`) alone.
        """
        applier = self.applier
        assert applier is not None
        started = time.perf_counter()
        sending = asyncio.ensure_future(applier.send(assembled, prepared))
        task = asyncio.ensure_future(self._process(assembled, sending, started))
        self._inflight, self._inflight_fetched = task, fetched
        await asyncio.wait({sending})

    async def _finish_inflight(self) -> None:
        task, self._inflight = self._inflight, None
        if task is not None:
            try:
                await task
            except Stopping:
                pass
            except Exception as exc:  # its records are fetched again (batch_path.recover)
                raise InflightFailed(exc, self._inflight_fetched) from exc

    async def _process(
        self, assembled: Assembled, sending: Awaitable[Pending[Applied]], started: float
    ) -> None:
        """Dead-letter, apply (:class:`BatchApplier`), then book the batch (commit, listener)."""
        applied: Applied = await (await sending).result()
        self.metrics.count_batch(assembled, applied, time.perf_counter() - started)
        for batch, result in applied.pieces:
            self.committer.book(batch)
            self.changes.add(batch, result)
        if self.changes.due and self._fetching:  # no next batch waits for this task: report now
            await self.changes.report()

    async def dead_letter(self, rejected: Rejected) -> None:
        """Dead-letter one record of another consumer of this worker (the control agent)."""
        if self.applier is None:  # not connected yet: the sink does not exist
            log.warning("%s waits for the dead-letter producer to start", rejected.where)
            while self.applier is None and not self._stopping:
                await asyncio.sleep(0.1)
        if self.applier is not None:
            await self.applier.send_dead_letters([rejected])

    @Service.task
    async def _committer(self) -> None:
        """Commit what has been applied, off the apply path (one commit may cover many batches)."""
        while not self.should_stop:
            await self.committer.booked()
            consumer = self._consumer
            if consumer is None or self._rebalancing or self._stopping:
                continue  # revoked or stopping: the fence covers redelivery, the new owner commits
            await self.committer.commit(consumer)

    async def _retry(self, what: str, op: Callable[[], Awaitable[Any]]) -> Any:
        """Start-up steps (producer, consumer): retried with backoff until they work."""

        def noted(text: str) -> None:
            self.metrics.set_state("retrying-broker", text)

        def give_up() -> None:
            if self._stopping:
                raise Stopping(what)

        return await retry(what, op, noted=noted, give_up=give_up)

    # -- rebalances -----------------------------------------------------------------------------
    async def _on_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self._rebalancing = True
        self.metrics.rebalances += 1
        log.info("partitions revoked: %s", names(revoked))
        if self.watch is not None:
            self.watch.forget(revoked)
        await self._wait_inflight(REVOKE_WAIT_S)

    async def _on_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self._rebalancing = False
        self.metrics.assigned = sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned)
        log.info("partitions assigned: %s", names(assigned))
        if self.watch is not None:  # compared with their fences before their first records
            self.watch.forget(assigned)

    @Service.task
    async def _watcher(self) -> None:
        """Missing input topics and partitions reset behind their fence (:mod:`.watch`)."""
        while not self.should_stop:
            await self.sleep(WATCH_INTERVAL_S)
            consumer, watch = self._consumer, self.watch
            if consumer is None or watch is None or self._stopping:
                continue
            try:
                await asyncio.wait_for(watch.check(consumer), WATCH_INTERVAL_S)
            except Exception as exc:  # broker or Redis down: reported by the batch path
                log.debug("topic watch skipped: %r", exc)

    async def _wait_inflight(self, timeout: float) -> None:
        task = self._inflight
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=timeout)

    # -- introspection --------------------------------------------------------------------------
    def behind(self) -> int:
        """Records fetched by nobody yet on this worker's partitions: the backlog it is in."""
        return sum(self.lag().values())

    def lag(self) -> dict[str, int]:
        """Records behind the broker's high watermark per assigned partition (approximate)."""
        consumer = self._consumer
        if consumer is None:
            return {}
        out: dict[str, int] = {}
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            done = self.metrics.fetched_upto.get((tp.topic, tp.partition), -1)
            out[f"{tp.topic}[{tp.partition}]"] = max(0, high - (done + 1))
        return out
