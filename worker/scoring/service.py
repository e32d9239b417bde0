"""``ScoringService``: the mode Service that assigns segments beside ingestion in the worker.

The ingest hooks only *queue* customers (``pending``: customer id -> reason), with the snapshot
of their new state the state script returned (:mod:`worker.scoring.snapshot`); one background
loop scores them in rounds of at most :data:`ROUND_MAX`:

1. the round's customers' state: their latest snapshot, or, for those without one (crash
   repair, sweep, rescore, conflicts), one Lua read;
2. :func:`worker.scoring.decide.decide`: features as of the scoring clock, vectorised assignment
   against the current model (rules-v1 until a K-means model exists), hysteresis;
3. one Lua write: segment, ``segment_seq`` (+1 on a real change), ``model_version``,
   ``seg_as_of``; the round's change events into the outbox; each customer out of
   ``{prefix}:unscored``; all conditional on the stamp its state was read at;
4. publish the round's changes (acks=all) and delete them from the outbox;
5. the online model learns from the round's scaled vectors; drift is checked and recorded.

Scoring runs behind ingestion, not inside its batch: a batch's offsets are committed as soon as
its state is in Redis, and a customer queued several times before its round is scored once, on
its latest state. Nothing is lost by that: the state script records every changed customer in
``{prefix}:unscored`` atomically with the state, and the service re-scores whatever is left
there at start-up and every ``dirty_repair_s`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from mode import Service

from schemas import encode
from segstream.settings import ENV, Settings
from worker.backoff import backoff
from worker.core.batch import PackedSnapshot, SnapshotSpec
from worker.ingest.hooks import Hooks
from worker.redis_io import until_sent
from worker.scoring import control
from worker.scoring.decide import Decision, change_events, decide
from worker.scoring.errors import ControlMessageInvalid
from worker.scoring.models import ModelHolder
from worker.scoring.publisher import ChangePublisher
from worker.scoring.snapshot import SnapshotBatch, SnapshotIndex
from worker.scoring.store import ScoringStore, WritePlan
from worker.scoring.vectors import Round, fields_for
from worker.segmentation.model import SegmentModel
from worker.segmentation.online import OnlineKMeans

log = logging.getLogger(__name__)

#: Customers scored per round (one Lua read + one Lua write + one produce batch).
ROUND_MAX = 5000
#: Ingestion waits (backpressure) when more customers than this are queued.
MAX_PENDING = 200_000
#: No state-script snapshots while this many customers are queued (:meth:`snapshot_spec`).
SNAPSHOT_QUEUE_MAX = ROUND_MAX
#: Drift status and the online model's state are written to Redis at most this often (s).
STATUS_EVERY_S = 1.0
#: A rescore request is claimed once per token for this long (s).
RESCORE_CLAIM_S = 7 * 86_400
#: Rounds whose publications may be in flight at once (they never share a customer).
PUBLISH_DEPTH = 2
#: How long a stopping worker waits for the last round's acknowledgements (s).
STOP_PUBLISH_WAIT_S = 5.0
#: Ingestion counts as idle once no batch has changed anyone for this long (s): a little more
#: than one empty fetch (200 ms). After a burst, this is how long its backlog waits before it is
#: scored flat out and read ahead (it was 0.5 s: ~1 % of a 1M-event burst's time).
INGEST_IDLE_S = 0.25


@dataclass
class ScoringMetrics:
    rounds: int = 0
    catch_up_rounds: int = 0
    scored: int = 0
    changes: int = 0
    published: int = 0
    conflicts: int = 0
    missing: int = 0
    repaired: int = 0
    rescored: int = 0
    rescore_runs: int = 0
    reloads: int = 0
    retrains: int = 0
    drift_notices: int = 0
    failures: int = 0
    round_seconds_sum: float = 0.0
    drift_max: float = 0.0
    drift_mean: float = 0.0
    drift_exceeded: bool = False
    last_error: str | None = None


@dataclass(frozen=True)
class Gathered:
    """A round's state: the snapshot and read parts, for the model fields they hold."""

    fields: tuple[str, ...]
    parts: list[Round]


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child ``segstream`` process these settings."""
    env = dict(os.environ)
    for name, var in ENV.items():
        value = getattr(settings, name)
        env[var] = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
    return env


class ScoringService(Service):
    """Scores queued customers in rounds; see the module docstring."""

    def __init__(
        self, settings: Settings, behind: Callable[[], int] | None = None, **kwargs: Any
    ) -> None:
        """``behind``: how many records ingestion has still to fetch (catch-up, :meth:`share`)."""
        self.settings = settings
        self._behind = behind
        self.store = ScoringStore(settings.redis_url, settings.redis_prefix)
        self.holder = ModelHolder(self.store)
        self.publisher = ChangePublisher(
            settings.kafka_bootstrap,
            settings.segment_changes_topic,
            settings.control_topic,
            client_id=f"segstream-scoring-{settings.group_id}",
        )
        self.metrics = ScoringMetrics()
        self.pending: dict[str, str | None] = {}
        self.snapshots = SnapshotIndex()
        self.ready = False
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._pinned_ms = _pinned_clock(settings.scoring_as_of)
        self._rescores: set[asyncio.Task[int]] = set()
        self._seen_request: str | None = None
        self._status_at = 0.0
        self._status_stale = False
        self._spec: SnapshotSpec | None = None
        self._changed_at = 0.0
        #: Set by :meth:`enqueue` (sweep, rescore, repair): ends a pause at once.
        self._urgent = False
        #: Queued by a rescore, not scored yet: their change is ``model_update`` even when an
        #: event of theirs arrives first (its batch would otherwise relabel it).
        self._rescore_queued: set[str] = set()
        #: Rounds' publications in flight, oldest first, with their customers.
        self._publishing: list[tuple[frozenset[str], asyncio.Future[Any]]] = []
        #: The customers of the round being scored and of the one read ahead (the repair
        #: leaves them alone).
        self._in_round: Mapping[str, str | None] = {}
        #: The next round and its state read, started during this one (:meth:`_read_ahead`).
        self._ahead: tuple[dict[str, str | None], asyncio.Future[Gathered]] | None = None
        super().__init__(**kwargs)

    # -- hooks ----------------------------------------------------------------------------------
    def hooks(self) -> Hooks:
        return Hooks(
            on_changed=self.on_changed,
            on_recency_crossed=self.on_recency_crossed,
            on_control=self.on_control,
            snapshot_spec=self.snapshot_spec,
        )

    def snapshot_spec(self) -> SnapshotSpec | None:
        """The state fields the current model needs, asked of an apply while scoring keeps up.

        A snapshot saves a round its read only if the customer is scored before its next
        event, that is while the queue is short. Behind a backlog (a burst, a replay) most
        snapshots are replaced by a later one before any round uses them, and each still costs
        the state script Redis time for every changed customer of every batch (a 1M-event
        burst: ~4 us of redis-server and ~4 us of this process per event, more than the reads
        they save). So none is asked for while :data:`SNAPSHOT_QUEUE_MAX` or more customers
        wait; their rounds read the state instead.
        """
        if not self.ready or len(self.pending) >= SNAPSHOT_QUEUE_MAX:
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
        # C-speed updates only: this runs for every applied batch; one pass over the queue
        # (each customer a random probe of a 100k-entry dict: ~0.4 us a customer)
        self._changed_at = time.monotonic()
        if snapshot is not None:
            # it says why each one changed, so no queued reason (one would override it)
            self.pending.update(dict.fromkeys(customer_ids))
            self.snapshots.add(SnapshotBatch(customer_ids, snapshot))
        else:
            if self.snapshots:  # an older snapshot of theirs is stale now: read them instead
                self.snapshots.discard(customer_ids)
            if reasons is None or len(reasons) < len(customer_ids):
                self.pending.update(dict.fromkeys(customer_ids))
            if reasons:
                self.pending.update(reasons)
        self._wake.set()
        if len(self.pending) > MAX_PENDING:
            await self.wait_pending_below(MAX_PENDING // 2)

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
        """Queue customers without overriding a reason an ingest hook already gave.

        ``urgent``: not paced by the scoring share. A sweep or a rescore is scored at once
        (events arriving meanwhile would relabel a rescored customer's change as theirs). A
        repair is not: its customers have no reason to lose, and during a burst its scan of
        ``unscored`` ended the pause page after page (found or not), so a 1M-event burst was
        scored ~30 % more often.
        """
        for cid in customer_ids:
            if self.pending.get(cid) is None:
                self.pending[cid] = reason
        if urgent and customer_ids:
            self._urgent = True
        self._wake.set()

    async def wait_pending_below(self, n: int) -> None:
        while len(self.pending) > n and not self.should_stop:
            await asyncio.sleep(0.02)

    async def idle(self, timeout: float) -> bool:
        """Until nothing is queued or being scored (for tests and the rescore command)."""
        deadline = time.monotonic() + timeout
        while self.pending or self._lock.locked() or self._publishing or self._ahead:
            if time.monotonic() > deadline:
                return False
            published = all(task.done() for _, task in self._publishing)
            if self._publishing and published and not self._lock.locked():
                await self.publish_settled()
                continue
            await asyncio.sleep(0.02)
        return True

    # -- lifecycle ------------------------------------------------------------------------------
    async def on_stop(self) -> None:
        for task in list(self._rescores):
            task.cancel()
        if self._ahead is not None:  # its customers are still in unscored
            self._ahead[1].cancel()
        with contextlib.suppress(Exception):
            await self._save_status(force=True)
        if self._publishing:  # acknowledged now or republished from the outbox
            tasks = asyncio.gather(*(task for _, task in self._publishing))
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(tasks), STOP_PUBLISH_WAIT_S)
        with contextlib.suppress(Exception):
            await self.publisher.stop()
        with contextlib.suppress(Exception):
            await self.store.close()

    async def _retry(self, what: str, op: Callable[[], Awaitable[Any]]) -> Any:
        attempt = 0
        while True:
            try:
                return await op()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._note(f"{what} failed: {type(exc).__name__}: {exc}")
                if attempt == 0 or attempt % 10 == 0:
                    log.warning("%s failed (%s: %s); retrying", what, type(exc).__name__, exc)
                await asyncio.sleep(backoff(attempt))
                attempt += 1

    def _note(self, text: str) -> None:
        self.metrics.failures += 1
        self.metrics.last_error = text

    @Service.task
    async def _main(self) -> None:
        await self._retry("start segment-changes producer", self.publisher.start)
        await self._retry("publish the outbox", self.flush_outbox)
        await self._retry("load the current model", self.reload)
        await self._retry("adopt an earlier release's dirty set", self.store.migrate_legacy)
        await self._retry("queue unscored customers", self.enqueue_dirty)
        self.ready = True
        log.info("scoring ready with model %s", self.holder.version)
        while not self.should_stop:
            ahead, self._ahead = self._ahead, None
            if ahead is None and not self.pending:
                if self._status_stale:
                    with contextlib.suppress(Exception):
                        await self._save_status(force=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 0.5)
                self._wake.clear()
                continue
            take, reading = ahead if ahead is not None else (self._take(), None)
            self._in_round = take
            self._urgent = False
            try:
                started = time.perf_counter()
                gathered = None if reading is None else await reading
                await self._read_ahead(take)
                await self.score(take, gathered, write_behind=self._ingest_idle())
                if self.catching_up():
                    self.metrics.catch_up_rounds += 1
                await self._yield_to_ingest(time.perf_counter() - started)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                for cid, reason in take.items():
                    self.pending.setdefault(cid, reason)
                self._note(f"scoring round failed: {type(exc).__name__}: {exc}")
                log.warning("scoring round of %d failed (%s: %s); retrying", len(take),
                            type(exc).__name__, exc)  # fmt: skip
                await asyncio.sleep(0.5)

    def _take(self) -> dict[str, str | None]:
        """The next round's customers, out of the queue: the oldest first."""
        # islice, not list(): the queue can hold 200k customers
        take = dict(itertools.islice(self.pending.items(), ROUND_MAX))
        for cid in take:
            del self.pending[cid]
        return take

    def _ingest_idle(self) -> bool:
        return time.monotonic() - self._changed_at >= INGEST_IDLE_S

    async def _read_ahead(self, current: Mapping[str, str | None]) -> None:
        """While ingestion is idle, send the next round's read before this one is assigned.

        After a burst the backlog is scored flat out, and a round spent about half its time
        waiting for Redis (read, write) and half assigning and building events; reading round
        N+1 meanwhile keeps both busy. Returns once Redis has the read: a task merely started
        would send it only when the assignment (CPU, no await) is over, and Redis would then
        run it after this round's write instead of during the assignment. Not while ingestion
        is busy: a pause follows each round then, and a state read before it would mostly be
        stale (its writes would conflict). The rounds stay disjoint (both are out of the
        queue), and a read made for another model's fields is made again (:meth:`score`).
        """
        if not self.pending or not self._ingest_idle():
            return
        nxt = self._take()
        self._in_round = {**current, **nxt}
        fields = fields_for(self.holder.model.feature_names)
        sent = asyncio.Event()
        reading = asyncio.ensure_future(self._gather(nxt, fields, sent.set))
        self._ahead = (nxt, reading)
        await until_sent(reading, sent)

    def catching_up(self) -> bool:
        """Whether ingestion is at least ``settings.catch_up_lag`` records behind the brokers."""
        lag = self.settings.catch_up_lag
        return lag > 0 and self._behind is not None and self._behind() >= lag

    def share(self) -> float:
        """The share of the time scoring may take now (``--scoring-share``, or catching up)."""
        s = self.settings
        return min(s.catch_up_share, s.scoring_share) if self.catching_up() else s.scoring_share

    async def _yield_to_ingest(self, round_s: float) -> None:
        """After a round of ``round_s``, leave ingestion its share while events keep coming.

        Scoring shares the worker's event loop (and, on a small machine, its cores) with
        ingestion. Flat out, it would take every gap ingestion leaves and slow it down, only to
        score customers again and again between their events; paused for
        ``round_s * (1 - share) / share``, it takes at most :meth:`share` of the time, and a
        customer's events of the pause are scored once, on its latest state. The pause ends as
        soon as ingestion has been idle for :data:`INGEST_IDLE_S` (at low rates, and once a
        burst is over, rounds follow each other without delay) or something other than an
        ingest batch queues customers (:meth:`enqueue`). The share is looked at again while
        the pause lasts: a catch-up that ends shortens it to the live one.
        """
        if round_s <= 0:
            return
        ended = time.monotonic()
        while not self.should_stop and not self._urgent:
            share = self.share()
            if share >= 1:
                return
            deadline = ended + round_s * (1 - share) / max(share, 0.01)
            now = time.monotonic()
            if now >= deadline or self._ingest_idle():
                return
            await asyncio.sleep(min(deadline - now, 0.05))

    async def _every(self, interval_s: float, what: str, op: Callable[[], Awaitable[Any]]) -> None:
        """``op`` every ``interval_s`` once ready; a failure is noted and the next turn retries."""
        while not self.should_stop:
            await self.sleep(interval_s)
            if not self.ready:
                continue
            try:
                await op()
            except Exception as exc:
                self._note(f"{what} failed: {type(exc).__name__}: {exc}")

    @Service.task
    async def _poll(self) -> None:
        """Follow ``{prefix}:model:current`` and rescore requests every ``model_poll_s``."""

        async def poll() -> None:
            await self.reload()
            token = await self.store.rescore_request()
            if token and token != self._seen_request:
                self._seen_request = token
                await self.maybe_rescore(token)

        await self._every(self.settings.model_poll_s, "model poll", poll)

    @Service.task
    async def _repair(self) -> None:
        """Re-score customers left in ``{prefix}:unscored`` (a crash between state and segment)."""
        await self._every(self.settings.dirty_repair_s, "dirty repair", self.enqueue_dirty)

    # -- the work -------------------------------------------------------------------------------
    def as_of_ms(self) -> int:
        return self._pinned_ms if self._pinned_ms is not None else int(time.time() * 1000)

    async def _gather(
        self,
        items: Mapping[str, str | None],
        fields: tuple[str, ...],
        on_sent: Callable[[], None] | None = None,
    ) -> Gathered:
        """The customers' state: their latest snapshot, or one read for those without.

        ``on_sent``: called once the read is in Redis's hands (never when none is needed: the
        caller's ``until_sent`` returns when this ends).
        """
        snapped, without = self.snapshots.take(items, fields)
        parts = [] if snapped is None else [snapped]
        if without:
            parts.append(await self.store.read(without, fields, on_sent))
        return Gathered(fields, parts)

    async def score(
        self,
        items: Mapping[str, str | None],
        gathered: Gathered | None = None,
        write_behind: bool = False,
    ) -> int:
        """Score one round (its state ``gathered`` ahead, or now); returns the changes.

        ``write_behind``: return once Redis has the round's write, and let its reply, the
        conflicts, the online model and the publication follow in a task (:meth:`_finish`).
        While ingestion is idle the backlog is scored flat out and each round waited ~40 ms for
        its write with nothing to do, although the next round's state was already read; now it
        assigns that round meanwhile. The count returned is then that of the changes planned
        (conflicts, known later, are not subtracted).
        """
        if self._rescore_queued:
            rescored = self._rescore_queued.intersection(items)
            if rescored:
                self._rescore_queued.difference_update(rescored)
                items = {**items, **dict.fromkeys(rescored, "model_update")}
        async with self._lock:
            started = time.perf_counter()
            model = self.holder.model
            as_of_ms = self.as_of_ms()
            fields = fields_for(model.feature_names)
            if gathered is None or gathered.fields != fields:
                gathered = await self._gather(items, fields)
            parts = gathered.parts
            plan = WritePlan()
            sent: dict[str, tuple[str, int, str, bytes]] = {}
            decisions = [(rnd, decide(model, rnd, as_of_ms, self.settings.hysteresis_margin))
                         for rnd in parts]  # fmt: skip
            for rnd, dec in decisions:
                self._plan(plan, model.version, rnd, dec, items, as_of_ms, sent)
            events = [(cid, seq, payload) for cid, seq, _, payload in sent.values()]
            on_sent = asyncio.Event()
            writing = asyncio.ensure_future(
                self.store.write(model.version, as_of_ms, plan, events, on_sent.set)
            )
            online = self.holder.online if isinstance(model, SegmentModel) else None

            def finish(in_task: bool) -> Awaitable[int]:
                return self._finish(writing, items, sent, decisions, model, online, in_task)

            if write_behind:
                await until_sent(writing, on_sent)
                await self._in_flight(frozenset(sent), lambda: finish(True))
                changes = len(sent)
            else:
                changes = await finish(False)
            self.metrics.round_seconds_sum += time.perf_counter() - started
        await self._save_status()
        return changes

    async def _finish(
        self,
        writing: Awaitable[tuple[list[str], str]],
        items: Mapping[str, str | None],
        sent: Mapping[str, tuple[str, int, str, bytes]],
        decisions: Sequence[tuple[Round, Decision]],
        model: SegmentModel | Any,
        online: OnlineKMeans | None,
        in_task: bool,
    ) -> int:
        """After a round's write: conflicts back in the queue, counts, online model, publication.

        Returns the changes published. ``in_task``: this runs as the round's entry in
        ``_publishing`` (write behind) and publishes itself; else the publication is handed to
        a task of its own. A failed write behind puts the whole round back in the queue (its
        customers stay in ``unscored``, so the repair would find them too); a failed write
        otherwise raises, and the scoring loop does the same.
        """
        try:
            conflicts_list, token = await writing
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not in_task:
                raise
            for cid, reason in items.items():
                self.pending.setdefault(cid, reason)
            self._note(f"scoring write failed: {type(exc).__name__}: {exc}")
            log.warning("scoring write of %d failed (%s: %s); re-queued", len(items),
                        type(exc).__name__, exc)  # fmt: skip
            return 0
        conflicts = set(conflicts_list)
        publish = [v for cid, v in sent.items() if cid not in conflicts]
        for cid in conflicts:
            self.pending.setdefault(cid, items.get(cid))
        m = self.metrics
        m.rounds += 1
        m.scored += sum(len(rnd) for rnd, _ in decisions) - len(conflicts)
        m.changes += len(publish)
        m.conflicts += len(conflicts)
        m.missing += sum(len(rnd.missing) for rnd, _ in decisions)
        if online is not None:
            for rnd, dec in decisions:
                if not len(rnd):
                    continue
                x, ids = dec.x_real, dec.segment_ids
                if conflicts:
                    ok = np.array([cid not in conflicts for cid in rnd.customer_ids], bool)
                    x, ids = x[ok], ids[ok]
                online.learn_many(model.transform(x), ids)
            await self._check_drift()
        if in_task:
            await self._publish(publish, token)
        else:
            await self._publish_behind(publish, token)
        return len(publish)

    @staticmethod
    def _plan(
        plan: WritePlan,
        version: str,
        rnd: Round,
        dec: Decision,
        reasons: Mapping[str, str | None],
        as_of_ms: int,
        sent: dict[str, tuple[str, int, str, bytes]],
    ) -> None:
        """Add one part of a round to ``plan``; its change events go into ``sent``.

        Most customers keep their segment: they only leave ``unscored``. A row that writes
        something has its ``segment_seq`` compared (see ``WRITE_LUA``) only when it was read
        without a stamp (rescore, sweep: nothing else vouches for it); customers without a hash
        are compared too, so that their entry goes without a write.
        """
        base = len(plan.ids)
        ids, seqs = rnd.customer_ids, rnd.seqs
        plan.ids += ids
        plan.stamps += rnd.stamps
        segments = dec.new_segments
        changed: list[int] = []
        for r, ev in change_events(dec, reasons, as_of_ms):
            cid, seq = ids[r], seqs[r]
            nseq = 1 if seq is None else seq + 1
            sent[cid] = (cid, nseq, version, encode(ev))
            plan.changes += (base + r, segments[r], nseq)
            changed.append(r)
        skip = set(changed)
        stale = [r for r, v in enumerate(rnd.model_versions) if v != version and r not in skip]
        plan.stale += [base + r for r in stale]
        if not rnd.snapshot:
            stamps = rnd.stamps
            for r in (*changed, *stale):
                if stamps[r] <= 0:  # no stamp to vouch for segment_seq
                    read_seq = seqs[r]
                    plan.checks += (base + r, -1 if read_seq is None else read_seq)
        for cid, stamp in zip(rnd.missing, rnd.missing_stamps, strict=True):
            plan.checks += (len(plan.ids), -1)
            plan.ids.append(cid)
            plan.stamps.append(stamp)

    async def _publish(self, items: list[tuple[str, int, str, bytes]], *fields: str) -> None:
        """Publish until acknowledged (the outbox keeps them meanwhile), then clear ``fields``."""
        if items:
            await self._retry(
                f"publish {len(items)} change(s)", lambda: self.publisher.publish(items)
            )
        done = [f for f in fields if f]
        if done:
            await self._retry("clear the outbox", lambda: self.store.outbox_done(done))
        self.metrics.published += len(items)

    async def _publish_behind(self, items: list[tuple[str, int, str, bytes]], field: str) -> None:
        """Publish a round's changes while the next rounds are scored.

        Waiting for the broker's acknowledgements took half of a round's time; the next round's
        read, assignment and write do not need them. Up to :data:`PUBLISH_DEPTH` rounds'
        publications are in flight, never two with a customer in common: a round first waits
        for every earlier publication (oldest first) while one of them holds one of its
        customers, so a customer's changes reach the topic in order even when a publication
        fails and is retried. The outbox covers a crash meanwhile.
        """
        if items or field:
            ids = frozenset(cid for cid, _, _, _ in items)
            await self._in_flight(ids, lambda: self._publish(items, field))

    async def _in_flight(self, ids: frozenset[str], start: Callable[[], Awaitable[Any]]) -> None:
        """Start a round's publication (``start()``) as a task once the order rules allow it."""
        while self._publishing and (
            len(self._publishing) >= PUBLISH_DEPTH
            or any(not ids.isdisjoint(held) for held, _ in self._publishing)
        ):
            await self._settle_oldest()
        self._publishing.append((ids, asyncio.ensure_future(start())))

    async def _settle_oldest(self) -> None:
        _, task = self._publishing[0]
        try:
            await task
        finally:
            if self._publishing and self._publishing[0][1] is task:
                self._publishing.pop(0)

    async def publish_settled(self) -> None:
        """Until every round's changes are acknowledged and out of the outbox."""
        while self._publishing:
            await self._settle_oldest()

    async def flush_outbox(self) -> int:
        """Publish changes a previous run wrote but did not get acknowledged (start-up)."""
        rounds = await self.store.outbox()
        if not rounds:
            return 0
        import msgspec

        items = []
        for _, entries in rounds:
            for cid, seq, value in entries:
                version = msgspec.json.decode(value).get("model_version", "")
                items.append((cid, seq, str(version), value))
        items.sort(key=lambda t: (t[1], t[0]))  # one customer's changes in seq order
        await self._publish(items, *(name for name, _ in rounds))
        log.info("published %d change(s) left in the outbox by a previous run", len(items))
        return len(items)

    async def enqueue_dirty(self) -> int:
        """Queue every unscored customer not already queued or in the current round."""
        n = 0
        async for page in self.store.unscored_pages():
            owed = [c for c in page if c not in self.pending and c not in self._in_round]
            self.enqueue(owed, None, urgent=False)
            n += len(owed)
        self.metrics.repaired += n
        return n

    async def reload(self) -> bool:
        """Swap in a new current model (between rounds); with ``rescore_all``, re-score all."""
        async with self._lock:
            changed = await self.holder.refresh()
        if changed:
            self.metrics.reloads += 1
            self.metrics.drift_exceeded = False
            await self._save_status(force=True)
            if self.settings.rescore_all:
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
            self._rescore_queued.update(page)
            self.enqueue(page, "model_update")
            n += len(page)
            await self.wait_pending_below(ROUND_MAX)
        self.metrics.rescored += n
        log.info("queued %d customer(s) for re-scoring", n)
        return n

    # -- drift ----------------------------------------------------------------------------------
    async def _check_drift(self) -> None:
        s = self.settings
        report = self.holder.drift(s.drift_bound)
        if report is None:
            return
        m = self.metrics
        m.drift_max, m.drift_mean = report.max, report.mean
        if not report.exceeded or m.drift_exceeded:
            return
        m.drift_exceeded = True
        version = self.holder.version
        log.warning("online centroids of %s drifted %.3f standard units (bound %.3f)",
                    version, report.max, report.bound)  # fmt: skip
        if await self.store.claim(f"drift:notice:{version}", s.retrain_cooldown_s):
            notice = control.encode(
                "drift", version=version, max=report.max, mean=report.mean,
                bound=report.bound, per_segment=list(report.per_segment),
                at=datetime.now(UTC).isoformat(),
            )  # fmt: skip
            with contextlib.suppress(Exception):
                await self.publisher.notice(notice)
                m.drift_notices += 1
        if s.retrain_on_drift and await self.store.claim("retrain:lock", s.retrain_cooldown_s):
            self.start_retrain()

    def start_retrain(self) -> subprocess.Popen[bytes]:
        """``segstream train --from redis`` as a child process (it publishes the new model)."""
        cmd = [sys.executable, "-m", "segstream", "train", "--from", "redis"]
        log.warning("drift above bound: starting %s", " ".join(cmd[2:]))
        self.metrics.retrains += 1
        return subprocess.Popen(
            cmd, env=settings_env(self.settings), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    async def _save_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._status_at < STATUS_EVERY_S:
            self._status_stale = True
            return
        self._status_at = now
        self._status_stale = False
        m = self.metrics
        status = {
            "model_version": self.holder.version,
            "drift_max": m.drift_max,
            "drift_mean": m.drift_mean,
            "drift_bound": self.settings.drift_bound,
            "drift_exceeded": int(m.drift_exceeded),
            "updated_ms": int(time.time() * 1000),
        }
        await self.store.save_status(self.holder.version, self.holder.online_json(), status)

    def report(self) -> dict[str, Any]:
        """What ``/scoring`` shows."""
        m = asdict(self.metrics)
        m["pending"] = len(self.pending)
        m["model_version"] = self.holder.version
        m["ready"] = self.ready
        m["drift_bound"] = self.settings.drift_bound
        m["catching_up"] = self.catching_up()
        return m


def _pinned_clock(text: str) -> int | None:
    if not text:
        return None
    from worker.reads import parse_as_of

    return int(parse_as_of(text).timestamp() * 1000)
