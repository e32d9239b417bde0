"""``segstream worker``: run the streaming worker (faust app + batched ingest) until stopped.

SIGTERM or Ctrl-C stops it in order: the in-flight batch is finished or abandoned uncommitted
(the Redis offset fence makes a redelivery harmless), then consumers, producers and Redis close.
"""

from __future__ import annotations

import asyncio

import click

from worker.cli_options import env_option, settings_options
from worker.config import Settings


@click.command("worker")
@settings_options
@env_option("group_id", "--group-id", help="Consumer group of the ingest service.")
@env_option("web_port", "--web-port", type=int, help="Port of /health and /metrics.")
@env_option("batch_max_records", "--batch-max-records", type=int, help="Records per batch.")
@env_option("partitions", "--partitions", type=int, help="Partitions of topics faust creates.")
@env_option(
    "session_timeout_s", "--session-timeout", type=float, help="Consumer session timeout (s)."
)
@env_option("sweep_interval_s", "--sweep-interval", type=float, help="Recency sweep period (s).")
@env_option("log_level", "--log-level", help="DEBUG, INFO, WARNING or ERROR.")
def worker(
    settings: Settings,
    group_id: str,
    web_port: int,
    batch_max_records: int,
    partitions: int,
    session_timeout_s: float,
    sweep_interval_s: float,
    log_level: str,
) -> None:
    """Consume orders and clicks, keep per-customer state in Redis, serve /health and /metrics."""
    settings = settings.with_(
        group_id=group_id,
        web_port=web_port,
        batch_max_records=batch_max_records,
        partitions=partitions,
        session_timeout_s=session_timeout_s,
        sweep_interval_s=sweep_interval_s,
        log_level=log_level,
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


def run_worker(settings: Settings) -> None:
    """Build the app and run it in this process until a signal stops it."""
    install_uvloop()  # before faust is imported: it picks the loop policy up at import
    import faust

    from worker.app import create_app

    app = create_app(settings)
    faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True).execute_from_commandline()
