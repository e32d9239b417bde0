"""What this process counted while ingesting, for ``/health`` and ``/metrics`` (worker/pages.py).

Apart from the service because several parts write it (the batch loop, the committer, the
batch-path recovery, the faust app's control agent and sweep timer) and the pages read it: each
of those needs the counters, none of them the service. Redis holds the authoritative counters of
all workers (``StateStore.counters``); these are this process's alone and start at zero.

:func:`expose_ingest` renders them as Prometheus families (docs/worker.md lists the names).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from schemas import SchemaError
from segstream.redact import redact
from worker.exposition import Exposition
from worker.ingest.applier import Applied, ApplierMetrics, BatchApplier
from worker.ingest.batch import Assembled

log = logging.getLogger(__name__)

#: Why a record was dead-lettered, as a small fixed set (a label must not carry the free text):
#: the schemas' verdicts (:func:`reason_class`), then the worker's own reasons.
REASON_CLASSES = (
    "malformed",  # not UTF-8, not JSON, nested too deeply, undecodable
    "oversize",  # above the schemas' size limit
    "invalid",  # JSON that fails the event schema (missing field, wrong type, bad value)
    "null_value",  # a record without a value (a tombstone on an input topic)
    "unknown_topic",  # fetched from a topic that is neither orders nor clicks
    "quarantined",  # valid, but the state store kept refusing it (docs/state.md)
    "set_aside",  # the batch path itself kept failing on it
    "control",  # a control-topic record that is not a control message
)
_MALFORMED = ("not JSON", "not UTF-8", "nested too deeply", "could not be decoded")
_PARTITION = re.compile(r"^(?P<topic>.*)\[(?P<partition>\d+)\]$")


def reason_class(error: SchemaError) -> str:
    """The :data:`REASON_CLASSES` entry of a schema rejection."""
    reason = error.reason
    if reason.startswith(_MALFORMED):
        return "malformed"
    if reason.startswith("oversize"):
        return "oversize"
    if reason.startswith("empty record"):
        return "null_value"
    if "is neither orders nor clicks" in reason:
        return "unknown_topic"
    return "invalid"


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
    fetched_upto: dict[tuple[str, int], int] = field(default_factory=dict)
    #: Records fetched per (input topic, ``valid`` | ``rejected`` by the schemas).
    topic_records: dict[tuple[str, str], int] = field(default_factory=dict)
    #: Records dead-lettered per :data:`REASON_CLASSES` entry (``control`` is
    #: ``control_dead_lettered``).
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    #: The consumer group has given this consumer an assignment (possibly empty) at least once.
    joined: bool = False
    _assigned: list[str] = field(default_factory=list, repr=False)

    @property
    def assigned(self) -> list[str]:
        """The partitions this consumer owns, ``topic[partition]``; setting it means joined."""
        return self._assigned

    @assigned.setter
    def assigned(self, partitions: list[str]) -> None:
        self._assigned = partitions
        self.joined = True

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
        self._count_topics(assembled)
        if assembled.rejected:
            reasons = self.dead_letter_reasons
            for rejected in assembled.rejected:
                cls = reason_class(rejected.error)
                reasons[cls] = reasons.get(cls, 0) + 1
        if applied.quarantined:
            self._count_reason("quarantined", applied.quarantined)
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
        self._count_reason("set_aside", records)

    def _count_reason(self, reason: str, n: int) -> None:
        self.dead_letter_reasons[reason] = self.dead_letter_reasons.get(reason, 0) + n

    def _count_topics(self, assembled: Assembled) -> None:
        """Valid and rejected records per topic: per partition of the fetch, not per record."""
        counts, dead = self.topic_records, assembled.batch.dead_lettered
        for part in assembled.sources:
            topic, partition = part[0].topic, part[0].partition
            rejected = dead.get((topic, partition), 0)
            valid_key, rejected_key = (topic, "valid"), (topic, "rejected")
            counts[valid_key] = counts.get(valid_key, 0) + len(part) - rejected
            if rejected:
                counts[rejected_key] = counts.get(rejected_key, 0) + rejected


def applier_metrics(applier: BatchApplier | None) -> ApplierMetrics:
    """The applier's counters; all zero before the service has connected and built it."""
    return applier.metrics if applier is not None else ApplierMetrics()


def split_partition(name: str) -> tuple[str, str]:
    """``"orders[3]"`` -> ``("orders", "3")`` (the form ``IngestService.lag`` keys by)."""
    m = _PARTITION.match(name)
    return (m["topic"], m["partition"]) if m else (name, "")


def expose_ingest(
    out: Exposition,
    m: IngestMetrics,
    a: ApplierMetrics,
    lag: Mapping[str, int],
    counters: Mapping[str, int] | None,
) -> None:
    """The ingestion families: this process's counters (``m``, ``a``), its consumer lag per
    partition, and the state store's own counters in Redis (``None``: Redis did not answer)."""
    out.gauge("segstream_up", "1 when ingestion is running normally.", m.state == "running")
    out.family(
        "segstream_ingest_state",
        "gauge",
        "What ingestion is doing now: 1 for the current state (running, starting, "
        "retrying-redis, retrying-broker, retrying-batch, blocked, stopped...).",
        [({"state": m.state}, 1)],
    )
    out.family(
        "segstream_ingest_records_total",
        "counter",
        "Input records handled by this process, by outcome.",
        [({"outcome": "valid"}, m.valid), ({"outcome": "dead_lettered"}, m.dead_lettered)],
    )
    out.family(
        "segstream_ingest_topic_records_total",
        "counter",
        "Input records fetched per topic, by what the event schemas said (valid | rejected).",
        [({"topic": t, "outcome": o}, n) for (t, o), n in sorted(m.topic_records.items())],
    )
    reasons = {**m.dead_letter_reasons, "control": m.control_dead_lettered}
    out.family(
        "segstream_ingest_dead_letters_total",
        "counter",
        "Records sent to the dead-letter topic, by reason class (docs/worker.md).",
        [({"reason": r}, reasons.get(r, 0)) for r in REASON_CLASSES],
    )
    out.counter("segstream_ingest_batches_total", "Batches applied.", m.batches)
    out.counter("segstream_ingest_applied_total", "Events applied to state.", m.applied)
    out.counter(
        "segstream_ingest_duplicates_total",
        "Events skipped as already applied (fence or event id).",
        m.duplicates,
    )
    out.family(
        "segstream_ingest_apply_failures_total",
        "counter",
        "Failed state-store applies, by kind (outage: waited out; poison: isolated after "
        "poison_retries attempts).",
        [({"kind": "outage"}, a.outage_failures), ({"kind": "poison"}, a.poison_failures)],
    )
    out.counter(
        "segstream_ingest_dead_letter_retries_total",
        "Failed sends to the dead-letter topic (retried).",
        a.dead_letter_retries,
    )
    out.counter(
        "segstream_ingest_isolated_batches_total",
        "Batches applied in pieces to isolate the records the state store refused.",
        a.isolated_batches,
    )
    out.counter(
        "segstream_ingest_quarantined_records_total",
        "Valid records dead-lettered because the state store kept refusing them.",
        a.quarantined,
    )
    out.gauge(
        "segstream_ingest_batch_failing",
        "1 while a batch is failing (see /health batch_failure).",
        a.failing is not None,
    )
    out.counter(
        "segstream_ingest_fetch_errors_total", "Failed fetches from the brokers.", m.fetch_errors
    )
    out.counter(
        "segstream_ingest_commit_failures_total",
        "Offset commits that failed (covered by a later commit).",
        m.commit_failures,
    )
    out.counter(
        "segstream_ingest_rebalances_total",
        "Consumer-group rebalances that revoked this consumer's partitions.",
        m.rebalances,
    )
    out.summary(
        "segstream_ingest_apply_seconds",
        "Time per batch apply, retries included.",
        m.apply_seconds_sum,
        m.batches,
    )
    out.gauge(
        "segstream_ingest_last_apply_timestamp_seconds",
        "Unix time of the last batch applied (0: none yet).",
        m.last_applied_at or 0.0,
    )
    out.counter("segstream_ingest_sweeps_total", "Recency sweeps run.", m.sweeps)
    out.counter(
        "segstream_ingest_recency_crossed_total",
        "Customers the recency sweeps found crossing a threshold.",
        m.recency_crossed,
    )
    out.gauge(
        "segstream_ingest_assigned_partitions",
        "Input partitions this consumer owns.",
        len(m.assigned),
    )
    out.family(
        "segstream_ingest_lag_records",
        "gauge",
        "Consumer lag: records behind the high watermark per assigned partition "
        "(approximate on tansu).",
        [
            (dict(zip(("topic", "partition"), split_partition(k), strict=True)), v)
            for k, v in sorted(lag.items())
        ],
    )
    out.gauge(
        "segstream_redis_up",
        "1 when Redis answered the state store's counters within the probe timeout.",
        counters is not None,
    )
    out.family(
        "segstream_state_counter_total",
        "counter",
        "The state store's own counters in Redis (all workers of the group), by name.",
        [({"name": k}, v) for k, v in sorted((counters or {}).items())],
    )
