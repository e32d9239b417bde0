"""Read, validate and encode a file in a child process; the parent only sends.

kafka-python's ``send`` costs the sending process about as much CPU as parsing, validating and
encoding a CSV row does, and both need the GIL. Moving the reading to a second process lets the
two overlap (``benchmarks/bench_producer.py`` measures the difference). The child runs
:class:`~producers.file_source.FileSource` exactly as the in-process path does and ships chunks of
``(kind, key, value, event_time_ms)`` plus the rejects through a bounded queue, so a fast reader
never runs far ahead of a slow broker.

The child is started with ``spawn`` (never ``fork``): the parent already runs the Kafka client's
sender thread, and forking a process with threads can copy a held lock.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from producers.errors import SourceError
from producers.file_source import FileSource
from producers.readers import ReadStats, Reject
from schemas import encode

#: Records per message from the child: large enough that the pickling is negligible.
CHUNK = 4000
#: Chunks in flight between the processes (the memory bound).
QUEUE_CHUNKS = 16
#: A child that sends nothing for this long is taken for dead.
CHILD_TIMEOUT_S = 120.0

Record = tuple[str, bytes, bytes, int]


@dataclass
class Chunk:
    records: list[Record] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


def _child(path: str, fmt: str, options: dict[str, Any], out: Any) -> None:
    try:
        source = FileSource(path, fmt, **options)
        chunk = Chunk()
        append = chunk.records.append
        for item in source:
            if isinstance(item, Reject):
                chunk.rejects.append(item)
                continue
            key = item.customer_id or getattr(item, "anonymous_id", None) or ""
            append((item.kind, key.encode(), encode(item), item.event_time_ms))
            if len(chunk.records) >= CHUNK:
                out.put(chunk)
                chunk = Chunk()
                append = chunk.records.append
        out.put(chunk)
        out.put(("done", source.stats))
    except Exception as exc:  # reported to the parent, which raises it there
        out.put(("error", f"{type(exc).__name__}: {exc}", isinstance(exc, SourceError)))


class ParallelFileSource:
    """Chunks of encoded records from a :class:`FileSource` running in a child process."""

    def __init__(self, path: str | Path, fmt: str, **options: Any) -> None:
        # fail fast in the parent for a missing file or an unknown format
        probe = FileSource(path, fmt, **options)
        self.path, self.format, self.options = str(path), fmt, options
        self.name = probe.name
        self.stats = ReadStats()
        self._probe = probe

    def count_rows(self) -> int:
        return self._probe.count_rows()

    def chunks(self) -> Iterator[Chunk]:
        ctx = multiprocessing.get_context("spawn")
        out: Any = ctx.Queue(maxsize=QUEUE_CHUNKS)
        child = ctx.Process(
            target=_child, args=(self.path, self.format, dict(self.options), out), daemon=True
        )
        child.start()
        try:
            while True:
                try:
                    message = out.get(timeout=CHILD_TIMEOUT_S)
                except queue_module.Empty:
                    alive = child.is_alive()
                    raise SourceError(
                        f"{self.path}: the reader process {'stalled' if alive else 'died'} "
                        f"(exit code {child.exitcode})"
                    ) from None
                if isinstance(message, Chunk):
                    yield message
                    continue
                if message[0] == "done":
                    self.stats = message[1]
                    return
                raise SourceError(f"{self.path}: {message[1]}")
        finally:
            if child.is_alive():
                child.terminate()
            child.join(timeout=10)
            out.close()


def options_of(
    column_map: Mapping[str, str] | None,
    source_name: str | None,
    currency: str | None,
    day_first: bool,
) -> dict[str, Any]:
    return {
        "column_map": dict(column_map or {}),
        "source_name": source_name,
        "currency": currency,
        "day_first": day_first,
    }
