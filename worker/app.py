"""The faust app behind ``segstream worker``: lifecycle, web health/metrics, timers, control.

faust runs the process: start/stop in order, signals, logging, the web server with ``/health``
and ``/metrics``, the recency-sweep timer and an agent on the low-volume control topic. The
orders + clicks hot path is *not* a faust agent: faust's per-event stream tops out near 8k
events/s per process here, so it is the batched aiokafka :class:`IngestService`, a mode Service
started and stopped with the app (see docs/worker.md for the numbers).

Importing this module imports faust: call :func:`worker.cli.install_uvloop` first when
uvloop is wanted (faust and mode pick the event-loop policy up at import time).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import faust

from schemas import SchemaError
from segstream.settings import Settings
from worker.ingest.applier import ApplierMetrics
from worker.ingest.batch import Rejected
from worker.ingest.hooks import Hooks
from worker.ingest.service import IngestService, StateStoreLike
from worker.ingest.sweep import RecencySweep
from worker.scoring import control as control_message
from worker.scoring.errors import ControlMessageInvalid
from worker.state.errors import StoreRejected

log = logging.getLogger(__name__)

APP_NAME = "segstream-worker"
#: /health waits at most this long for Redis counters, so a probe never hangs on a dead Redis.
HEALTH_REDIS_TIMEOUT_S = 0.5


def create_app(
    settings: Settings,
    *,
    hooks: Hooks | None = None,
    store_factory: Any = None,
) -> faust.App:
    """Build the worker app for ``settings``; ``hooks`` is the segmentation seam.

    The faust consumer group (control agent, leader election for the sweep) is
    ``<group_id>-app``, kept apart from the ingestion group ``<group_id>`` so the two
    subscriptions never share an assignment.
    """
    hooks = hooks or Hooks()
    datadir = Path(settings.run_dir) / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{settings.group_id}-app",
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        topic_partitions=settings.partitions,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(0.5, settings.session_timeout_s / 3),
        web_port=settings.web_port,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        datadir=str(datadir),
        autodiscover=False,
        consumer_auto_offset_reset="latest",
    )
    ingest = IngestService(settings, hooks=hooks, store_factory=store_factory, loop=app.loop)
    app.add_dependency(ingest)
    app.ingest = ingest  # type: ignore[attr-defined]
    started_at = time.time()

    control = app.topic(settings.control_topic, value_serializer="raw")

    @app.agent(control, name="control")
    async def control_agent(stream: Any) -> None:
        """Model-update and drift notices: handed to ``hooks.on_control`` (low volume)."""
        async for event in stream.events():
            await handle_control(event.message, hooks, ingest)

    sweep = RecencySweep(
        settings.redis_url,
        settings.redis_prefix,
        settings.recency_thresholds_days,
        first_window_s=settings.sweep_interval_s,
    )

    @app.timer(interval=settings.sweep_interval_s, name="recency-sweep")  # type: ignore[untyped-decorator]
    async def recency_sweep() -> None:
        await sweep_once(ingest, sweep, hooks)

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        return web.json(await health_report(ingest, started_at))

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        text = prometheus_text(ingest, await _redis_counters(ingest))
        return web.text(text, content_type="text/plain; version=0.0.4")

    return app


async def handle_control(message: Any, hooks: Hooks, ingest: IngestService) -> None:
    """One control-topic record: not a control message -> dead letter; else the hook.

    Whatever the record holds, the agent goes on with the next one: a record that is not a
    control message is dead-lettered with the reason, and a hook that raises is logged (model
    updates and rescore requests are also found by polling Redis, so none is lost that way).
    """
    value = message.value
    try:
        control_message.decode(value)
    except ControlMessageInvalid as exc:
        ingest.metrics.control_dead_lettered += 1
        await ingest.dead_letter(
            Rejected(
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                key=message.key if isinstance(message.key, bytes) else None,
                value=bytes(value) if isinstance(value, bytes | bytearray) else b"",
                error=SchemaError("$", str(exc)),
            )
        )
        return
    if hooks.on_control is None:
        return
    try:
        await hooks.on_control(value)
    except Exception:
        log.exception("on_control hook failed")


async def sweep_once(ingest: IngestService, sweep: RecencySweep, hooks: Hooks) -> list[str]:
    """One recency sweep: claim a window, find the customers crossing, hand them to the hook."""
    store = ingest.store
    if store is None:
        return []
    try:
        crossers = await sweep.run_once(store)
    except Exception as exc:
        log.warning(
            "recency sweep failed (%s: %s); the next sweep retries", type(exc).__name__, exc
        )
        return []
    ingest.metrics.sweeps += 1
    ingest.metrics.recency_crossed += len(crossers)
    if crossers and hooks.on_recency_crossed is not None:
        try:
            await hooks.on_recency_crossed(crossers)
        except Exception:
            log.exception("on_recency_crossed hook failed for %d customer(s)", len(crossers))
    return crossers


async def _redis_counters(ingest: IngestService) -> dict[str, int] | None:
    counters, _ = await _redis_state(ingest)
    return counters


async def _redis_state(ingest: IngestService) -> tuple[dict[str, int] | None, str]:
    """The store's counters, and how Redis answered: ok | unreachable | error: <reply>."""
    import asyncio

    store: StateStoreLike | None = ingest.store
    if store is None:
        return None, "unreachable"
    try:
        return await asyncio.wait_for(store.counters(), HEALTH_REDIS_TIMEOUT_S), "ok"
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
    a = ingest.applier.metrics if ingest.applier is not None else ApplierMetrics()
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
        "group_id": ingest.settings.group_id,
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
    a = ingest.applier.metrics if ingest.applier is not None else ApplierMetrics()
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
