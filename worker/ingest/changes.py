"""Telling the :class:`ChangeListener` which customers changed, once Redis no longer waits for it.

Not inside a batch's apply task: the loop sends the next batch only once that task is done, so
Redis would wait for the listener (with scoring on, working out the reasons and queueing the
customers takes milliseconds a batch) although nothing the listener does depends on the apply.
So an applied batch's changes are kept here and reported once the next batch has reached
Redis, or when a fetch comes back empty, or by the apply task itself when the loop is waiting for
records (low rates: no batch to overlap with, so no delay either). Nothing is lost if the worker
stops before the listener heard of a batch: the state script recorded every changed customer in
``unscored``.
"""

from __future__ import annotations

import logging

from worker.core.batch import ApplyResult, Batch
from worker.ingest.batch import change_reasons
from worker.ingest.listener import ChangeListener, NullListener
from worker.ingest.metrics import IngestMetrics

log = logging.getLogger(__name__)


class ChangeReports:
    """The applied batches not reported to ``listener.on_changed`` yet, oldest first."""

    def __init__(self, listener: ChangeListener, metrics: IngestMetrics) -> None:
        self.listener = listener
        self.metrics = metrics
        #: The null listener is never told about changes: no reasons are computed for it.
        self._listening = type(listener) is not NullListener
        self._due: list[tuple[Batch, ApplyResult]] = []

    def add(self, batch: Batch, result: ApplyResult) -> None:
        """``batch`` was applied with ``result``: its changed customers are to be reported.

        A batch applied in parts (one per shard of a Redis Cluster) is reported part by part:
        each part's snapshot carries its own shard's stamp.
        """
        if not (result.changed and self._listening):
            return
        if result.parts:
            self._due.extend((part, done) for part, done in result.parts if done.changed)
        else:
            self._due.append((batch, result))

    @property
    def due(self) -> bool:
        return bool(self._due)

    async def report(self) -> None:
        """``listener.on_changed`` for each batch not reported yet, oldest first.

        A listener that raises is counted and logged; the next batch is reported all the same.
        """
        due = self._due
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
