"""What the worker's web pages answer: ``/health``, ``/metrics`` and, with scoring, ``/scoring``.

The pages are plain async handlers with faust's signature ``(view, request)``, built around the
services they report on by the worker's composition (:mod:`worker.wiring`); the faust app only
serves them (:mod:`worker.app`). ``/health`` and ``/metrics`` never fail and never hang on a
dead Redis: its counters are waited for at most :data:`HEALTH_REDIS_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from worker.ingest.metrics import applier_metrics
from worker.ingest.service import IngestService
from worker.state.errors import StoreRejected

#: /health waits at most this long for Redis counters, so a probe never hangs on a dead Redis.
HEALTH_REDIS_TIMEOUT_S = 0.5


class WebView(Protocol):
    """The part of faust's ``View`` a page answers with."""

    def json(self, value: Any) -> Any: ...

    def text(self, value: str, *, content_type: str | None = None) -> Any: ...


#: A page handler: ``(view, request) -> response`` (faust's signature; the view builds it).
Page = Callable[[WebView, Any], Awaitable[Any]]


class Reports(Protocol):
    """A service with a JSON report of its own (the scoring service)."""

    def report(self) -> dict[str, Any]: ...


def ingest_pages(ingest: IngestService, started_at: float) -> dict[str, Page]:
    """``/health`` and ``/metrics`` of ``ingest``; ``started_at`` is the uptime's origin."""

    async def health(web: WebView, request: Any) -> Any:
        return web.json(await health_report(ingest, started_at))

    async def metrics(web: WebView, request: Any) -> Any:
        text = prometheus_text(ingest, await _redis_counters(ingest))
        return web.text(text, content_type="text/plain; version=0.0.4")

    return {"/health": health, "/metrics": metrics}


def report_page(source: Reports) -> Page:
    """A page that answers with ``source.report()`` as JSON."""

    async def report(web: WebView, request: Any) -> Any:
        return web.json(source.report())

    return report


async def _redis_counters(ingest: IngestService) -> dict[str, int] | None:
    counters, _ = await _redis_state(ingest)
    return counters


async def _redis_state(ingest: IngestService) -> tuple[dict[str, int] | None, str]:
    """The store's counters, and how Redis answered: ok | unreachable | error: <reply>."""
    try:
        return await asyncio.wait_for(ingest.store.counters(), HEALTH_REDIS_TIMEOUT_S), "ok"
    except StoreRejected as exc:  # Redis answers, with an error (e.g. a key of the wrong type)
        return None, f"error: {exc.__cause__ or exc}"  # Redis's reply, not our URL
    except Exception:
        return None, "unreachable"


async def health_report(ingest: IngestService, started_at: float) -> dict[str, Any]:
    """``status`` is ok | starting | degraded (retrying Redis/broker) | stopped; never 5xx."""
    m = ingest.metrics
    counters, redis_answer = await _redis_state(ingest)
    status = {"running": "ok", "starting": "starting", "stopped": "stopped"}.get(
        m.state, "degraded"
    )
    if counters is None and status == "ok":
        status = "degraded"
    watch = ingest.watch.report() if ingest.watch is not None else {}
    if ingest.watch is not None and not ingest.watch.healthy and status == "ok":
        status = "degraded"
    lag = ingest.lag()
    a = applier_metrics(ingest.applier)
    return {
        "status": status,
        "state": m.state,
        # the batch that is failing now (which offsets, outage or poison, the error, what to
        # do); null while ingestion runs normally
        "batch_failure": a.failing.as_dict() if a.failing is not None else None,
        # input topics the broker does not have, partitions paused because their log went
        # back behind what was applied (worker/ingest/watch.py)
        **watch,
        "uptime_s": round(time.time() - started_at, 3),
        "group_id": ingest.settings.kafka.group_id,
        "assigned": m.assigned,
        "lag": {"total": sum(lag.values()), "by_partition": lag},
        "redis": redis_answer,
        "counters": counters,
        "process": {
            "batches": m.batches,
            "received": m.received,
            "valid": m.valid,
            "dead_lettered": m.dead_lettered,
            "applied": m.applied,
            "duplicates": m.duplicates,
            "apply_failures": {"outage": a.outage_failures, "poison": a.poison_failures},
            "isolated_batches": a.isolated_batches,
            "quarantined": a.quarantined,
            "dead_letter_retries": a.dead_letter_retries,
            "control_dead_lettered": m.control_dead_lettered,
            "batch_path_failures": m.batch_path_failures,
            "commit_failures": m.commit_failures,
            "rebalances": m.rebalances,
        },
        "last_error": m.last_error,
        "last_error_age_s": None
        if m.last_error_at is None
        else round(time.time() - m.last_error_at, 3),
    }


def prometheus_text(ingest: IngestService, counters: dict[str, int] | None) -> str:
    """Prometheus text exposition (0.0.4) of the ingest metrics; no client library needed."""
    m = ingest.metrics
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP segstream_{name} {help_text}")
        lines.append(f"# TYPE segstream_{name} {kind}")
        lines.extend(f"segstream_{name}{labels} {value:g}" for labels, value in samples)

    metric("up", "gauge", "1 when ingestion is running normally.", [("", m.state == "running")])
    metric(
        "ingest_records_total",
        "counter",
        "Input records handled by this process, by outcome.",
        [('{outcome="valid"}', m.valid), ('{outcome="dead_lettered"}', m.dead_lettered)],
    )
    metric("ingest_batches_total", "counter", "Batches applied.", [("", m.batches)])
    metric("ingest_applied_total", "counter", "Events applied to state.", [("", m.applied)])
    metric(
        "ingest_duplicates_total",
        "counter",
        "Events skipped as already applied (fence or event id).",
        [("", m.duplicates)],
    )
    a = applier_metrics(ingest.applier)
    metric(
        "ingest_apply_failures_total",
        "counter",
        "Failed state-store applies, by kind (outage: waited out; poison: isolated after "
        "poison_retries attempts).",
        [('{kind="outage"}', a.outage_failures), ('{kind="poison"}', a.poison_failures)],
    )
    metric(
        "ingest_dead_letter_retries_total",
        "counter",
        "Failed sends to the dead-letter topic (retried).",
        [("", a.dead_letter_retries)],
    )
    metric(
        "ingest_isolated_batches_total",
        "counter",
        "Batches applied in pieces to isolate the records the state store refused.",
        [("", a.isolated_batches)],
    )
    metric(
        "ingest_quarantined_records_total",
        "counter",
        "Valid records dead-lettered because the state store kept refusing them.",
        [("", a.quarantined)],
    )
    metric(
        "ingest_batch_failing",
        "gauge",
        "1 while a batch is failing (see /health batch_failure).",
        [("", a.failing is not None)],
    )
    metric(
        "ingest_commit_failures_total",
        "counter",
        "Offset commits that failed (covered by a later commit).",
        [("", m.commit_failures)],
    )
    metric(
        "ingest_apply_seconds",
        "summary",
        "Time per batch apply, retries included.",
        [("_sum", m.apply_seconds_sum), ("_count", m.batches)],
    )
    lag = ingest.lag()
    metric(
        "ingest_lag_records",
        "gauge",
        "Records behind the high watermark (approximate on tansu).",
        [(f'{{partition="{k}"}}', v) for k, v in sorted(lag.items())],
    )
    if counters is not None:
        metric(
            "state_counter",
            "counter",
            "The state store's own counters in Redis (all workers of the group).",
            [(f'{{name="{k}"}}', v) for k, v in sorted(counters.items())],
        )
    return "\n".join(lines) + "\n"
