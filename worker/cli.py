"""``segstream worker``: run the streaming worker (faust app + batched ingest) until stopped.

The command only turns flags into ``Settings``; :func:`worker.wiring.build_worker` composes the
worker from them and :func:`worker.app.create_app` gives it its faust app.

SIGTERM or Ctrl-C stops it in order: the in-flight batch is finished or abandoned uncommitted
(the Redis offset fence makes a redelivery harmless), then consumers, producers and Redis close.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import click

from segstream.options import env_option, settings_options
from segstream.settings import Settings


@click.command("worker")
@settings_options
@env_option("group_id", "--group-id", help="Consumer group of the ingest service.")
@env_option(
    "web_host",
    "--web-host",
    help="Address /health and /metrics listen on (0.0.0.0: every interface, for a container).",
)
@env_option("web_port", "--web-port", type=int, help="Port of /health and /metrics.")
@env_option("batch_max_records", "--batch-max-records", type=int, help="Records per batch.")
@env_option(
    "poison_retries",
    "--poison-retries",
    type=int,
    help="Attempts before a failing batch is applied in pieces and its bad records "
    "dead-lettered (0 = retry forever).",
)
@env_option("partitions", "--partitions", type=int, help="Partitions of topics faust creates.")
@env_option(
    "session_timeout_s", "--session-timeout", type=float, help="Consumer session timeout (s)."
)
@env_option("sweep_interval_s", "--sweep-interval", type=float, help="Recency sweep period (s).")
@env_option("log_level", "--log-level", help="DEBUG, INFO, WARNING or ERROR.")
@env_option(
    "scoring",
    "--scoring/--no-scoring",
    help="Assign segments (docs/scoring.md).",
)
@env_option(
    "hysteresis_margin", "--hysteresis-margin", type=float, help="Hysteresis margin (0 = off)."
)
@env_option("drift_bound", "--drift-bound", type=float, help="Drift bound (segment spreads).")
@env_option(
    "retrain_on_drift",
    "--retrain-on-drift/--no-retrain-on-drift",
    help="Start `segstream train --from redis` when drift exceeds the bound.",
)
@env_option(
    "retrain_cooldown_s", "--retrain-cooldown", type=float, help="Min. seconds between retrains."
)
@env_option(
    "rescore_all",
    "--rescore-all/--no-rescore-all",
    help="Re-score every customer when a new model version is picked up.",
)
@env_option("model_poll_s", "--model-poll", type=float, help="Seconds between model checks.")
@env_option(
    "scoring_share",
    "--scoring-share",
    type=float,
    help="Max share of time scoring takes while events arrive (0-1; docs/scoring.md).",
)
@env_option(
    "catch_up_lag",
    "--catch-up-lag",
    type=int,
    help="Records behind the brokers from which scoring uses --catch-up-share (0 = never).",
)
@env_option(
    "catch_up_share",
    "--catch-up-share",
    type=float,
    help="Max share of time scoring takes while catching up on a backlog (0-1).",
)
@env_option(
    "scoring_as_of",
    "--scoring-as-of",
    help="Pin the scoring clock (ISO 8601) instead of the wall clock (tests, backfills).",
)
def worker(
    settings: Settings,
    group_id: str,
    web_host: str,
    web_port: int,
    batch_max_records: int,
    partitions: int,
    session_timeout_s: float,
    sweep_interval_s: float,
    log_level: str,
    **scoring: object,
) -> None:
    """Consume orders and clicks, keep per-customer state in Redis, serve /health and /metrics."""
    settings = settings.with_(
        group_id=group_id,
        web_host=web_host,
        web_port=web_port,
        batch_max_records=batch_max_records,
        partitions=partitions,
        session_timeout_s=session_timeout_s,
        sweep_interval_s=sweep_interval_s,
        log_level=log_level,
        **scoring,
    )
    run_worker(settings)


def install_uvloop() -> bool:
    """Use uvloop's event loop if it is installed; call before faust is first imported."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


#: Allocations between young-generation collections (CPython's default is 700). A batch of 5000
#: events allocates tens of thousands of objects; at 700 the collector runs every few dozen.
GC_GEN0_THRESHOLD = 20_000


def freeze_startup_heap() -> None:
    """Move everything allocated at start-up out of the collector's way, collect young less often.

    faust, aiokafka, redis-py and the segmentation libraries leave hundreds of thousands of
    long-lived objects that every older-generation collection would walk again; frozen, they are
    never scanned (what that saves: benchmarks/RESULTS.md, "figures that stood in code comments").
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def run_worker(settings: Settings) -> None:
    """Build the worker (:mod:`worker.wiring`), run it in this process until a signal stops it."""
    install_uvloop()  # before faust is imported: it picks the loop policy up at import
    from worker.app import create_app
    from worker.preflight import preflight
    from worker.wiring import build_worker

    preflight(settings.kafka, settings.redis)
    app = create_app(build_worker(settings))
    freeze_startup_heap()
    faust_worker(app, settings.log_level).execute_from_commandline()


def faust_worker(app: Any, log_level: str) -> Any:
    """The faust ``Worker`` that runs ``app``, without faust's start-up spinner.

    At WARNING or above, faust gives the spinner a handler on the root logger and sets the root
    level to DEBUG so that it sees every record: every debug call of aiokafka (several per
    produce request and fetch) then builds a ``LogRecord`` that the handlers drop, ~1 % of the
    worker's CPU over a burst and ~4 % while scoring publishes. A service has no terminal to
    spin on.
    """
    import faust

    worker = faust.Worker(app, loglevel=log_level.upper(), quiet=True)
    worker.spinner = None
    return worker
