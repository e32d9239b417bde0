"""The scoring rounds: take customers from the queue, read, assign, write, hand over to publish.

One round of at most ``queue.ROUND_MAX`` customers:

1. its customers' state: their latest snapshot, or, for those without one (crash repair, sweep,
   rescore, conflicts, backlog), one Lua read; for a model with categorical features, also one
   read of those customers' attribute fields (the snapshot holds numbers only), sent with it;
2. :func:`worker.scoring.decide.decide` against the current model; :func:`.plan.build`;
3. one Lua write, sent (:meth:`ScoringStorePort.send_write`); its reply (conflicts back in the
   queue, counts) and the publication follow in the pipeline; the online model and drift learn
   the round once its changes are acknowledged, off the changes' way to their consumers.

The pipeline (:class:`~worker.scoring.publishing.Publications`) holds up to its ``depth`` rounds
whose changes are not published yet, never two with a customer in common. While ingestion is
idle the backlog is scored flat out: the next round's read is sent before this round is
assigned (read-ahead), and a round enters the pipeline as soon as its write is sent (its reply
is collected there). While ingestion is busy the round waits for its write's reply itself, so
the share's pause, a multiple of the round's time, counts it; only the publication is behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from segstream.settings import Settings
from worker.clock import Clock
from worker.scoring.decide import Decision, Model, attribute_fields, decide
from worker.scoring.drift import DriftWatch
from worker.scoring.metrics import ScoringMetrics
from worker.scoring.models import ModelHolder
from worker.scoring.pacing import Pacer
from worker.scoring.plan import OutgoingChange, build, outbox_entries
from worker.scoring.ports import Pending, ScoringStorePort
from worker.scoring.publishing import Publications
from worker.scoring.queue import ScoringQueue
from worker.scoring.status import StatusWriter
from worker.scoring.vectors import Round, fields_for
from worker.segmentation.model import SegmentModel
from worker.segmentation.online import OnlineModel

log = logging.getLogger(__name__)

#: With nothing queued, the loop looks at the queue again at least this often (s).
IDLE_WAIT_S = 0.5
#: After a failed round, the loop waits this long before the next (s).
FAILED_ROUND_WAIT_S = 0.5

Reasons = Mapping[str, str | None]


Attributes = dict[str, list[bytes | None]]


@dataclass(frozen=True)
class Gathered:
    """A round's state: the snapshot and read parts, for the model fields they hold."""

    fields: tuple[str, ...]
    parts: list[Round]
    #: The attribute fields read for the model's categorical features (empty: none) ...
    attr_fields: tuple[str, ...] = ()
    #: ... and each customer's values of them (``None`` for a numeric-only model).
    attributes: Attributes | None = None


@dataclass
class Ahead:
    """The next round, taken out of the queue, its read already sent (read-ahead)."""

    items: dict[str, str | None]
    fields: tuple[str, ...]
    snapped: Round | None
    #: The read Redis has (``None``: every customer had a snapshot, or the send failed).
    reading: Pending[Round] | None
    #: Why the read could not be sent: raised by :meth:`gathered`, so that round fails.
    error: Exception | None = None
    attr_fields: tuple[str, ...] = ()
    #: The attribute read (a model with categorical features only).
    attr_reading: Pending[Attributes] | None = None

    async def gathered(self) -> Gathered:
        if self.error is not None:
            self.abandon()
            raise self.error
        parts = [] if self.snapped is None else [self.snapped]
        try:
            if self.reading is not None:
                parts.append(await self.reading.result())
        except BaseException:
            if self.attr_reading is not None:
                self.attr_reading.abandon()
            raise
        attributes = None if self.attr_reading is None else await self.attr_reading.result()
        return Gathered(self.fields, parts, self.attr_fields, attributes)

    def abandon(self) -> None:
        """Nobody will wait for the read (its customers are still in ``unscored``)."""
        if self.reading is not None:
            self.reading.abandon()
        if self.attr_reading is not None:
            self.attr_reading.abandon()


@dataclass(frozen=True)
class Written:
    """A round whose write is sent: what its reply and publication need."""

    items: Reasons
    sent: dict[str, OutgoingChange]
    decisions: list[tuple[Round, Decision]]
    model: Model
    online: OnlineModel | None
    writing: Pending[tuple[list[str], str]]


class RoundRunner:
    """Scores the queue in rounds, with read-ahead and a pipeline of unpublished rounds."""

    def __init__(
        self,
        settings: Settings,
        queue: ScoringQueue,
        pacer: Pacer,
        holder: ModelHolder,
        store: ScoringStorePort,
        publications: Publications,
        drift: DriftWatch,
        status: StatusWriter,
        metrics: ScoringMetrics,
        clock: Clock,
        as_of_ms: Callable[[], int],
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.pacer = pacer
        self.holder = holder
        self.store = store
        self.publications = publications
        self.drift = drift
        self.status = status
        self.metrics = metrics
        self.clock = clock
        self.as_of_ms = as_of_ms
        #: Held while a round is assigned and written; a model reload waits for it.
        self.lock = asyncio.Lock()
        #: The customers of the round being scored and of the one read ahead (the repair
        #: leaves them alone).
        self.in_round: Mapping[str, str | None] = {}
        self.ahead: Ahead | None = None

    @property
    def depth(self) -> int:
        """How many rounds may be between "write sent" and "published" (the pipeline's depth).

        While ingestion is busy, the round waiting for its own write's reply comes on top.
        """
        return self.publications.depth

    async def run(self, stopping: Callable[[], bool]) -> None:
        """Score rounds until ``stopping()``; a failed round goes back in the queue."""
        queue = self.queue
        while not stopping():
            ahead, self.ahead = self.ahead, None
            if ahead is None and not queue.pending:
                if self.status.stale:
                    with contextlib.suppress(Exception):
                        await self.status.save(force=True)
                await queue.wait_for_work(IDLE_WAIT_S)
                continue
            take = ahead.items if ahead is not None else queue.take()
            self.in_round = take
            queue.urgent = False
            try:
                started = self.clock.monotonic()
                gathered = None if ahead is None else await ahead.gathered()
                await self.read_ahead(take)
                await self.score(take, gathered)
                if self.pacer.catching_up():
                    self.metrics.catch_up_rounds += 1
                round_s = self.clock.monotonic() - started
                await self.pacer.pause(round_s, lambda: stopping() or queue.urgent)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                queue.requeue(take)
                self.metrics.note(f"scoring round failed: {type(exc).__name__}: {exc}")
                log.warning("scoring round of %d failed (%s: %s); retrying", len(take),
                            type(exc).__name__, exc)  # fmt: skip
                await self.clock.sleep(FAILED_ROUND_WAIT_S)

    async def read_ahead(self, current: Reasons) -> None:
        """While ingestion is idle, send the next round's read before this one is assigned.

        Redis then reads round N+1 while this process assigns round N. Returns once Redis has
        the read (a read sent only at the next await would run after this round's write). Not
        while ingestion is busy: a pause follows each round then, and a state read before it
        would mostly be stale (its writes would conflict). The rounds stay disjoint (both are
        out of the queue), and a read made for another model's fields is made again
        (:meth:`score`). A read that cannot be sent fails the next round, which goes back in
        the queue.
        """
        if not self.queue.pending or not self.pacer.ingest_idle():
            return
        nxt = self.queue.take()
        self.in_round = {**current, **nxt}
        model = self.holder.model
        fields = fields_for(model.feature_names)
        attr_fields = attribute_fields(model)
        snapped, without = self.queue.snapshots.take(nxt, fields)
        ahead = self.ahead = Ahead(nxt, fields, snapped, None, attr_fields=attr_fields)
        try:
            if without:
                ahead.reading = await self.store.send_read(without, fields)
            if attr_fields:
                ahead.attr_reading = await self.store.send_attributes(list(nxt), attr_fields)
        except Exception as exc:  # raised by the round that needs it
            ahead.error = exc

    async def gather(
        self, items: Reasons, fields: tuple[str, ...], attr_fields: tuple[str, ...] = ()
    ) -> Gathered:
        """The customers' state: their latest snapshot, or one read for those without; and
        their ``attr_fields`` (a model with categorical features), read alongside."""
        snapped, without = self.queue.snapshots.take(items, fields)
        parts = [] if snapped is None else [snapped]
        pending = await self.store.send_read(without, fields) if without else None
        try:
            attr = (
                await self.store.send_attributes(list(items), attr_fields) if attr_fields else None
            )
        except BaseException:
            if pending is not None:
                pending.abandon()
            raise
        try:
            if pending is not None:
                parts.append(await pending.result())
        except BaseException:
            if attr is not None:
                attr.abandon()
            raise
        attributes = None if attr is None else await attr.result()
        return Gathered(fields, parts, attr_fields, attributes)

    async def score(self, items: Reasons, gathered: Gathered | None = None) -> int:
        """Score one round (its state ``gathered`` ahead, or now); returns the changes.

        With ingestion idle, returns once Redis has the round's write and the round is in the
        pipeline; the count is then that of the changes planned (conflicts, known later, are
        not subtracted). Else returns after the write's reply, with its publication started.
        """
        items = self.queue.relabel(items)
        async with self.lock:
            started = self.clock.monotonic()
            model = self.holder.model
            as_of_ms = self.as_of_ms()
            fields = fields_for(model.feature_names)
            attr_fields = attribute_fields(model)
            if gathered is None or (gathered.fields, gathered.attr_fields) != (fields, attr_fields):
                gathered = await self.gather(items, fields, attr_fields)
            margin = self.settings.scoring.hysteresis_margin
            attributes = gathered.attributes
            decisions = [
                (rnd, decide(model, rnd, as_of_ms, margin, attributes)) for rnd in gathered.parts
            ]
            plan, sent = build(model.version, decisions, items, as_of_ms)
            writing = await self.store.send_write(
                model.version, as_of_ms, plan, outbox_entries(sent)
            )
            online = self.holder.online if isinstance(model, SegmentModel) else None
            written = Written(items, sent, decisions, model, online, writing)
            if self.pacer.ingest_idle():
                await self.publications.start(frozenset(sent), lambda: self._behind(written))
                changes = len(sent)
            else:
                publish, token, conflicts = self._settle(written, await writing.result())
                await self.publications.publish_behind(
                    publish, token, then=lambda: self._learn(written, conflicts)
                )
                changes = len(publish)
            self.metrics.round_seconds_sum += self.clock.monotonic() - started
        await self.status.save()
        return changes

    async def _behind(self, written: Written) -> int:
        """A round in the pipeline: its write's reply, then its publication.

        A failed write puts the whole round back in the queue (its customers stay in
        ``unscored``, so the repair would find them too).
        """
        try:
            reply = await written.writing.result()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.queue.requeue(written.items)
            self.metrics.note(f"scoring write failed: {type(exc).__name__}: {exc}")
            log.warning("scoring write of %d failed (%s: %s); re-queued", len(written.items),
                        type(exc).__name__, exc)  # fmt: skip
            return 0
        publish, token, conflicts = self._settle(written, reply)
        await self.publications.publish(publish, token)
        await self._learn(written, conflicts)
        return len(publish)

    def _settle(
        self, written: Written, reply: tuple[list[str], str]
    ) -> tuple[list[OutgoingChange], str, set[str]]:
        """After a round's write: conflicts back in the queue, counts.

        Returns the changes to publish (those of customers not in conflict), the outbox field
        that holds them, and the customers in conflict.
        """
        conflicts_list, token = reply
        conflicts = set(conflicts_list)
        items, decisions = written.items, written.decisions
        publish = [c for cid, c in written.sent.items() if cid not in conflicts]
        self.queue.requeue({cid: items.get(cid) for cid in conflicts})
        m = self.metrics
        m.rounds += 1
        m.scored += sum(len(rnd) for rnd, _ in decisions) - len(conflicts)
        m.changes += len(publish)
        m.conflicts += len(conflicts)
        m.missing += sum(len(rnd.missing) for rnd, _ in decisions)
        return publish, token, conflicts

    async def _learn(self, written: Written, conflicts: set[str]) -> None:
        """The online model and drift learn the round, once its changes are out: what they
        cost is never on a change's way to its consumers. A failure here fails no round."""
        online, model = written.online, written.model
        if online is None or not isinstance(model, SegmentModel):
            return
        try:
            self.drift.learn(online, written.decisions, written.items, conflicts)
            await self.drift.check()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.metrics.note(f"drift learning failed: {type(exc).__name__}: {exc}")
            log.warning("the online model could not learn a round (%s: %s)",
                        type(exc).__name__, exc)  # fmt: skip
