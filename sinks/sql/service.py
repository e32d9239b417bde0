"""The sink's loop: consume segment-changes, write batches with their offsets, dead-letter the rest.

Exactly once without Kafka's group commits: the sink assigns itself every partition of the
topic and seeks each to the offset stored in the database (the beginning when none is), and
every batch commits its rows and the next offsets in one transaction. A crash (kill -9
included) loses at most an uncommitted transaction, whose records are read again. And even if
the offsets were behind, the writes are idempotent: ``customer_segment`` only takes a higher
``segment_seq``, ``segment_history`` ignores a ``(customer_id, segment_seq)`` it holds, and a
tombstone deletes what is there.

Records that cannot be decoded go to the dead-letter topic before the batch commits (at least
once, like the worker's); a record the database refuses is found by splitting the batch and
dead-lettered alone. A database or broker that does not answer is waited out with the same
batch: nothing is skipped. ``once``: read up to the end offsets seen at start, then return.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.errors import SchemaError
from segstream.redact import redact
from segstream.security import kafka_options
from segstream.settings import Settings
from sinks.sql.changes import Change, Decoded, Position, Reject, Tombstone, decode_record
from sinks.sql.database import Database, RecordRefused
from sinks.sql.plan import BatchPlan, halves, plan_batch
from sinks.sql.profiles import ProfileRow, model_profile_rows, rules_profile_rows
from worker.backoff import backoff
from worker.ingest.batch import Rejected
from worker.ingest.dead_letter import DeadLetterSink
from worker.segmentation.artifacts_redis import RedisModelStore
from worker.segmentation.rules import RULES_VERSION

log = logging.getLogger(__name__)

#: How often (s) the topic's partitions are looked up again (a topic may grow).
PARTITION_REFRESH_S = 60.0
#: How long a model version whose artifact could not be read waits before the next try (s).
PROFILE_RETRY_S = 30.0
#: Progress is logged at most this often (s).
PROGRESS_EVERY_S = 30.0


@dataclass
class SinkStats:
    changes: int = 0
    tombstones: int = 0
    dead_letters: int = 0
    batches: int = 0
    profiles: int = 0
    outages: int = 0
    last_problem: str = ""
    versions: set[str] = field(default_factory=set)


class Stopping(Exception):
    """The sink was asked to stop while waiting out an outage."""


ProfileLoader = Callable[[str], list[ProfileRow]]


def redis_profile_loader(settings: Settings) -> ProfileLoader:
    """Profiles of a version from the model artifact in Redis (``rules-v1``: names only)."""
    store: RedisModelStore | None = None

    def load(version: str) -> list[ProfileRow]:
        nonlocal store
        now = datetime.now(UTC)
        if version == RULES_VERSION:
            return rules_profile_rows(now)
        if store is None:
            store = RedisModelStore.from_settings(settings.redis)
        return model_profile_rows(store.load(version), now)

    return load


class SqlSink:
    """Keeps ``database`` in step with the segment-changes topic (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        *,
        once: bool = False,
        profiles: ProfileLoader | None = None,
        dead_letters: DeadLetterSink | None = None,
    ) -> None:
        self.settings = settings
        self.topic = settings.kafka.segment_changes_topic
        self.database = database
        self.once = once
        self.batch_records = max(1, settings.sink.sql_batch_records)
        self.load_profiles = profiles or redis_profile_loader(settings)
        self.dead_letters = dead_letters or DeadLetterSink(
            settings.kafka.bootstrap,
            settings.kafka.dead_letter_topic,
            client=kafka_options(settings.kafka),
        )
        self.stats = SinkStats()
        self._stop = asyncio.Event()
        self._known: set[str] = set()
        self._profile_failed: dict[str, float] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._ends: dict[TopicPartition, int] = {}
        self._last_progress = time.monotonic()

    def stop(self) -> None:
        self._stop.set()

    # -- the database, off the event loop --------------------------------------------------------
    async def _db(self, what: str, op: Callable[[], Any]) -> Any:
        """``op`` in a thread, retried through outages (reconnecting) until it works."""
        attempt = 0
        while True:
            if self._stop.is_set() and attempt:
                raise Stopping(what)
            try:
                return await asyncio.to_thread(op)
            except RecordRefused:
                raise
            except Exception as exc:
                text = redact(f"{what} failed: {type(exc).__name__}: {exc}")
                self.stats.outages += 1
                self.stats.last_problem = text
                if attempt == 0 or attempt % 10 == 0:
                    log.warning("%s; retrying (attempt %d)", text, attempt + 1)
                await asyncio.sleep(backoff(attempt) * 2)
                attempt += 1
                try:
                    await asyncio.to_thread(self.database.connect)
                except Exception as again:
                    log.debug("reconnect failed: %s", redact(str(again)))

    # -- start, partitions ---------------------------------------------------------------------
    async def start(self) -> tuple[int, int]:
        """Connect, migrate the schema, start the clients; ``(schema from, schema to)``."""
        await self._db("connecting to the database", self.database.connect)
        migrated: tuple[int, int] = await self._db("migrating the schema", self.database.migrate)
        self._known = set(await self._db("reading profiles", self.database.known_versions))
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="segstream-sink-sql",
            **kafka_options(self.settings.kafka),
        )
        await consumer.start()
        self._consumer = consumer
        await self.dead_letters.start()
        await self._assign()
        if self.once:
            self._ends = await consumer.end_offsets(self._partitions)
        return migrated

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        await self.dead_letters.stop()
        self.database.close()

    async def _assign(self) -> None:
        """Own every partition of the topic, each at the offset the database holds."""
        consumer = self._consumer
        assert consumer is not None
        attempt = 0
        while True:
            await consumer.topics()  # fetches the cluster's metadata
            found = consumer.partitions_for_topic(self.topic)
            if found:
                break
            if self._stop.is_set():
                raise Stopping("waiting for the topic")
            if attempt % 20 == 0:
                log.warning("topic %s not found yet; waiting", self.topic)
            await asyncio.sleep(min(5.0, 0.5 * (attempt + 1)))
            attempt += 1
        partitions = [TopicPartition(self.topic, p) for p in sorted(found)]
        stored: dict[int, int] = await self._db(
            "reading offsets", lambda: self.database.offsets(self.topic)
        )
        consumer.assign(partitions)
        for tp in partitions:
            if tp.partition in stored:
                consumer.seek(tp, stored[tp.partition])
            else:
                await consumer.seek_to_beginning(tp)
        self._partitions = partitions
        log.info(
            "sink: %d partition(s) of %s from %s", len(partitions), self.topic,
            {tp.partition: stored.get(tp.partition, "beginning") for tp in partitions},
        )  # fmt: skip

    async def _drained(self) -> bool:
        consumer = self._consumer
        assert consumer is not None
        for tp in self._partitions:
            if await consumer.position(tp) < self._ends.get(tp, 0):
                return False
        return True

    # -- the loop --------------------------------------------------------------------------------
    async def run(self) -> SinkStats:
        """Until stopped (or, with ``once``, drained to the end offsets seen at start)."""
        consumer = self._consumer
        assert consumer is not None, "start() first"
        refreshed = time.monotonic()
        try:
            while not self._stop.is_set():
                if self.once and await self._drained():
                    break
                fetched = await consumer.getmany(timeout_ms=500, max_records=self.batch_records)
                records = self._decode(fetched)
                if records:
                    await self.apply(records)
                self._progress()
                if not self.once and time.monotonic() - refreshed > PARTITION_REFRESH_S:
                    refreshed = time.monotonic()
                    await consumer.topics()
                    found = consumer.partitions_for_topic(self.topic) or set()
                    if len(found) != len(self._partitions):
                        await self._assign()
        except Stopping:
            log.info("sink stopping during an outage; nothing uncommitted was kept")
        return self.stats

    def _decode(self, fetched: dict[TopicPartition, list[Any]]) -> list[Decoded]:
        out: list[Decoded] = []
        for tp in sorted(fetched, key=lambda t: t.partition):
            for message in fetched[tp]:
                at = Position(tp.topic, tp.partition, message.offset)
                out.append(decode_record(at, message.key, message.value, message.headers))
        return out

    async def apply(self, records: Sequence[Decoded]) -> None:
        """Dead-letter the rejects, then write the batch (split around what the DB refuses)."""
        rejects = [r for r in records if isinstance(r, Reject)]
        if rejects:
            await self._dead_letter(rejects)
        parts: list[Sequence[Decoded]] = [records]
        while parts:
            part = parts.pop(0)
            plan = plan_batch(part)
            profiles = await self._profiles(plan.versions)
            try:
                await self._db("writing a batch", _writer(self.database, plan, profiles))
            except RecordRefused as exc:
                if len(part) > 1:
                    parts[:0] = list(halves(part))
                    continue
                poison = self._refused(part[0], str(exc))
                await self._dead_letter([poison])
                parts.insert(0, [poison])
                continue
            self._known |= {p.model_version for p in profiles}
            self.stats.batches += 1
            self.stats.changes += len(plan.history)
            self.stats.tombstones += sum(isinstance(r, Tombstone) for r in part)
            self.stats.profiles += len(profiles)
            self.stats.versions |= plan.versions

    def _refused(self, record: Decoded, why: str) -> Reject:
        if isinstance(record, Reject):
            return record
        if isinstance(record, Change):
            key, value = record.row.customer_id.encode(), record.raw
        else:
            key, value = record.customer_id.encode(), b""
        return Reject(record.at, key, value, SchemaError("$", redact(why)[:2000]))

    async def _dead_letter(self, rejects: Sequence[Reject]) -> None:
        rejected = [
            Rejected(r.at.topic, r.at.partition, r.at.offset, r.key, r.value, r.error)
            for r in rejects
        ]
        attempt = 0
        while True:
            try:
                await self.dead_letters.send(rejected)
                break
            except Exception as exc:
                if self._stop.is_set():
                    raise Stopping("dead-lettering") from exc
                self.stats.outages += 1
                self.stats.last_problem = redact(f"dead-lettering failed: {exc!r}")
                if attempt % 10 == 0:
                    log.warning("%s; retrying", self.stats.last_problem)
                await asyncio.sleep(backoff(attempt) * 2)
                attempt += 1
        self.stats.dead_letters += len(rejects)

    async def _profiles(self, versions: frozenset[str]) -> list[ProfileRow]:
        """Rows for the versions ``segment_profile`` lacks (a missing artifact: retried later)."""
        rows: list[ProfileRow] = []
        now = time.monotonic()
        for version in sorted(versions - self._known):
            if now - self._profile_failed.get(version, -PROFILE_RETRY_S) < PROFILE_RETRY_S:
                continue
            try:
                rows += await asyncio.to_thread(self.load_profiles, version)
                self._profile_failed.pop(version, None)
            except Exception as exc:
                self._profile_failed[version] = now
                log.warning(
                    "no profile for model %s yet (%s); its changes are written, the profile "
                    "follows when the artifact can be read",
                    version, redact(f"{type(exc).__name__}: {exc}"),
                )  # fmt: skip
        return rows

    def _progress(self) -> None:
        if time.monotonic() - self._last_progress < PROGRESS_EVERY_S:
            return
        self._last_progress = time.monotonic()
        s = self.stats
        log.info(
            "sink: %d changes, %d tombstones, %d dead letters in %d batches",
            s.changes, s.tombstones, s.dead_letters, s.batches,
        )  # fmt: skip


def _writer(database: Database, plan: BatchPlan, profiles: list[ProfileRow]) -> Callable[[], None]:
    return lambda: database.write(plan, profiles)


async def run_sink(
    sink: SqlSink, *, install_signals: bool = True
) -> tuple[tuple[int, int], SinkStats]:
    """Start, run until stopped or drained, close; ``((schema from, to), stats)``."""
    if install_signals:
        import signal

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, sink.stop)
    try:
        migrated = await sink.start()
        stats = await sink.run()
    finally:
        await sink.close()
    return migrated, stats
