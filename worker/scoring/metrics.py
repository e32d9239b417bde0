"""The scoring counters ``/scoring`` and ``/metrics`` show, and the one place a failure is recorded.

:func:`expose_scoring` renders them as Prometheus families (docs/worker.md lists the names); it
reads the running service through :class:`ScoringView`, the few attributes it needs, so that the
web pages do not import the scoring service (and with it the segmentation libraries) in a
worker that runs without scoring.
"""

from __future__ import annotations

from collections.abc import Sized
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from segstream.redact import redact
from worker.exposition import Exposition

if TYPE_CHECKING:
    from segstream.settings import Settings
    from worker.scoring.models import ModelHolder

#: What a failure was doing, by the start of its text (``retry``'s ``what``, or the round's own
#: note), as a small fixed set for the ``operation`` label.
OPERATIONS: tuple[tuple[str, str], ...] = (
    ("publish the outbox", "publish"),
    ("publish ", "publish"),
    ("clear the outbox", "outbox"),
    ("start segment-changes producer", "producer"),
    ("scoring round", "round"),
    ("scoring write", "round"),
    ("load the current model", "model"),
    ("model poll", "model"),
    ("queue unscored customers", "repair"),
    ("dirty repair", "repair"),
)
OPERATION_NAMES = ("publish", "outbox", "producer", "round", "model", "repair", "other")


def operation_of(text: str) -> str:
    """The :data:`OPERATION_NAMES` entry of a failure's text."""
    for prefix, operation in OPERATIONS:
        if text.startswith(prefix):
            return operation
    return "other"


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
    #: ``failures`` by :func:`operation_of` (``publish`` are the publish errors).
    failures_by_operation: dict[str, int] = field(default_factory=dict)
    round_seconds_sum: float = 0.0
    drift_max: float = 0.0
    drift_mean: float = 0.0
    #: Total variation distance of the segment mix from its reference (0..1).
    drift_mix: float = 0.0
    #: Emerging groups found now (scored customers far from every segment, gathering).
    emerging_groups: int = 0
    #: False until the online model has a reference to compare with.
    drift_ready: bool = False
    #: A retrain was proposed for the current model (drift, mix or an emerging group).
    drift_exceeded: bool = False
    #: Why, in words (empty until then).
    retrain_proposal: str = ""
    last_error: str | None = None

    def note(self, text: str) -> None:
        """Count a failure and keep its text (the latest one is shown, URL passwords redacted)."""
        self.failures += 1
        operation = operation_of(text)
        self.failures_by_operation[operation] = self.failures_by_operation.get(operation, 0) + 1
        self.last_error = redact(text)


@runtime_checkable
class ScoringView(Protocol):
    """What :func:`expose_scoring` reads of the scoring service (``ScoringService`` fits)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def metrics(self) -> ScoringMetrics: ...
    @property
    def ready(self) -> bool: ...
    @property
    def queue(self) -> Sized:
        """Customers waiting to be scored."""

    @property
    def publications(self) -> Sized:
        """Rounds whose changes are in the outbox, not yet acknowledged by the brokers."""

    @property
    def holder(self) -> ModelHolder: ...


def expose_scoring(out: Exposition, scoring: ScoringView) -> None:
    """The scoring families: rounds, customers, changes, publication, queue, outbox, drift."""
    m = scoring.metrics
    out.gauge(
        "segstream_scoring_ready",
        "1 once scoring has started (producer, outbox replayed, model loaded).",
        scoring.ready,
    )
    out.family(
        "segstream_scoring_model_info",
        "gauge",
        "The model this worker scores with (1, labelled with its version).",
        [({"version": scoring.holder.version}, 1)],
    )
    out.counter("segstream_scoring_rounds_total", "Scoring rounds run.", m.rounds)
    out.counter(
        "segstream_scoring_catch_up_rounds_total",
        "Scoring rounds run while ingestion was catching up on a backlog.",
        m.catch_up_rounds,
    )
    out.summary(
        "segstream_scoring_round_seconds",
        "Time per scoring round (read, assign, write).",
        m.round_seconds_sum,
        m.rounds,
    )
    out.counter(
        "segstream_scoring_customers_scored_total", "Customers scored (assigned).", m.scored
    )
    out.counter(
        "segstream_scoring_segment_changes_total",
        "Real segment changes decided (written with their outbox entry).",
        m.changes,
    )
    out.counter(
        "segstream_scoring_changes_published_total",
        "Segment changes acknowledged by the brokers on the segment-changes topic.",
        m.published,
    )
    out.counter(
        "segstream_scoring_publish_errors_total",
        "Failed attempts to publish segment changes (retried; the outbox keeps them).",
        m.failures_by_operation.get("publish", 0),
    )
    out.family(
        "segstream_scoring_failures_total",
        "counter",
        "Scoring failures (all retried), by operation.",
        [({"operation": op}, m.failures_by_operation.get(op, 0)) for op in OPERATION_NAMES],
    )
    out.counter(
        "segstream_scoring_write_conflicts_total",
        "Customers whose state changed between a round's read and its write (scored again).",
        m.conflicts,
    )
    out.counter(
        "segstream_scoring_missing_customers_total",
        "Queued customers with no state left to score.",
        m.missing,
    )
    out.counter(
        "segstream_scoring_repaired_customers_total",
        "Customers queued again from the unscored set (start-up and periodic repair).",
        m.repaired,
    )
    out.counter(
        "segstream_scoring_rescored_customers_total",
        "Customers queued by re-score requests.",
        m.rescored,
    )
    out.counter("segstream_scoring_model_reloads_total", "New model versions picked up.", m.reloads)
    out.counter(
        "segstream_scoring_retrains_started_total",
        "Retrains started because drift exceeded a bound or a group emerged.",
        m.retrains,
    )
    out.counter(
        "segstream_scoring_drift_notices_total",
        "Drift notices published on the control topic.",
        m.drift_notices,
    )
    out.gauge(
        "segstream_scoring_pending_customers",
        "Customers queued for scoring in this process.",
        len(scoring.queue),
    )
    out.gauge(
        "segstream_scoring_outbox_rounds",
        "Rounds whose changes sit in the outbox awaiting the brokers' acknowledgement.",
        len(scoring.publications),
    )
    expose_drift(out, scoring)


def expose_drift(out: Exposition, scoring: ScoringView) -> None:
    """Drift of the online model (docs/segmentation.md "Drift and emerging groups"), overall
    and per segment, the mix, emerging groups, and whether a retrain was proposed.

    Per segment only for a K-means model (rules-v1 has no centroids to drift): read from the
    online model at scrape time.
    """
    m = scoring.metrics
    bound = scoring.settings.scoring.drift_bound
    out.gauge(
        "segstream_scoring_drift_max",
        "Largest move of a segment's recent centre from its reference (segment spreads).",
        m.drift_max,
    )
    out.gauge(
        "segstream_scoring_drift_mean",
        "Mean move of the segments' recent centres from their references (segment spreads).",
        m.drift_mean,
    )
    out.gauge("segstream_scoring_drift_bound", "Segment drift above which it is reported.", bound)
    out.gauge(
        "segstream_scoring_drift_mix",
        "Share of recent scorings whose segment mix moved from the reference (0..1).",
        m.drift_mix,
    )
    out.gauge(
        "segstream_scoring_emerging_groups",
        "Groups of scored customers far from every segment, large enough to propose a retrain.",
        m.emerging_groups,
    )
    out.gauge(
        "segstream_scoring_drift_exceeded",
        "1 once a retrain was proposed for the current model (drift, mix or emerging group).",
        m.drift_exceeded,
    )
    holder = scoring.holder
    report = holder.drift(bound)
    names = holder.model.names
    per_segment = [] if report is None else list(zip(names, report.per_segment, strict=False))
    out.family(
        "segstream_scoring_segment_drift",
        "gauge",
        "Move of each segment's recent centre from its reference (segment spreads).",
        [({"segment": name}, value) for name, value in per_segment],
    )
