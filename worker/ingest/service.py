"""The batched orders + clicks consumer: a mode ``Service`` the faust app starts with itself.

Per fetched batch, in this order:

1. one decode+validate pass over the whole fetch (:func:`worker.ingest.batch.assemble`), and
   the state script's arguments built from it (``StateStore.prepare``);
2. rejected records -> dead-letter topic, acknowledged before anything else moves;
3. one ``StateStore.apply(batch)`` call (one Lua script: state, counters, per-partition offset
   fence and event-id dedup, atomically);
4. a manual commit of the Kafka offsets that apply covered (never before the Redis write), by a
   committer task beside the loop: the next batch's apply does not wait for the broker's
   answer, and offsets of several batches applied meanwhile go in one commit;
5. the listener's ``on_changed`` (:mod:`.listener`) with the customers whose state changed,
   once the next batch has reached Redis (or at once when no batch follows): the next apply
   does not wait for it.

While step 3 of batch N runs, batch N+1 is fetched, decoded and prepared (two-stage pipeline:
Redis runs one batch's script while this process builds the next one's arguments); batches are
applied strictly one after another, so the order per partition is kept. What happens when a
batch fails (an outage is waited out, a batch that keeps failing otherwise is isolated record by
record) is :mod:`worker.ingest.applier`'s job; the service never exits on its own. Exactness
does not depend on commits or on who owns a partition: the store skips every record at or below
its partition's fence, so a batch applied twice (after a crash, a rebalance, a timed-out call
that did reach Redis) changes nothing the second time. That is why a rebalance only has to stop
*committing* for revoked partitions, not fence them off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from mode import Service

from segstream.redact import redact
from segstream.settings import Settings
from worker.backoff import backoff
from worker.core.batch import ApplyResult, Batch, Record, SnapshotSpec
from worker.ingest.applier import Applied, BatchApplier, StateStoreLike, Stopping
from worker.ingest.batch import (
    Assembled,
    Rejected,
    assemble,
    change_reasons,
    offsets_to_commit,
)
from worker.ingest.dead_letter import DeadLetterSink
from worker.ingest.listener import ChangeListener, NullListener
from worker.ingest.quarantine import dead_letter_fetched, without
from worker.ingest.watch import WATCH_INTERVAL_S, TopicWatch, last_offsets
from worker.redis_io import Pending

log = logging.getLogger(__name__)

__all__ = ["IngestMetrics", "IngestService", "StateStoreLike"]

#: How long a rebalance waits for the in-flight batch before letting it finish uncommitted.
REVOKE_WAIT_S = 5.0
FETCH_TIMEOUT_MS = 200
#: How long the broker may hold a fetch waiting for data. aiokafka's default (500 ms) puts up to
#: that much on event-to-state latency when traffic is light; 20 ms costs a few idle fetches.
FETCH_MAX_WAIT_MS = 20


@dataclass
class IngestMetrics:
    """In-process counters for /health and /metrics (Redis holds the authoritative ones)."""

    state: str = "starting"
    batches: int = 0
    received: int = 0
    valid: int = 0
    dead_lettered: int = 0
    applied: int = 0
    duplicates: int = 0
    fetch_errors: int = 0
    commits: int = 0
    commit_failures: int = 0
    hook_failures: int = 0
    #: The batch loop itself raised (not a record, not Redis): retried from the batch.
    batch_path_failures: int = 0
    #: Control-topic records that are not control messages (dead-lettered by the app's agent).
    control_dead_lettered: int = 0
    apply_seconds_sum: float = 0.0
    apply_seconds_max: float = 0.0
    last_error: str | None = None
    last_error_at: float | None = None
    last_applied_at: float | None = None
    rebalances: int = 0
    sweeps: int = 0
    recency_crossed: int = 0
    assigned: list[str] = field(default_factory=list)
    fetched_upto: dict[tuple[str, int], int] = field(default_factory=dict)


class InflightFailed(Exception):
    """The in-flight batch's task raised; carries what was fetched for it, to fetch it again."""

    def __init__(self, error: Exception, fetched: dict[TopicPartition, list[Any]]) -> None:
        super().__init__(str(error))
        self.error, self.fetched = error, fetched


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: IngestService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.service._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.service._on_assigned(assigned)


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
        #: The null listener is never told about changes: no reasons are computed for it.
        self._listening = type(listener) is not NullListener
        self.applier: BatchApplier | None = None
        self.watch: TopicWatch | None = None
        self.metrics = IngestMetrics()
        self._consumer: AIOKafkaConsumer | None = None
        self._sink: DeadLetterSink | None = None
        self._inflight: asyncio.Task[None] | None = None
        self._inflight_fetched: dict[TopicPartition, list[Any]] = {}
        #: Applied batches not reported to ``listener.on_changed`` yet, oldest first.
        self._changes_due: list[tuple[Batch, ApplyResult]] = []
        #: True while the loop waits in ``getmany`` (no batch is being prepared).
        self._fetching = False
        #: Applied, not yet committed: (topic, partition) -> highest applied offset.
        self._uncommitted: dict[tuple[str, int], int] = {}
        self._applied = asyncio.Event()
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
        self._sink = DeadLetterSink(s.kafka.bootstrap, s.kafka.dead_letter_topic)
        await self._retry("start dead-letter producer", self._sink.start)
        self.watch = TopicWatch(
            s.kafka.input_topics,
            self.store.fences,
            s.redis.prefix,
            lambda reported: last_offsets(s.kafka.bootstrap, reported),
        )
        self.applier = BatchApplier(
            self.store,
            self._sink,
            poison_retries=s.ingest.poison_retries,
            stopping=lambda: self._stopping,
            on_state=self._set_state,
        )
        session_ms = int(s.kafka.session_timeout_s * 1000)

        async def start_consumer() -> None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=s.kafka.bootstrap,
                group_id=s.kafka.group_id,
                client_id=f"segstream-ingest-{s.kafka.group_id}",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=session_ms,
                heartbeat_interval_ms=max(500, session_ms // 3),
                max_poll_records=s.ingest.batch_max_records,
                max_poll_interval_ms=300_000,
                fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            )
            consumer.subscribe(list(s.kafka.input_topics), listener=_Listener(self))
            try:
                await consumer.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await consumer.stop()
                raise
            self._consumer = consumer

        await self._retry("start consumer", start_consumer)
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
                self._note_error(f"fetch failed: {exc!r}")
                await asyncio.sleep(backoff(fetch_errors))
                fetch_errors += 1
                continue
            try:
                await self._handle(fetched)
                if loop_failures and self.metrics.state == "retrying-batch":
                    log.info("ingest resumed: the batch path works again")
                    self._set_state("running", None)
                loop_failures = 0
            except Stopping:
                return
            except Exception as exc:  # never expected: the batch path itself failed
                loop_failures = await self._handle_failed(exc, fetched, loop_failures + 1)

    async def _handle(self, fetched: dict[TopicPartition, list[Any]]) -> None:
        """One fetch: hold unchecked partitions, decode + prepare, wait for N-1, start N."""
        store, s = self.store, self.settings
        if fetched:
            fetched = await self._hold_unchecked(fetched)
        if not fetched:
            if self._inflight is not None and self._inflight.done():
                await self._finish_inflight()
            if self._inflight is None:
                await self._report_changes()
            return
        assembled = assemble(fetched.values(), s.kafka.orders_topic, s.kafka.clicks_topic)
        assembled, prepared = _prepare(store, assembled, self.listener.snapshot_spec())
        for tp, records in fetched.items():
            self.metrics.fetched_upto[(tp.topic, tp.partition)] = records[-1].offset
        # Batch N+1 is decoded and its script arguments built; wait for batch N (its apply
        # ran in Redis meanwhile).
        await self._finish_inflight()
        if self._stopping:
            raise Stopping("consume")
        await self._start(assembled, prepared, fetched)
        await self._report_changes()  # the previous batches', while Redis applies this one

    async def _handle_failed(
        self, exc: Exception, fetched: dict[TopicPartition, list[Any]], attempt: int
    ) -> int:
        """The batch path raised (a bug, not a record): retry from the batch, then set it aside.

        The consumer is sent back to the first record of the failed batch, nothing of it is
        committed, and ``/health`` says so. After ``poison_retries`` failures in a row its
        records are dead-lettered with the error (and counted, and the fence moved past them),
        so no input can block a partition for good. Returns the failures in a row so far.
        """
        if isinstance(exc, InflightFailed):
            fetched, exc = exc.fetched, exc.error
        where = _fmt_fetched(fetched)
        text = redact(f"{type(exc).__name__}: {exc}")
        self.metrics.batch_path_failures += 1
        self._set_state("retrying-batch", f"processing {where} failed: {text}")
        log.error(
            "processing %s failed (attempt %d): %s; retrying from its first record, "
            "nothing committed",
            where,
            attempt,
            text,
            exc_info=exc,
        )
        limit, applier, consumer = self.settings.ingest.poison_retries, self.applier, self._consumer
        if limit and attempt >= limit and applier is not None and fetched:
            reason = f"the batch path failed {attempt} times with this record's batch: {text}"
            letters, dead = dead_letter_fetched(fetched, reason)
            await applier.send_dead_letters(letters)
            await applier.apply_record_free(dead)
            self.metrics.received += len(letters)
            self.metrics.dead_lettered += len(letters)
            self._book_offsets(dead)
            self._set_state("running", None)
            return 0
        if consumer is not None:
            for tp, records in fetched.items():
                with contextlib.suppress(Exception):  # revoked meanwhile: the new owner reads
                    consumer.seek(tp, records[0].offset)
        await asyncio.sleep(backoff(attempt))
        return attempt

    async def _hold_unchecked(
        self, fetched: dict[TopicPartition, list[Any]]
    ) -> dict[TopicPartition, list[Any]]:
        """Records of partitions not yet compared with their fence wait for that comparison.

        A partition found reset (:mod:`.watch`) gives its records back: the consumer is sent
        back to the first one and the partition stays paused, so nothing is skipped as
        "already applied" and nothing is committed.
        """
        watch, consumer = self.watch, self._consumer
        if watch is None or consumer is None:
            return fetched
        unchecked = [tp for tp in fetched if tp not in watch.checked]
        if not unchecked:
            return fetched
        try:
            await watch.check_partitions(consumer, unchecked, assigned=True)
        except Exception as exc:  # Redis or the broker: hold the records, try again
            log.warning("could not compare %s with their fences: %r", _fmt(unchecked), exc)
            await asyncio.sleep(backoff(3))
        for tp in unchecked:
            if tp not in watch.checked:
                consumer.seek(tp, fetched.pop(tp)[0].offset)
        return fetched

    async def _start(
        self, assembled: Assembled, prepared: Any, fetched: dict[TopicPartition, list[Any]]
    ) -> None:
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
            except Exception as exc:  # its records are fetched again (_handle_failed)
                raise InflightFailed(exc, self._inflight_fetched) from exc

    async def _process(
        self, assembled: Assembled, sending: Awaitable[Pending[Applied]], started: float
    ) -> None:
        """Dead-letter, apply (:class:`BatchApplier`), then book the batch (commit, listener)."""
        m = self.metrics
        applied: Applied = await (await sending).result()
        elapsed = time.perf_counter() - started
        m.batches += 1
        m.received += assembled.received
        m.valid += len(assembled.batch.records) - applied.quarantined
        m.dead_lettered += len(assembled.rejected) + applied.quarantined
        m.apply_seconds_sum += elapsed
        m.apply_seconds_max = max(m.apply_seconds_max, elapsed)
        m.last_applied_at = time.time()
        for batch, result in applied.pieces:
            m.applied += result.applied
            m.duplicates += result.duplicates
            self._book_offsets(batch)
            if result.changed and self._listening:
                self._changes_due.append((batch, result))
        if self._changes_due and self._fetching:  # no next batch waits for this task: report now
            await self._report_changes()

    def _book_offsets(self, batch: Batch) -> None:
        """``batch`` is in Redis: its offsets go to the committer."""
        uncommitted = self._uncommitted
        for tp, offset in batch.high_offsets.items():  # every batch built here has them all
            if offset > uncommitted.get(tp, -1):
                uncommitted[tp] = offset
        self._applied.set()

    async def _report_changes(self) -> None:
        """``listener.on_changed`` for the applied batches not reported yet, oldest first.

        Not inside the apply task: the loop sends the next batch only once that task is done,
        so Redis waited for the listener (with scoring on, ~6 ms a batch of 5000 for the reasons
        and the queue, ~3 % of ingestion's time) although nothing it does depends on them.
        The loop calls this once the next batch has reached Redis, or when a fetch comes back
        empty; the task itself calls it when the loop is waiting for records (low rates: no
        batch to overlap with, so no delay either). Nothing is lost if the worker stops before
        the listener heard of a batch: the state script recorded every changed customer in
        ``unscored``.
        """
        due = self._changes_due
        while due:
            batch, result = due.pop(0)
            # a snapshot carries the reasons (the state script knows which events it applied)
            snap = result.snapshot
            reasons = None if snap is not None else change_reasons(batch.records, result.changed)
            try:
                await self.listener.on_changed(list(result.changed), reasons, snap)
            except Exception:
                self.metrics.hook_failures += 1
                log.exception("on_changed failed for %d customer(s)", len(result.changed))

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
            await self._applied.wait()
            self._applied.clear()
            await self._commit()

    async def _commit(self) -> None:
        consumer = self._consumer
        if consumer is None or self._rebalancing or self._stopping:
            return  # revoked or stopping: the fence covers redelivery, the new owner commits
        taken, self._uncommitted = self._uncommitted, {}
        assigned = [(tp.topic, tp.partition) for tp in consumer.assignment()]
        offsets = offsets_to_commit(taken, assigned)
        if not offsets:
            return
        try:
            await consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})
            self.metrics.commits += 1
        except (KafkaError, AssertionError) as exc:
            # The state is already in Redis with its fence; a later commit covers these offsets.
            self.metrics.commit_failures += 1
            self._note_error(f"commit failed (next commit covers it): {exc!r}")

    async def _retry(self, what: str, op: Callable[[], Awaitable[Any]]) -> Any:
        """Start-up steps (producer, consumer): retried with backoff until they work."""
        attempt = 0
        while True:
            if self._stopping:
                raise Stopping(what)
            try:
                return await op()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._set_state("retrying-broker", f"{what} failed: {type(exc).__name__}: {exc}")
                if attempt == 0 or attempt % 10 == 0:
                    log.warning(
                        "%s failed (%s: %s); retrying (attempt %d)",
                        what,
                        type(exc).__name__,
                        exc,
                        attempt + 1,
                    )
                await asyncio.sleep(backoff(attempt))
                attempt += 1

    def _set_state(self, state: str, error: str | None) -> None:
        self.metrics.state = state
        if error is not None:
            self._note_error(error)

    def _note_error(self, text: str) -> None:
        text = redact(text)  # it is shown on /health
        self.metrics.last_error = text
        self.metrics.last_error_at = time.time()
        log.debug(text)

    # -- rebalances -----------------------------------------------------------------------------
    async def _on_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self._rebalancing = True
        self.metrics.rebalances += 1
        log.info("partitions revoked: %s", _fmt(revoked))
        if self.watch is not None:
            self.watch.forget(revoked)
        await self._wait_inflight(REVOKE_WAIT_S)

    async def _on_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self._rebalancing = False
        self.metrics.assigned = sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned)
        log.info("partitions assigned: %s", _fmt(assigned))
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


def _fmt_fetched(fetched: dict[TopicPartition, list[Any]]) -> str:
    spans = (
        f"{tp.topic}[{tp.partition}]@{r[0].offset}-{r[-1].offset}" for tp, r in fetched.items()
    )
    return ", ".join(sorted(spans)) or "nothing"


def _fmt(tps: Sequence[TopicPartition]) -> str:
    return ", ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in tps)) or "none"


def _prepare(
    store: StateStoreLike, assembled: Assembled, spec: SnapshotSpec | None
) -> tuple[Assembled, Any]:
    """The state script's arguments; records that make building them raise are dead-lettered.

    Building them is pure and never expected to fail for a record the schemas accepted; if it
    does, each record is tried alone and the ones that raise are set aside with the exception in
    their reason. ``None`` (the store prepares again at apply) when the batch fails only whole.
    """
    try:
        return assembled, store.prepare(assembled.batch, spec)
    except Exception as exc:
        log.error(
            "preparing %d event(s) for the state store failed (%s: %s); trying them one by one",
            len(assembled.batch.records),
            type(exc).__name__,
            exc,
        )
    bad: dict[int, str] = {}
    for i, rec in enumerate(assembled.batch.records):
        try:
            store.prepare(_alone(rec), spec)
        except Exception as exc:
            bad[i] = f"could not be prepared for the state store: {type(exc).__name__}: {exc}"
    assembled = without(assembled, bad)
    try:
        return assembled, store.prepare(assembled.batch, spec)
    except Exception:
        return assembled, None


def _alone(rec: Record) -> Batch:
    return Batch([rec], {(rec.topic, rec.partition): rec.offset})
