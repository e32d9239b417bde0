"""The dashboard's web server (aiohttp): the page, its script and style, and a live feed.

``GET /`` the page, ``GET /static/{app.js,style.css}`` its two files (all from
``dashboard/static``: no CDN, nothing fetched from elsewhere), ``GET /events`` a server-sent
events stream with one snapshot (JSON) per tick, ``GET /snapshot.json`` the latest snapshot.

One ticker builds the snapshot every ``interval_s`` (sizes sampled, the follower's and the
worker's figures merged) and wakes every open stream, so ten open tabs cost one snapshot, not
ten. Background work (the topic follower, the worker poller, the ticker) starts and stops with
the application (``cleanup_ctx``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from dashboard.feed import FeedStatus, follow_changes
from dashboard.tally import ChangeTally
from dashboard.worker_stats import WorkerStats, poll_worker
from segstream.redact import redact
from segstream.settings import Settings

__all__ = ["BOARD", "STATIC_FILES", "Board", "build_app"]

#: The files the page is made of (served from the package; nothing else is).
STATIC_FILES = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
}


class Board:
    """The dashboard's state: the tally of changes, the worker's figures, the latest snapshot."""

    def __init__(self, settings: Settings, worker_url: str) -> None:
        self.settings = settings
        self.worker_url = worker_url
        self.tally = ChangeTally()
        self.feed = FeedStatus()
        self.worker = WorkerStats(worker_url)
        self.latest = b"{}"
        self.ticks = 0
        self.tick = asyncio.Condition()
        self.closing = False

    def snapshot(self, now_ms: int) -> dict[str, Any]:
        """One frame of the page: the changes' view, the worker's, and where they came from."""
        return {
            "at": now_ms,
            "tick": self.ticks,
            "source": {
                "topic": self.settings.kafka.segment_changes_topic,
                "bootstrap": redact(self.settings.kafka.bootstrap),
                "redis": redact(self.settings.redis.url),
                "feed_state": self.feed.state,
                "feed_error": self.feed.error,
                "partitions": self.feed.partitions,
            },
            **self.tally.view(now_ms),
            "worker": self.worker.view(),
        }

    async def run_ticker(self, interval_s: float) -> None:
        while True:
            now_ms = int(time.time() * 1000)
            self.tally.sample(now_ms)
            self.ticks += 1
            self.latest = orjson.dumps(self.snapshot(now_ms))
            async with self.tick:
                self.tick.notify_all()
            await asyncio.sleep(interval_s)


#: The application's :class:`Board`.
BOARD = web.AppKey("board", Board)


def build_app(settings: Settings, worker_url: str, interval_s: float = 1.0) -> web.Application:
    """The dashboard for ``settings``' topic and Redis, polling the worker at ``worker_url``."""
    app = web.Application()
    board = Board(settings, worker_url)
    app[BOARD] = board

    async def background(app: web.Application) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(follow_changes(settings, board.tally, board.feed)),
            asyncio.create_task(poll_worker(worker_url, board.worker, interval_s)),
            asyncio.create_task(board.run_ticker(interval_s)),
        ]
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def closing(app: web.Application) -> None:
        board.closing = True
        async with board.tick:
            board.tick.notify_all()

    app.cleanup_ctx.append(background)
    app.on_shutdown.append(closing)
    app.router.add_get("/", _static("index.html"))
    app.router.add_get("/static/{name}", _static_file)
    app.router.add_get("/snapshot.json", _snapshot)
    app.router.add_get("/events", _events)
    return app


def _read_static(name: str) -> bytes:
    return resources.files("dashboard").joinpath("static", name).read_bytes()


def _static(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return _file_response(name)

    return handler


async def _static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    return _file_response(name)


def _file_response(name: str) -> web.Response:
    return web.Response(
        body=_read_static(name),
        content_type=STATIC_FILES[name],
        charset="utf-8",
        headers={"Cache-Control": "no-cache"},
    )


async def _snapshot(request: web.Request) -> web.Response:
    board = request.app[BOARD]
    return web.Response(body=board.latest, content_type="application/json")


async def _events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the latest snapshot now, then one per tick until the page closes."""
    board = request.app[BOARD]
    reply = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await reply.prepare(request)
    try:
        await reply.write(b"retry: 2000\n\n")
        while not board.closing:
            await reply.write(b"data: " + board.latest + b"\n\n")
            async with board.tick:
                await board.tick.wait()
    except ConnectionResetError:  # the page was closed
        pass
    return reply
