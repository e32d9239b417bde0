"""The worker's side of the dashboard: events/s, consumer lag, dead letters and drift, polled
from the worker's own web pages (``/metrics``, ``/scoring``) about once a second.

Why the pages and not Redis: they are the worker's public face (what Prometheus scrapes), they
say what *this* worker sees (its lag, its online model's drift, which Redis does not hold), and
the dashboard then needs no knowledge of the worker's keys.

Which series:

- events/s: the rate of ``segstream_state_counter_total{name="received"}`` (the whole consumer
  group's records, kept in Redis, so it survives worker restarts) over the last
  :data:`RATE_WINDOW_S`; where that is absent, this process's ``segstream_ingest_records_total``;
- lag: the sum of ``segstream_ingest_lag_records`` (records behind the high watermark);
- dead letters: ``segstream_state_counter_total{name="dead_lettered"}`` (the group's total) and
  ``segstream_ingest_dead_letters_total`` by reason (this process's, since it started);
- drift: ``segstream_scoring_segment_drift`` per segment and ``..._drift_bound``; the model
  version, drift max/mean and whether the bound was exceeded from ``/scoring``.

:class:`WorkerStats` is pure (it is given the parsed pages and the time); :func:`poll_worker`
is the thin loop that fetches them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import aiohttp

from dashboard import prometheus
from dashboard.prometheus import Samples
from segstream.redact import redact

__all__ = ["RATE_WINDOW_S", "WorkerStats", "poll_worker"]

log = logging.getLogger(__name__)

#: events/s is the rate over this many seconds (the worker applies in batches: a 1 s rate jumps).
RATE_WINDOW_S = 5.0
#: How long one page may take before the worker counts as not answering.
FETCH_TIMEOUT_S = 2.0


class WorkerStats:
    """The worker's figures now and over the last ``samples`` polls."""

    def __init__(self, url: str, samples: int = 600) -> None:
        #: For the page: the worker's URL with any password masked.
        self.url = redact(url)
        self.reachable = False
        self.error: str | None = "not polled yet"
        self.polls = 0
        self.state: str | None = None
        self.model_version: str | None = None
        self.received: int | None = None
        self.events_per_s: float | None = None
        self.lag: int | None = None
        self.dead_letters: int | None = None
        self.dead_letters_by_reason: dict[str, int] = {}
        self.drift: dict[str, float] = {}
        self.drift_bound: float | None = None
        self.drift_max: float | None = None
        self.drift_mean: float | None = None
        self.drift_exceeded = False
        self._received: deque[tuple[float, float]] = deque()
        self._history: deque[tuple[int, float | None, int | None, int | None]] = deque(
            maxlen=samples
        )

    def observe(self, now: float, metrics: Samples, scoring: Mapping[str, Any] | None) -> None:
        """One poll's pages: ``metrics`` parsed, ``scoring`` the /scoring JSON (None: absent)."""
        self.polls += 1
        self.reachable, self.error = True, None
        self.state = next(
            (labels.get("state") for labels, v in metrics.get("segstream_ingest_state", ()) if v),
            None,
        )
        received = prometheus.value(metrics, "segstream_state_counter_total", name="received")
        if received is None:
            received = prometheus.total(metrics, "segstream_ingest_records_total")
        self.received = None if received is None else int(received)
        self.events_per_s = self._rate(now, received)
        lag = prometheus.total(metrics, "segstream_ingest_lag_records")
        self.lag = None if lag is None else int(lag)
        dead = prometheus.value(metrics, "segstream_state_counter_total", name="dead_lettered")
        if dead is None:
            dead = prometheus.total(metrics, "segstream_ingest_dead_letters_total")
        self.dead_letters = None if dead is None else int(dead)
        self.dead_letters_by_reason = {
            labels.get("reason", "?"): int(v)
            for labels, v in metrics.get("segstream_ingest_dead_letters_total", ())
            if v
        }
        self.drift = {
            labels.get("segment", "?"): v
            for labels, v in metrics.get("segstream_scoring_segment_drift", ())
        }
        self.drift_bound = prometheus.value(metrics, "segstream_scoring_drift_bound")
        self.drift_max = prometheus.value(metrics, "segstream_scoring_drift_max")
        self.drift_mean = prometheus.value(metrics, "segstream_scoring_drift_mean")
        self.drift_exceeded = bool(prometheus.value(metrics, "segstream_scoring_drift_exceeded"))
        info = metrics.get("segstream_scoring_model_info", ())
        version = next((labels.get("version") for labels, _ in info), None)
        if scoring:
            version = str(scoring.get("model_version") or version or "") or None
            self.drift_exceeded = bool(scoring.get("drift_exceeded", self.drift_exceeded))
        self.model_version = version
        self._history.append((int(now * 1000), self.events_per_s, self.lag, self.dead_letters))

    def unreachable(self, now: float, error: str) -> None:
        """A poll that failed: the figures stay as last seen, the charts get a gap."""
        self.polls += 1
        self.reachable, self.error = False, redact(error)
        self.events_per_s = None
        self._received.clear()
        self._history.append((int(now * 1000), None, None, None))

    def _rate(self, now: float, received: float | None) -> float | None:
        if received is None:
            return None
        window = self._received
        if window and received < window[-1][1]:
            window.clear()  # a counter reset (a restarted worker): start the rate afresh
        window.append((now, received))
        while len(window) > 2 and now - window[1][0] >= RATE_WINDOW_S:
            window.popleft()
        if len(window) < 2:
            return None
        (t0, r0), (t1, r1) = window[0], window[-1]
        return (r1 - r0) / (t1 - t0) if t1 > t0 else None

    def view(self) -> dict[str, Any]:
        """Everything the page draws from the worker, as plain JSON-ready values."""
        return {
            "url": self.url,
            "reachable": self.reachable,
            "error": self.error,
            "state": self.state,
            "model_version": self.model_version,
            "received": self.received,
            "events_per_s": self.events_per_s,
            "lag": self.lag,
            "dead_letters": self.dead_letters,
            "dead_letters_by_reason": dict(self.dead_letters_by_reason),
            "drift": {
                "segments": dict(self.drift),
                "bound": self.drift_bound,
                "max": self.drift_max,
                "mean": self.drift_mean,
                "exceeded": self.drift_exceeded,
            },
            "history": {
                "t": [t for t, *_ in self._history],
                "events_per_s": [e for _, e, _, _ in self._history],
                "lag": [lag for _, _, lag, _ in self._history],
                "dead_letters": [d for _, _, _, d in self._history],
            },
        }


async def poll_worker(url: str, stats: WorkerStats, interval_s: float = 1.0) -> None:
    """Fetch ``/metrics`` and ``/scoring`` every ``interval_s`` into ``stats``, until cancelled.

    A worker that does not answer is shown as unreachable and polled again; ``/scoring`` that
    is missing (a worker running without scoring) leaves the drift empty.
    """
    base = url.rstrip("/")
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            started = time.monotonic()
            try:
                async with session.get(f"{base}/metrics") as reply:
                    reply.raise_for_status()
                    metrics = prometheus.parse(await reply.text())
                scoring = await _scoring(session, base)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                stats.unreachable(time.time(), f"{type(exc).__name__}: {exc}")
            else:
                stats.observe(time.time(), metrics, scoring)
            await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - started)))


async def _scoring(session: aiohttp.ClientSession, base: str) -> dict[str, Any] | None:
    async with session.get(f"{base}/scoring") as reply:
        if reply.status != 200:
            return None
        data = await reply.json(content_type=None)
        return data if isinstance(data, dict) else None
