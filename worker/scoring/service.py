"""``ScoringService``: the mode Service that assigns segments beside ingestion in the worker.

It owns the lifecycle (start-up, the background tasks, stop) and composes the parts, one job
each: :mod:`.queue` (who waits to be scored, and why), :mod:`.pacing` (how much of the time
scoring may take), :mod:`.rounds` (the rounds: read, assign, write, read-ahead),
:mod:`.publishing` (ordered publication behind the rounds, outbox replay), :mod:`.drift` (drift
notice, retrain), :mod:`.status` (the status in Redis). Redis and Kafka come in as
:mod:`.ports` (``store``, ``publisher``); time as a :class:`~worker.clock.Clock`.

Scoring runs behind ingestion, not inside its batch: a batch's offsets are committed as soon as
its state is in Redis, and a customer queued several times before its round is scored once, on
its latest state. Nothing is lost by that: the state script records every changed customer in
``{prefix}:unscored`` atomically with the state, and the service re-scores whatever is left
there at start-up and every ``dirty_repair_s`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any, TypeVar

from mode import Service

from segstream.settings import Settings
from worker.backoff import retry
from worker.clock import SYSTEM_CLOCK, Clock
from worker.core.batch import PackedSnapshot, SnapshotSpec
from worker.scoring import control
from worker.scoring.drift import DriftWatch
from worker.scoring.errors import ControlMessageInvalid
from worker.scoring.metrics import ScoringMetrics
from worker.scoring.models import ModelHolder
from worker.scoring.pacing import Pacer
from worker.scoring.ports import ChangePublisherPort, ScoringStorePort
from worker.scoring.publishing import PUBLISH_DEPTH, Publications
from worker.scoring.queue import ROUND_MAX, ScoringQueue
from worker.scoring.rounds import RoundRunner
from worker.scoring.status import StatusWriter
from worker.scoring.vectors import fields_for

log = logging.getLogger(__name__)
T = TypeVar("T")

#: No state-script snapshots while this many customers are queued (:meth:`snapshot_spec`).
SNAPSHOT_QUEUE_MAX = ROUND_MAX
#: A rescore request is claimed once per token for this long (s).
RESCORE_CLAIM_S = 7 * 86_400
#: How long a stopping worker waits for the last round's acknowledgements (s).
STOP_PUBLISH_WAIT_S = 5.0
#: How often :meth:`ScoringService.idle` looks again (s).
IDLE_POLL_S = 0.02


class ScoringService(Service):
    """Scores queued customers in rounds; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        store: ScoringStorePort,
        publisher: ChangePublisherPort,
        *,
        clock: Clock | None = None,
        behind: Callable[[], int] | None = None,
        **kwargs: Any,
    ) -> None:
        """``behind``: how many records ingestion has still to fetch (catch-up, :class:`Pacer`).

        ``kwargs`` go to mode's ``Service`` (``loop``).
        """
        self.settings = settings
        self.store = store
        self.publisher = publisher
        self.clock = clock = clock or SYSTEM_CLOCK
        self.holder = ModelHolder(store)
        self.metrics = metrics = ScoringMetrics()
        self.queue = ScoringQueue(clock, lambda: self.should_stop)
        self.pacer = Pacer(settings, clock, behind)
        self.publications = Publications(publisher, store, metrics, clock, PUBLISH_DEPTH)
        self.drift = DriftWatch(settings, self.holder, store, publisher, metrics, clock)
        self.status = StatusWriter(settings, self.holder, store, metrics, clock)
        self.rounds = RoundRunner(
            settings, self.queue, self.pacer, self.holder, store, self.publications,
            self.drift, self.status, metrics, clock, self.as_of_ms,
        )  # fmt: skip
        self.ready = False
        self._pinned_ms = _pinned_clock(settings.scoring.as_of)
        self._rescores: set[asyncio.Task[int]] = set()
        self._seen_request: str | None = None
        self._spec: SnapshotSpec | None = None
        super().__init__(**kwargs)

    @property
    def pending(self) -> dict[str, str | None]:
        """The queued customers (id -> reason)."""
        return self.queue.pending

    # -- the ingest seam (a ChangeListener) -----------------------------------------------------
    def snapshot_spec(self) -> SnapshotSpec | None:
        """The state fields the current model needs, asked of an apply while scoring keeps up.

        A snapshot saves a round its read only if the customer is scored before its next
        event, that is while the queue is short. Behind a backlog (a burst, a replay) most
        snapshots are replaced by a later one before any round uses them, and each still costs
        the state script Redis time for every changed customer of every batch. So none is
        asked for while :data:`SNAPSHOT_QUEUE_MAX` or more customers wait; their rounds read
        the state instead.
        """
        if not self.ready or len(self.queue) >= SNAPSHOT_QUEUE_MAX:
            return None
        spec = self._spec
        model = self.holder.model
        if spec is None or spec.version != model.version:
            spec = self._spec = SnapshotSpec(fields_for(model.feature_names), model.version)
        return spec

    async def on_changed(
        self,
        customer_ids: Sequence[str],
        reasons: Mapping[str, str] | None,
        snapshot: PackedSnapshot | None = None,
    ) -> None:
        self.pacer.ingest_changed()
        await self.queue.on_changed(customer_ids, reasons, snapshot)

    async def on_recency_crossed(self, customer_ids: Sequence[str]) -> None:
        self.enqueue(customer_ids, "recency_decay")

    async def on_control(self, raw: bytes) -> None:
        try:
            msg = control.decode(raw)
        except ControlMessageInvalid as exc:
            log.warning("%s", exc)
            return
        if msg["type"] == "model_update":
            await self.reload()
        elif msg["type"] == "rescore_all":
            await self.maybe_rescore(str(msg.get("token") or "control"))

    def enqueue(self, customer_ids: Sequence[str], reason: str | None, urgent: bool = True) -> None:
        """Queue customers (see :meth:`ScoringQueue.enqueue`)."""
        self.queue.enqueue(customer_ids, reason, urgent)

    async def idle(self, timeout: float) -> bool:
        """Until nothing is queued or being scored (for tests and the rescore command)."""
        clock, rounds, publications = self.clock, self.rounds, self.publications
        deadline = clock.monotonic() + timeout
        while self.queue.pending or rounds.lock.locked() or len(publications) or rounds.ahead:
            if clock.monotonic() > deadline:
                return False
            if len(publications) and publications.all_done() and not rounds.lock.locked():
                await publications.settled()
                continue
            await clock.sleep(IDLE_POLL_S)
        return True

    async def publish_settled(self) -> None:
        """Until every round's changes are acknowledged and out of the outbox."""
        await self.publications.settled()

    # -- lifecycle ------------------------------------------------------------------------------
    async def _retry(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        return await retry(what, op, noted=self.metrics.note, sleep=self.clock.sleep)

    @Service.task
    async def _main(self) -> None:
        """Start-up (producer, outbox, model, unscored customers), then the rounds."""
        await self._retry("start segment-changes producer", self.publisher.start)
        await self._retry("publish the outbox", self.publications.replay_outbox)
        await self._retry("load the current model", self.reload)
        await self._retry("queue unscored customers", self.enqueue_dirty)
        self.ready = True
        log.info("scoring ready with model %s", self.holder.version)
        await self.rounds.run(lambda: self.should_stop)

    async def on_stop(self) -> None:
        for task in list(self._rescores):
            task.cancel()
        if self.rounds.ahead is not None:  # its customers are still in unscored
            self.rounds.ahead.abandon()
        with contextlib.suppress(Exception):
            await self.status.save(force=True)
        with contextlib.suppress(Exception):  # acknowledged now or republished from the outbox
            await self.publications.wait(STOP_PUBLISH_WAIT_S)
        with contextlib.suppress(Exception):
            await self.publisher.stop()
        with contextlib.suppress(Exception):
            await self.store.close()

    async def _every(self, interval_s: float, what: str, op: Callable[[], Awaitable[Any]]) -> None:
        """``op`` every ``interval_s`` once ready; a failure is noted and the next turn retries."""
        while not self.should_stop:
            await self.sleep(interval_s)
            if not self.ready:
                continue
            try:
                await op()
            except Exception as exc:
                self.metrics.note(f"{what} failed: {type(exc).__name__}: {exc}")

    @Service.task
    async def _poll(self) -> None:
        """Follow ``{prefix}:model:current`` and rescore requests every ``model_poll_s``."""

        async def poll() -> None:
            await self.reload()
            token = await self.store.rescore_request()
            if token and token != self._seen_request:
                self._seen_request = token
                await self.maybe_rescore(token)

        await self._every(self.settings.scoring.model_poll_s, "model poll", poll)

    @Service.task
    async def _repair(self) -> None:
        """Re-score customers left in ``{prefix}:unscored`` (a crash between state and segment)."""
        await self._every(
            self.settings.scoring.repair_interval_s, "dirty repair", self.enqueue_dirty
        )

    # -- what the tasks do ----------------------------------------------------------------------
    def as_of_ms(self) -> int:
        """The scoring clock: pinned (``--scoring-as-of``) or the wall clock."""
        return self._pinned_ms if self._pinned_ms is not None else self.clock.time_ms()

    async def enqueue_dirty(self) -> int:
        """Queue every unscored customer not already queued or in the current round."""
        n = 0
        pending, in_round = self.queue.pending, self.rounds.in_round
        async for page in self.store.unscored_pages():
            owed = [c for c in page if c not in pending and c not in in_round]
            self.queue.enqueue(owed, None, urgent=False)
            n += len(owed)
        self.metrics.repaired += n
        return n

    async def reload(self) -> bool:
        """Swap in a new current model (between rounds); with ``rescore_all``, re-score all."""
        async with self.rounds.lock:
            changed = await self.holder.refresh()
        if changed:
            self.metrics.reloads += 1
            self.metrics.drift_exceeded = False
            await self.status.save(force=True)
            if self.settings.scoring.rescore_all:
                await self.maybe_rescore(f"model-{self.holder.version}")
        return changed

    async def maybe_rescore(self, token: str) -> bool:
        """Re-score every customer once per ``token`` across all workers (claimed in Redis)."""
        if not await self.store.claim(f"rescore:claim:{token}", RESCORE_CLAIM_S):
            return False
        task = asyncio.ensure_future(self.rescore_all(token))
        self._rescores.add(task)
        task.add_done_callback(self._rescores.discard)
        return True

    async def rescore_all(self, token: str = "") -> int:
        """Queue every customer (SCAN pages) with reason ``model_update``, paced by the loop.

        The current model is looked up first: a rescore request can arrive (control topic)
        before the next poll has seen the model it was made for.
        """
        self.metrics.rescore_runs += 1
        await self._retry("load the current model", self.reload)
        n = 0
        log.info("re-scoring every customer against %s (%s)", self.holder.version, token)
        async for page in self.store.customer_pages():
            self.queue.enqueue_rescore(page)
            n += len(page)
            await self.queue.wait_below(ROUND_MAX)
        self.metrics.rescored += n
        log.info("queued %d customer(s) for re-scoring", n)
        return n

    def report(self) -> dict[str, Any]:
        """What ``/scoring`` shows."""
        m = asdict(self.metrics)
        m["pending"] = len(self.queue)
        m["model_version"] = self.holder.version
        m["ready"] = self.ready
        m["drift_bound"] = self.settings.scoring.drift_bound
        m["catching_up"] = self.pacer.catching_up()
        return m


def _pinned_clock(text: str) -> int | None:
    if not text:
        return None
    from worker.reads import parse_as_of

    return int(parse_as_of(text).timestamp() * 1000)
