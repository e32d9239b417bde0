"""What this process counted while ingesting, for ``/health`` and ``/metrics`` (worker/pages.py).

Apart from the service because several parts write it (the batch loop, the committer, the
batch-path recovery, the faust app's control agent and sweep timer) and the pages read it: each
of those needs the counters, none of them the service. Redis holds the authoritative counters of
all workers (``StateStore.counters``); these are this process's alone and start at zero.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from segstream.redact import redact
from worker.ingest.applier import Applied, ApplierMetrics, BatchApplier
from worker.ingest.batch import Assembled

log = logging.getLogger(__name__)


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

    def set_state(self, state: str, error: str | None) -> None:
        """What ingestion is doing now (``running``, ``retrying-redis``, ...), and why if not."""
        self.state = state
        if error is not None:
            self.note_error(error)

    def note_error(self, text: str) -> None:
        """The last error ``/health`` shows, with URL passwords redacted."""
        text = redact(text)
        self.last_error = text
        self.last_error_at = time.time()
        log.debug(text)

    def count_batch(self, assembled: Assembled, applied: Applied, elapsed: float) -> None:
        """One fetched batch is in Redis: ``applied`` is what it took, in ``elapsed`` seconds."""
        self.batches += 1
        self.received += assembled.received
        self.valid += len(assembled.batch.records) - applied.quarantined
        self.dead_lettered += len(assembled.rejected) + applied.quarantined
        self.apply_seconds_sum += elapsed
        self.apply_seconds_max = max(self.apply_seconds_max, elapsed)
        self.last_applied_at = time.time()
        for _, result in applied.pieces:
            self.applied += result.applied
            self.duplicates += result.duplicates

    def count_set_aside(self, records: int) -> None:
        """``records`` fetched records were dead-lettered whole (the batch path kept failing)."""
        self.received += records
        self.dead_lettered += records


def applier_metrics(applier: BatchApplier | None) -> ApplierMetrics:
    """The applier's counters; all zero before the service has connected and built it."""
    return applier.metrics if applier is not None else ApplierMetrics()
