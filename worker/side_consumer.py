"""What the worker's side consumers share: their own group, the fetch loop, retries, the commit.

Erase requests, profiles and campaigns each read one topic beside ingestion,
in a consumer group of their own (``<group_id>-<part>``, so they never join ingestion's
rebalances), and keep ingestion's promises (docs/state.md, "When a batch fails"): an outage is
waited out with backoff and nothing committed; anything else is retried ``poison_retries`` times
(``SEGSTREAM_POISON_RETRIES``; 0 = forever), then the consumer isolates what keeps failing and
dead-letters it; offsets are committed only once a fetch is done. What they write is idempotent
(fences, first write wins), so a fetch done again after a crash changes nothing. One copy of
that loop, so a fix reaches every consumer; a subclass says only what it does with a fetch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from mode import Service

from schemas.errors import SchemaError
from segstream.redact import redact
from segstream.security import kafka_options
from segstream.settings import Settings
from worker.backoff import backoff, retry
from worker.failure_notes import FailureNotes
from worker.ingest.batch import Rejected
from worker.ingest.dead_letter import DeadLetterSink
from worker.ingest.failures import Kind, classify
from worker.kafka_clients import started

log = logging.getLogger(__name__)

__all__ = ["Fetched", "SideConsumer", "SideMetrics", "Stopping"]

FETCH_TIMEOUT_MS = 500

Fetched = Mapping[TopicPartition, Sequence[ConsumerRecord[Any, Any]]]


class Stopping(Exception):
    """The service is stopping: leave the current fetch uncommitted."""


@dataclass
class SideMetrics(FailureNotes):
    """The counters every side consumer keeps (its own come after these); ``failures``: an
    outage is retried, anything else up to poison_retries times."""

    #: Records sent to the dead-letter topic (malformed, or kept failing).
    dead_lettered: int = 0


def _is_outage(exc: BaseException) -> bool:
    return classify(exc).kind is Kind.OUTAGE


class SideConsumer(Service):
    """Consumes ``topic`` as ``<group_id>-<part>``; a subclass gives :meth:`_open` and
    :meth:`handle` (and its class attributes)."""

    #: The group's suffix and the word in the service's log and error lines.
    part: str
    #: What the topic holds, for error lines ("fetch <noun> failed").
    noun: str
    #: Records per fetch: what one :meth:`handle` is sized for.
    fetch_max_records: int

    def __init__(self, settings: Settings, topic: str, metrics: SideMetrics, **kwargs: Any) -> None:
        self.settings = settings
        self.topic = topic
        self.metrics = metrics
        self.group_id = f"{settings.kafka.group_id}-{self.part}"
        self._consumer: AIOKafkaConsumer | None = None
        self._sink: DeadLetterSink | None = None
        #: What :meth:`_open` made that on_stop closes (after the consumer and the sink).
        self._closers: list[Callable[[], Awaitable[Any]]] = []
        self._stopping = False
        super().__init__(**kwargs)

    async def _open(self) -> None:
        """Make (and start, with :meth:`_retry`) what :meth:`handle` needs; add its closers."""
        raise NotImplementedError

    async def handle(self, fetched: Fetched) -> None:
        """One fetch (no empty partition): applied and its bad records dead-lettered; returns
        only then (the offsets are committed after it)."""
        raise NotImplementedError

    # -- lifecycle ------------------------------------------------------------------------------
    async def on_stop(self) -> None:
        self._stopping = True
        first = [c.stop for c in (self._consumer, self._sink) if c is not None]
        for closer in [*first, *self._closers]:
            with contextlib.suppress(Exception):
                await closer()

    @Service.task
    async def _run(self) -> None:
        try:
            await self._connect()
            await self._consume_forever()
        except (asyncio.CancelledError, Stopping):
            pass

    async def _connect(self) -> None:
        s = self.settings
        options = kafka_options(s.kafka)
        await self._open()
        self._sink = DeadLetterSink(s.kafka.bootstrap, s.kafka.dead_letter_topic, client=options)
        await self._retry(f"start the {self.part} dead-letter producer", self._sink.start)
        session_ms = int(s.kafka.session_timeout_s * 1000)

        async def connect() -> None:
            consumer = AIOKafkaConsumer(
                self.topic,
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

        await self._retry(f"start the {self.part} consumer", connect)
        log.info("%s: consuming %s as group %s", self.part, self.topic, self.group_id)

    # -- the loop -------------------------------------------------------------------------------
    async def _consume_forever(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        attempt = 0
        while not self._stopping:
            try:
                fetched = await consumer.getmany(
                    timeout_ms=FETCH_TIMEOUT_MS, max_records=self.fetch_max_records
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.note_error(f"fetch {self.noun} failed: {type(exc).__name__}: {exc}")
                await asyncio.sleep(backoff(attempt))
                attempt += 1
                continue
            fetched = {tp: records for tp, records in fetched.items() if records}
            if not fetched:
                continue
            try:
                await self._take(fetched)
                attempt = 0
            except (asyncio.CancelledError, Stopping):
                raise
            except Exception as exc:  # a bug on this path: go back, retry the fetch later
                self.metrics.note_error(f"{self.part} batch failed: {type(exc).__name__}: {exc}")
                log.exception("a %s batch failed; it is read again (attempt %d)", self.part,
                              attempt + 1)  # fmt: skip
                for tp, records in fetched.items():
                    consumer.seek(tp, records[0].offset)
                await asyncio.sleep(backoff(attempt))
                attempt += 1

    async def _take(self, fetched: Fetched) -> None:
        """Handle the fetch, then commit every partition's offset past it."""
        await self.handle(fetched)
        await self._commit({tp: records[-1].offset + 1 for tp, records in fetched.items()})

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit; a failure is noted and logged only (the next commit covers it, and what is
        done again changes nothing)."""
        consumer = self._consumer
        assert consumer is not None
        try:
            await consumer.commit(offsets)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.metrics.note_error(f"commit of {self.noun} failed: {type(exc).__name__}: {exc}")
            log.warning("commit of %s failed (%s: %s)", self.noun, type(exc).__name__, exc)

    async def _attempts(
        self,
        what: str,
        op: Callable[[], Awaitable[Any]],
        *,
        is_outage: Callable[[BaseException], bool] = _is_outage,
        hide: Iterable[str] = (),
    ) -> str | None:
        """``op()`` until it works (-> None) or was refused ``poison_retries`` times (-> the last
        error); outages are retried for as long as they last. ``hide``: customer ids the error
        lines must not name."""
        limit = self.settings.ingest.poison_retries
        attempt = refused = 0
        while True:
            if self._stopping:
                raise Stopping(what)
            try:
                await op()
                return None
            except (asyncio.CancelledError, Stopping):
                raise
            except Exception as exc:
                text = redact(f"{type(exc).__name__}: {exc}")
                for cid in hide:
                    text = text.replace(cid, "<customer>")
                self.metrics.note_error(f"{what} failed: {text}")
                if not is_outage(exc):
                    refused += 1
                    if limit and refused >= limit:
                        return text
                if attempt == 0 or attempt % 10 == 0:
                    log.warning("%s failed (%s); retrying (attempt %d)", what, text, attempt + 1)
                await asyncio.sleep(backoff(attempt))
                attempt += 1

    async def _dead_letter(self, record: ConsumerRecord[Any, Any], error: SchemaError) -> None:
        """Send ``record`` (its original bytes) to the dead-letter topic with ``error``."""
        value = record.value if isinstance(record.value, bytes) else b""
        rejected = Rejected(record.topic, record.partition, record.offset, record.key, value, error)
        await self._send_dead_letters([rejected])

    async def _send_dead_letters(self, rejected: Sequence[Rejected]) -> None:
        sink = self._sink
        assert sink is not None
        await self._retry(f"dead-letter {self.noun}", lambda: sink.send(rejected))
        self.metrics.dead_lettered += len(rejected)

    def report(self) -> dict[str, Any]:
        """The counters and the last error, for a page or a test."""
        return {k: v for k, v in vars(self.metrics).items() if k != "last_error_at"}

    async def _retry(self, what: str, op: Callable[[], Awaitable[Any]]) -> Any:
        """:func:`worker.backoff.retry` that stops when the service does."""

        def give_up() -> None:
            if self._stopping:
                raise Stopping(what)

        return await retry(what, op, noted=self.metrics.note_error, give_up=give_up)
