"""Apply one assembled batch, whatever it takes: no input can stop or block ingestion.

The rule (docs/state.md, "When a batch fails"):

1. the batch's rejected records go to the dead-letter topic first, and are acknowledged before
   anything else moves (a broker outage is waited out);
2. the batch is applied with one state-script call;
3. a failed call is classified (:mod:`.failures`). An **outage** (Redis or the broker down,
   out of memory, read-only, ...) is retried with backoff for as long as it lasts, nothing is
   committed meanwhile, and ``/health`` shows the failing batch, the error and what to do;
4. any other failure (**poison**) is retried ``poison_retries`` times; then the batch is split
   in halves applied one after the other, recursively (:func:`.quarantine.split_batch`), until
   the records that still fail are alone: each of those is dead-lettered with the error and the
   rest of the batch is applied. ``poison_retries = 0`` turns that off (retry forever).

The first attempt is two steps (:meth:`BatchApplier.send`, then its ``result()``) so that the
service can decode the next batch while Redis runs this one's script.

Exactness holds throughout: the state script writes nothing before it has read everything (a
failing call leaves no half-applied batch), and the per-partition fence makes a piece applied
twice change nothing the second time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from worker.backoff import backoff
from worker.core.batch import ApplyResult, Batch, SnapshotSpec
from worker.ingest.batch import Assembled, Rejected
from worker.ingest.failures import Failure, Kind, classify
from worker.ingest.quarantine import dead_letter_all, describe, raw_index, reject, split_batch
from worker.redis_io import Pending

log = logging.getLogger(__name__)

#: One apply (its send and its reply) taking longer than this is treated as failed and retried
#: (the fence makes a late completion of the abandoned call harmless). Covers a Redis that
#: accepts but never answers, or never reads.
APPLY_TIMEOUT_S = 15.0


class Stopping(Exception):
    """The service is stopping: abandon the in-flight batch uncommitted."""


class StateStoreLike(Protocol):
    """The part of :class:`worker.state.store.StateStore` ingestion uses."""

    def prepare(self, batch: Batch, snapshot: SnapshotSpec | None = None) -> Any: ...
    async def send_apply(self, batch: Batch, prepared: Any = None) -> Pending[ApplyResult]: ...
    async def counters(self) -> dict[str, int]: ...
    async def fences(self, topic: str) -> dict[int, int]: ...
    async def customers_crossing(
        self, threshold_days: float, since_ms: int, until_ms: int
    ) -> list[str]: ...
    async def close(self) -> None: ...


class DeadLetters(Protocol):
    async def send(self, rejected: Sequence[Rejected]) -> None: ...


@dataclass
class FailureReport:
    """The batch that is failing now, for ``/health`` (``None`` there while all is well)."""

    batch: str
    kind: str
    error: str
    advice: str
    attempts: int
    since: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "kind": self.kind,
            "error": self.error,
            "advice": self.advice,
            "attempts": self.attempts,
            "failing_for_s": round(time.time() - self.since, 3),
        }


@dataclass
class ApplierMetrics:
    outage_failures: int = 0
    poison_failures: int = 0
    dead_letter_retries: int = 0
    isolated_batches: int = 0
    #: Valid records dead-lettered because the state store kept refusing them.
    quarantined: int = 0
    failing: FailureReport | None = None


@dataclass(frozen=True)
class Applied:
    """What applying one assembled batch took: the pieces applied and the records set aside."""

    pieces: list[tuple[Batch, ApplyResult]]
    quarantined: int = 0


class BatchApplier:
    """Dead letters, then the state script, under the failure rule of this module."""

    def __init__(
        self,
        store: StateStoreLike,
        dead_letters: DeadLetters,
        *,
        poison_retries: int,
        stopping: Callable[[], bool],
        on_state: Callable[[str, str | None], None],
    ) -> None:
        self.store = store
        self.dead_letters = dead_letters
        self.poison_retries = poison_retries
        self.metrics = ApplierMetrics()
        self._stopping = stopping
        #: ``on_state(state, error)``: tells the service what ingestion is doing now.
        self._on_state = on_state

    async def send(self, assembled: Assembled, prepared: Any = None) -> Pending[Applied]:
        """Dead-letter the rejects, then send the batch; returns once Redis has its request.

        Or once that first attempt failed: whatever it takes after it (retries, isolation)
        happens in ``result()``, which returns once all of the batch is in Redis.
        """
        if assembled.rejected:
            await self._dead_letter(assembled.rejected)
        first = await self._send(assembled.batch, prepared)
        return Pending(lambda: self._settle(assembled, prepared, first), first.abandon)

    async def apply(self, assembled: Assembled, prepared: Any = None) -> Applied:
        """:meth:`send`, then its result: the batch applied, whatever it took."""
        return await (await self.send(assembled, prepared)).result()

    async def _settle(
        self, assembled: Assembled, prepared: Any, first: Pending[ApplyResult | Failure]
    ) -> Applied:
        """The batch's first attempt's outcome, then the failure rule until it is applied."""
        batch = assembled.batch
        attempt = poisoned = 0
        outcome = await first.result()
        while True:
            if isinstance(outcome, ApplyResult):
                self._recovered()
                return Applied([(batch, outcome)])
            if outcome.kind is Kind.POISON:
                poisoned += 1
                if self.poison_retries and poisoned >= self.poison_retries:
                    self._failed(outcome, batch, attempt + 1)
                    return await self._isolate(assembled, outcome, poisoned)
            self._failed(outcome, batch, attempt + 1)
            await self._pause(attempt)
            attempt += 1
            outcome = await self._attempt(batch, prepared)

    async def _isolate(self, assembled: Assembled, failure: Failure, attempts: int) -> Applied:
        """Split until the failing records are alone; dead-letter them, apply the rest."""
        m = self.metrics
        m.isolated_batches += 1
        log.error(
            "batch %s failed %d times (%s): applying it in pieces to find the records to blame",
            describe(assembled.batch),
            attempts,
            failure.text,
        )
        sources = raw_index(assembled.sources)
        pieces: list[tuple[Batch, ApplyResult]] = []
        quarantined = 0
        work = deque([assembled.batch])
        while work:
            piece = work.popleft()
            outcome = await self._attempt_through_outages(piece)
            if isinstance(outcome, ApplyResult):
                pieces.append((piece, outcome))
                continue
            if len(piece.records) > 1:
                head, tail = split_batch(piece)
                work.extendleft([tail, head])  # head first: offsets stay in order
                continue
            reason = f"the state store refused this record {attempts} times: {outcome.text}"
            letters = reject(piece.records, reason, sources)
            await self._dead_letter(letters)
            dead = dead_letter_all(piece)
            pieces.append((dead, await self._apply_until_done(dead)))
            quarantined += len(letters)
        m.quarantined += quarantined
        self._recovered()
        return Applied(pieces, quarantined)

    async def _attempt(self, batch: Batch, prepared: Any = None) -> ApplyResult | Failure:
        return await (await self._send(batch, prepared)).result()

    async def _send(self, batch: Batch, prepared: Any = None) -> Pending[ApplyResult | Failure]:
        """One attempt, sent: its ``result()`` is the outcome, classified if it failed.

        Every exception is classified, never escapes the loop; send and reply together get
        :data:`APPLY_TIMEOUT_S`.
        """
        if self._stopping():
            raise Stopping("apply")
        deadline = asyncio.get_running_loop().time() + APPLY_TIMEOUT_S
        try:
            async with asyncio.timeout_at(deadline):
                pending = await self.store.send_apply(batch, prepared)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return Pending.ready(classify(exc))

        async def outcome() -> ApplyResult | Failure:
            try:
                async with asyncio.timeout_at(deadline):
                    return await pending.result()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                return classify(exc)

        return Pending(outcome, pending.abandon)

    async def _attempt_through_outages(self, batch: Batch) -> ApplyResult | Failure:
        """One attempt that counts: outages are waited out, poison is returned."""
        attempt = 0
        while True:
            outcome = await self._attempt(batch)
            if isinstance(outcome, ApplyResult) or outcome.kind is Kind.POISON:
                return outcome
            self._failed(outcome, batch, attempt + 1)
            await self._pause(attempt)
            attempt += 1

    async def apply_record_free(self, batch: Batch) -> ApplyResult:
        """A batch without events (fence moves and dead-letter counts), retried until done."""
        return await self._apply_until_done(batch)

    async def _apply_until_done(self, batch: Batch) -> ApplyResult:
        """A batch without records (only fence moves and counts): retried whatever fails."""
        attempt = 0
        while True:
            outcome = await self._attempt(batch)
            if isinstance(outcome, ApplyResult):
                return outcome
            self._failed(outcome, batch, attempt + 1)
            await self._pause(attempt)
            attempt += 1

    async def send_dead_letters(self, rejected: Sequence[Rejected]) -> None:
        """Send and wait for every acknowledgement; broker trouble is waited out."""
        await self._dead_letter(rejected)

    async def _dead_letter(self, rejected: Sequence[Rejected]) -> None:
        attempt = 0
        while True:
            if self._stopping():
                raise Stopping("dead-letter")
            try:
                await self.dead_letters.send(rejected)
                if attempt and self.metrics.failing is None:  # no failing apply to report
                    log.info("dead-lettering resumed: %d record(s) sent", len(rejected))
                    self._on_state("running", None)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.dead_letter_retries += 1
                self._on_state("retrying-dead-letter", f"{type(exc).__name__}: {exc}")
                if attempt % 10 == 0:
                    log.warning(
                        "dead-lettering %d record(s) failed (%s: %s); retrying, nothing committed",
                        len(rejected),
                        type(exc).__name__,
                        exc,
                    )
                await self._pause(attempt)
                attempt += 1

    async def _pause(self, attempt: int) -> None:
        await asyncio.sleep(backoff(attempt))
        if self._stopping():
            raise Stopping("retry")

    def _failed(self, failure: Failure, batch: Batch, attempt: int) -> None:
        m = self.metrics
        where = describe(batch)
        if failure.kind is Kind.OUTAGE:
            m.outage_failures += 1
            state = "blocked" if failure.advice else "retrying-redis"
        else:
            m.poison_failures += 1
            state = "retrying-poisoned-batch"
        since = m.failing.since if m.failing is not None else time.time()
        m.failing = FailureReport(
            where, failure.kind.value, failure.text, failure.advice, attempt, since
        )
        self._on_state(state, f"apply {where} failed: {failure.text}")
        advice = f" ({failure.advice})" if failure.advice else ""
        loud = failure.kind is Kind.POISON or failure.advice
        if loud and (attempt <= max(self.poison_retries, 1) or attempt % 10 == 0):
            log.error(
                "apply %s failed, attempt %d: %s%s; retrying, nothing committed",
                where,
                attempt,
                failure.text,
                advice,
            )
        elif attempt == 1 or attempt % 10 == 0:
            log.warning(
                "apply %s failed, attempt %d: %s; retrying, nothing committed",
                where,
                attempt,
                failure.text,
            )

    def _recovered(self) -> None:
        if self.metrics.failing is not None:
            log.info("ingest resumed: %s applied", self.metrics.failing.batch)
            self.metrics.failing = None
            self._on_state("running", None)
