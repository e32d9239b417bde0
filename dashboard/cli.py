"""``segstream dashboard``: the live dashboard in a browser (docs/dashboard.md).

It binds ``127.0.0.1`` unless told otherwise (``--host``): the page shows customer counts and
the worker's figures, nothing for the network at large. It prints its URL once it listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import click
from aiohttp import web

from dashboard.server import build_app
from segstream.errors import ServiceError
from segstream.options import env_option, settings_options
from segstream.redact import redact
from segstream.settings import Settings
from worker.preflight import checks_access

__all__ = ["dashboard", "worker_url_of"]

#: Addresses that mean "every interface" when bound, which a client cannot dial.
_ANY = {"", "0.0.0.0", "::"}


def worker_url_of(settings: Settings) -> str:
    """``dashboard_worker_url``, or the worker's own pages on ``web_host:web_port``."""
    if settings.dashboard_worker_url:
        return settings.dashboard_worker_url
    host = "127.0.0.1" if settings.web_host in _ANY else settings.web_host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.web_port}"


@click.command("dashboard")
@settings_options
@env_option(
    "dashboard_worker_url",
    "--worker-url",
    help="The worker's web pages (/metrics, /scoring); empty = http://WEB_HOST:WEB_PORT.",
)
@env_option("dashboard_host", "--host", help="Address the dashboard listens on.")
@env_option("dashboard_port", "--port", type=int, help="Port the dashboard listens on (0 = free).")
@env_option("web_port", "--web-port", type=int, help="The worker's web port (for the default URL).")
@checks_access(kafka=True, redis=True)
def dashboard(
    settings: Settings,
    dashboard_worker_url: str,
    dashboard_host: str,
    dashboard_port: int,
    web_port: int,
) -> None:
    """Live dashboard: segment sizes, changes, transitions, drift, events/s, lag, dead letters."""
    settings = settings.with_(
        dashboard_worker_url=dashboard_worker_url,
        dashboard_host=dashboard_host,
        dashboard_port=dashboard_port,
        web_port=web_port,
    )
    asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> None:
    worker_url = worker_url_of(settings)
    runner = web.AppRunner(build_app(settings, worker_url), shutdown_timeout=2.0)
    await runner.setup()
    host, port = settings.dashboard_host, settings.dashboard_port
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ServiceError(
            f"the dashboard cannot listen on {host}:{port}: {exc.strerror or exc} "
            "(choose another with --port or SEGSTREAM_DASHBOARD_PORT; 0 = a free port)"
        ) from exc
    bound = runner.addresses[0][1] if runner.addresses else port
    shown = "127.0.0.1" if host in _ANY else host
    shown = f"[{shown}]" if ":" in shown else shown
    click.echo(
        f"dashboard: http://{shown}:{bound}/  (worker {redact(worker_url)}, "
        f"topic {settings.kafka.segment_changes_topic}; Ctrl-C stops it)"
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
