"""The faust app behind ``segstream worker``: lifecycle, web pages, the sweep timer, control.

faust runs the process: start/stop in order, signals, logging, the web server, the recency-sweep
timer and an agent on the low-volume control topic. The orders + clicks hot path is *not* a
faust agent: faust's per-event stream tops out near 8k events/s per process here, so it is the
batched aiokafka :class:`IngestService`, a mode Service started and stopped with the app (see
docs/worker.md for the numbers). The app builds none of its parts: it serves and runs what
:func:`worker.wiring.build_worker` built.

Importing this module imports faust: call :func:`worker.cli.install_uvloop` first when
uvloop is wanted (faust and mode pick the event-loop policy up at import time).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faust

from schemas import SchemaError
from segstream.security import kafka_options
from worker.ingest.batch import Rejected
from worker.ingest.listener import ChangeListener
from worker.ingest.service import IngestService
from worker.ingest.sweep import RecencySweep
from worker.scoring import control as control_message
from worker.scoring.errors import ControlMessageInvalid

if TYPE_CHECKING:
    from segstream.settings import Settings
    from worker.wiring import Worker

log = logging.getLogger(__name__)

APP_NAME = "segstream-worker"


def create_app(worker: Worker) -> faust.App:
    """The faust app that runs ``worker``'s services, serves its pages, sweeps and hears control.

    The faust consumer group (control agent, leader election for the sweep) is
    ``<group_id>-app``, kept apart from the ingestion group ``<group_id>`` so the two
    subscriptions never share an assignment.
    """
    settings, ingest, listener = worker.settings, worker.ingest, worker.listener
    datadir = Path(settings.local.run_dir) / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{settings.kafka.group_id}-app",
        broker=f"kafka://{settings.kafka.bootstrap}",
        broker_credentials=faust_credentials(settings),
        store="memory://",
        topic_partitions=settings.kafka.partitions,
        broker_session_timeout=settings.kafka.session_timeout_s,
        broker_heartbeat_interval=max(0.5, settings.kafka.session_timeout_s / 3),
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        datadir=str(datadir),
        autodiscover=False,
        consumer_auto_offset_reset="latest",
    )
    for service in worker.services:
        app.add_dependency(service)

    control = app.topic(settings.kafka.control_topic, value_serializer="raw")

    @app.agent(control, name="control")
    async def control_agent(stream: Any) -> None:
        """Model-update and drift notices: handed to ``listener.on_control`` (low volume)."""
        async for event in stream.events():
            await handle_control(event.message, listener, ingest)

    @app.timer(interval=settings.ingest.sweep_interval_s, name="recency-sweep")  # type: ignore[untyped-decorator]
    async def recency_sweep() -> None:
        await sweep_once(ingest, worker.sweep, listener)

    for path, page in worker.pages.items():
        app.page(path, name=path.strip("/") or "root")(page)
    return app


def faust_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """The faust app's TLS/SASL, from the same options every other client gets."""
    options = kafka_options(settings.kafka)
    if not options:
        return None
    if "sasl_mechanism" in options:
        return faust.SASLCredentials(
            username=options["sasl_plain_username"],
            password=options["sasl_plain_password"],
            ssl_context=options.get("ssl_context"),
            mechanism=options["sasl_mechanism"],
        )
    return faust.SSLCredentials(options["ssl_context"])


async def handle_control(message: Any, listener: ChangeListener, ingest: IngestService) -> None:
    """One control-topic record: not a control message -> dead letter; else the listener's.

    Whatever the record holds, the agent goes on with the next one: a record that is not a
    control message is dead-lettered with the reason, and a listener that raises is logged (model
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
    try:
        await listener.on_control(value)
    except Exception:
        log.exception("on_control failed")


async def sweep_once(
    ingest: IngestService, sweep: RecencySweep, listener: ChangeListener
) -> list[str]:
    """One recency sweep: claim a window, find the customers crossing, tell the listener."""
    try:
        crossers = await sweep.run_once(ingest.store)
    except Exception as exc:
        log.warning(
            "recency sweep failed (%s: %s); the next sweep retries", type(exc).__name__, exc
        )
        return []
    ingest.metrics.sweeps += 1
    ingest.metrics.recency_crossed += len(crossers)
    if crossers:
        try:
            await listener.on_recency_crossed(crossers)
        except Exception:
            log.exception("on_recency_crossed failed for %d customer(s)", len(crossers))
    return crossers
