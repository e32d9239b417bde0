"""The producer loop: events from a source, paced, encoded, keyed and handed to a sink.

It writes every :class:`~producers.readers.Reject` to the rejects file, shows a progress bar
(rate and ETA) when stderr is a terminal, and ends with a :class:`Summary`: rows read, events
sent and confirmed, rows rejected, failures, seconds, events/s.
"""

from __future__ import annotations

import csv
import io
import sys
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from producers.rate import EventTimePacer, TokenBucket
from producers.readers import Reject
from producers.sinks import EventSink, SinkResult
from schemas import ClickEvent, CustomerProfile, OrderEvent, encode

#: Progress and rate checks happen once per this many events (cheap on the hot path).
TICK = 1000


@dataclass
class Summary:
    """What a run did; ``lines()`` is what the CLI prints."""

    source: str
    rows_read: int = 0
    events_sent: int = 0
    delivered: int = 0
    rejected: int = 0
    unsent: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    rejects_path: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        out = [
            f"source        {self.source}",
            f"rows read     {self.rows_read}",
            f"events sent   {self.events_sent} (confirmed {self.delivered}, failed {self.failed})",
            f"rows rejected {self.rejected}"
            + (f" -> {self.rejects_path}" if self.rejects_path and self.rejected else ""),
        ]
        if self.unsent:
            out.append(f"rows unsent   {self.unsent} (no CustomerID; listed in the rejects file)")
        for key, value in self.notes.items():
            out.append(f"{key:<13} {value}")
        out.append(f"seconds       {self.seconds:.2f}")
        out.append(f"events/s      {self.events_per_s:,.0f}")
        out.extend(f"error         {e}" for e in self.errors)
        return out


class RejectsWriter:
    """CSV ``line,reason,row`` (the row as it was in the file)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._out: TextIO = self.path.open("w", newline="")
        self._writer = csv.writer(self._out)
        self._writer.writerow(("line", "reason", "row"))
        self.count = 0

    def write(self, reject: Reject) -> None:
        self.count += 1
        self._writer.writerow((reject.line, reject.reason, _row_text(reject.fields)))

    def close(self) -> None:
        self._out.close()


def _row_text(fields: tuple[str, ...]) -> str:
    if len(fields) == 1:
        return fields[0]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(fields)
    return buf.getvalue()


def progress_bar(description: str, total: int | None, enabled: bool | None = None) -> Any:
    """A rich progress bar with rate and ETA, or ``None`` when stderr is not a terminal."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    class _Rate(TextColumn):
        def render(self, task: Any) -> Any:  # events/s so far
            from rich.text import Text

            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} ev/s" if speed else "- ev/s")

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        _Rate(""),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        refresh_per_second=4,
        transient=False,
    )
    progress.add_task(description, total=total)
    return progress


def pump(
    items: Iterable[OrderEvent | ClickEvent | CustomerProfile | Reject],
    sink: EventSink,
    *,
    source: str,
    rate: float | None = None,
    time_scale: float | None = None,
    rejects: RejectsWriter | None = None,
    total: int | None = None,
    progress: bool | None = None,
) -> Summary:
    """Send every event of ``items`` to ``sink``; write rejects; return the summary.

    ``rate`` (events/s) and ``time_scale`` (event-time speed-up) may be combined; ``None`` for
    both is "as fast as the sink takes them". ``total`` sizes the progress bar.
    """
    summary = Summary(source=source, rejects_path=str(rejects.path) if rejects else None)
    bucket = TokenBucket(rate) if rate else None
    pacer = EventTimePacer(time_scale) if time_scale else None
    bar = progress_bar(f"producing {source}", total, progress)
    started = time.perf_counter()
    sent = rejected = unsent = 0
    send = sink.send
    context: AbstractContextManager[Any] = bar if bar is not None else nullcontext()
    result: SinkResult | None = None
    try:
        with context:
            tick = 0
            for item in items:
                if isinstance(item, Reject):
                    if item.bad:
                        rejected += 1
                    else:
                        unsent += 1
                    if rejects is not None:
                        rejects.write(item)
                    continue
                if pacer is not None:
                    pacer.wait_for(item.event_time_ms)
                if bucket is not None:
                    bucket.acquire()
                key = item.customer_id or getattr(item, "anonymous_id", None) or ""
                send(item, key.encode(), encode(item))
                sent += 1
                tick += 1
                if tick >= TICK and bar is not None:
                    bar.update(bar.task_ids[0], completed=sent + rejected + unsent)
                    tick = 0
            if bar is not None:
                bar.update(bar.task_ids[0], completed=sent + rejected + unsent)
    finally:
        result = sink.close()
        if rejects is not None:
            rejects.close()
    return _summarise(summary, result, started, sent=sent, rejected=rejected, unsent=unsent)


def _summarise(
    summary: Summary, result: Any, started: float, *, sent: int, rejected: int, unsent: int
) -> Summary:
    """Fill ``summary`` from the counts of a finished run and the sink's delivery result."""
    summary.seconds = time.perf_counter() - started
    summary.rows_read = sent + rejected + unsent
    summary.events_sent = result.sent
    summary.failed = result.failed
    summary.delivered = result.delivered
    summary.errors = list(result.errors)
    summary.rejected = rejected
    summary.unsent = unsent
    return summary


def pump_chunks(
    chunks: Iterable[Any],
    sink: Any,
    *,
    source: str,
    rate: float | None = None,
    time_scale: float | None = None,
    rejects: RejectsWriter | None = None,
    total: int | None = None,
    progress: bool | None = None,
) -> Summary:
    """:func:`pump` for pre-encoded chunks (see :mod:`producers.parallel`).

    Each chunk has ``records`` — ``(kind, key, value, event_time_ms)`` — and ``rejects``; the
    sink must have ``send_encoded(kind, key, value)`` (:class:`~producers.sinks.KafkaSink`).
    Rejects of a chunk are written before its records are sent.
    """
    summary = Summary(source=source, rejects_path=str(rejects.path) if rejects else None)
    bucket = TokenBucket(rate) if rate else None
    pacer = EventTimePacer(time_scale) if time_scale else None
    bar = progress_bar(f"producing {source}", total, progress)
    started = time.perf_counter()
    sent = rejected = unsent = 0
    send = sink.send_encoded
    context: AbstractContextManager[Any] = bar if bar is not None else nullcontext()
    try:
        with context:
            for chunk in chunks:
                for reject in chunk.rejects:
                    if reject.bad:
                        rejected += 1
                    else:
                        unsent += 1
                    if rejects is not None:
                        rejects.write(reject)
                if pacer is None and bucket is None:
                    for kind, key, value, _ in chunk.records:
                        send(kind, key, value)
                else:
                    for kind, key, value, event_time_ms in chunk.records:
                        if pacer is not None:
                            pacer.wait_for(event_time_ms)
                        if bucket is not None:
                            bucket.acquire()
                        send(kind, key, value)
                sent += len(chunk.records)
                if bar is not None:
                    bar.update(bar.task_ids[0], completed=sent + rejected + unsent)
    finally:
        result = sink.close()
        if rejects is not None:
            rejects.close()
    return _summarise(summary, result, started, sent=sent, rejected=rejected, unsent=unsent)
