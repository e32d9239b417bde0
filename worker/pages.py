"""The worker's web pages: ``/health`` (and ``/live``, ``/ready``), ``/metrics``, ``/scoring``.

The pages are plain async handlers with faust's signature ``(view, request)``, built around the
services they report on by the worker's composition (:mod:`worker.wiring`); the faust app only
serves them (:mod:`worker.app`) on ``SEGSTREAM_WEB_HOST:SEGSTREAM_WEB_PORT``.

Two probes for an orchestrator, one report for a person (docs/worker.md, "Health and metrics"):

- ``/health/live``: the process and its event loop answer and no service has crashed. 200, or
  503 when a service crashed (restart the process). A worker waiting out a Redis or broker
  outage is live: restarting it would not help;
- ``/health/ready``: the worker is doing its job now: ingestion running (not starting, not in an
  outage backoff, no batch failing), its consumer has joined the group, Redis answers, the input
  topics are as expected, scoring (when on) has started. 200, or 503 with what is not ready;
- ``/health``: the whole report, always 200 (its ``status`` says ok | starting | degraded |
  stopped, as before), now with ``live``, ``ready`` and the readiness ``checks`` too.

None of them fails or hangs on a dead Redis: its counters are waited for at most
:data:`HEALTH_REDIS_TIMEOUT_S`. Every text they show passes :func:`segstream.redact.redact`, so
no URL password reaches a probe's log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from segstream.redact import redact
from worker.exposition import Exposition, MetricsSource
from worker.ingest.metrics import applier_metrics, expose_ingest
from worker.ingest.service import IngestService
from worker.scoring.metrics import ScoringView, expose_scoring
from worker.state.errors import StoreRejected

log = logging.getLogger(__name__)

#: /health waits at most this long for Redis counters, so a probe never hangs on a dead Redis.
HEALTH_REDIS_TIMEOUT_S = 0.5
#: Content type of the Prometheus text format (aiohttp adds the charset).
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4"
#: A readiness check that passes says this; any other text says why it does not.
OK = "ok"


class WebView(Protocol):
    """The part of faust's ``View`` a page answers with."""

    def json(self, value: Any, *, status: int = 200) -> Any: ...

    def text(self, value: str, *, content_type: str | None = None, status: int = 200) -> Any: ...


#: A page handler: ``(view, request) -> response`` (faust's signature; the view builds it).
Page = Callable[[WebView, Any], Awaitable[Any]]


class Reports(Protocol):
    """A service with a JSON report of its own (the scoring service)."""

    def report(self) -> dict[str, Any]: ...


def ingest_pages(
    ingest: IngestService,
    started_at: float,
    *,
    scoring: ScoringView | None = None,
    extra_metrics: Sequence[MetricsSource] = (),
) -> dict[str, Page]:
    """``/health``, ``/health/live``, ``/health/ready`` and ``/metrics`` of the worker.

    ``started_at`` is the uptime's origin. ``scoring``: the scoring service whose readiness and
    families are included; by default ingestion's listener when it is one (the worker's
    composition makes the scoring service the listener). ``extra_metrics``: more families for
    ``/metrics`` from parts with counters of their own (the place for ``segstream forget``'s
    ``segstream_forget_customers_total``); a source that raises is left out of that scrape and
    counted in ``segstream_metrics_source_errors_total``.
    """
    if scoring is None and isinstance(ingest.listener, ScoringView):
        scoring = ingest.listener
    source_errors = [0]

    async def health(web: WebView, request: Any) -> Any:
        return web.json(await health_report(ingest, started_at, scoring))

    async def live(web: WebView, request: Any) -> Any:
        report = liveness(ingest, scoring, started_at)
        return web.json(report, status=200 if report["live"] else 503)

    async def ready(web: WebView, request: Any) -> Any:
        _, redis_answer = await _redis_state(ingest)
        checks = readiness(ingest, scoring, redis_answer)
        ok = all(v == OK for v in checks.values())
        return web.json(_redacted({"ready": ok, "checks": checks}), status=200 if ok else 503)

    async def metrics(web: WebView, request: Any) -> Any:
        counters = await _redis_counters(ingest)
        text = metrics_text(ingest, counters, scoring, extra_metrics, source_errors)
        return web.text(text, content_type=METRICS_CONTENT_TYPE)

    return {"/health": health, "/health/live": live, "/health/ready": ready, "/metrics": metrics}


def report_page(source: Reports) -> Page:
    """A page that answers with ``source.report()`` as JSON."""

    async def report(web: WebView, request: Any) -> Any:
        return web.json(_redacted(source.report()))

    return report


async def _redis_counters(ingest: IngestService) -> dict[str, int] | None:
    counters, _ = await _redis_state(ingest)
    return counters


async def _redis_state(ingest: IngestService) -> tuple[dict[str, int] | None, str]:
    """The store's counters, and how Redis answered: ok | unreachable | error: <reply>."""
    try:
        return await asyncio.wait_for(ingest.store.counters(), HEALTH_REDIS_TIMEOUT_S), OK
    except StoreRejected as exc:  # Redis answers, with an error (e.g. a key of the wrong type)
        return None, redact(f"error: {exc.__cause__ or exc}")  # Redis's reply, not our URL
    except Exception:
        return None, "unreachable"


def liveness(
    ingest: IngestService, scoring: ScoringView | None, started_at: float
) -> dict[str, Any]:
    """``live`` unless a service crashed (mode stops a crashed service's tasks for good)."""
    crashed = [
        name
        for name, service in (("ingest", ingest), ("scoring", scoring))
        if service is not None and getattr(service, "crashed", False)
    ]
    return {
        "live": not crashed,
        "crashed": crashed,
        "uptime_s": round(time.time() - started_at, 3),
    }


def readiness(
    ingest: IngestService, scoring: ScoringView | None, redis_answer: str
) -> dict[str, str]:
    """Each readiness check: ``ok``, or why not (a short text, no URL)."""
    m = ingest.metrics
    failing = applier_metrics(ingest.applier).failing
    watch = ingest.watch
    # scoring off: nothing to wait for
    scoring_check = OK if scoring is None or scoring.ready else "starting"
    return {
        "ingest": OK if m.state == "running" else m.state,
        "consumer_group": OK if m.joined else "not joined yet",
        "redis": redis_answer,
        "batch": OK if failing is None else f"failing ({failing.kind}), see /health",
        "topics": OK
        if watch is None or watch.healthy
        else "missing topics or reset partitions, see /health",
        "scoring": scoring_check,
    }


async def health_report(
    ingest: IngestService, started_at: float, scoring: ScoringView | None = None
) -> dict[str, Any]:
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
    checks = readiness(ingest, scoring, redis_answer)
    report = {
        "status": status,
        "live": liveness(ingest, scoring, started_at)["live"],
        "ready": all(v == OK for v in checks.values()),
        "checks": checks,
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
    redacted: dict[str, Any] = _redacted(report)
    return redacted


def metrics_text(
    ingest: IngestService,
    counters: dict[str, int] | None,
    scoring: ScoringView | None = None,
    extra: Sequence[MetricsSource] = (),
    source_errors: list[int] | None = None,
) -> str:
    """The Prometheus text of ingestion, scoring (when on) and the ``extra`` sources."""
    out = Exposition()
    expose_ingest(out, ingest.metrics, applier_metrics(ingest.applier), ingest.lag(), counters)
    if scoring is not None:
        expose_scoring(out, scoring)
    errors = source_errors if source_errors is not None else [0]
    for source in extra:
        part = Exposition()
        try:
            source(part)
            out.extend(part)
        except Exception:
            errors[0] += 1
            log.exception("a metrics source failed; its families are left out of this scrape")
    out.counter(
        "segstream_metrics_source_errors_total",
        "Scrapes that left out a metrics source because it raised.",
        errors[0],
    )
    return out.text()


def _redacted(value: Any) -> Any:
    """``value`` with every string (keys too) passed through :func:`redact`."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {_redacted(k): _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value
