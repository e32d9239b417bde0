"""Where produced events go: Kafka (kafka-python, batched, delivery confirmed), files, memory.

Every sink takes ``send(event, key, value)`` where ``value`` is the event's encoded bytes and
``key`` the customer id, and ``close()`` returns a :class:`SinkResult`. ``close`` is where Kafka
delivery is confirmed: it flushes and waits, and a record the broker did not acknowledge (after
the client's own retries) is counted in ``failed`` with its error, never silently lost.
"""

from __future__ import annotations

import csv
import importlib.util
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from producers.errors import DeliveryError
from producers.partitioning import MemoKeyPartitioner
from schemas import ClickEvent, CustomerProfile, OrderEvent
from segstream.security import kafka_options
from segstream.settings import KafkaSettings

Event = OrderEvent | ClickEvent | CustomerProfile
#: Keep at most this many errors' texts (the count is always exact).
MAX_ERRORS_KEPT = 10


@dataclass
class SinkResult:
    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def delivered(self) -> int:
        return self.sent - self.failed


class EventSink(Protocol):
    def send(self, event: Event, key: bytes, value: bytes) -> None: ...

    def close(self) -> SinkResult: ...


class MemorySink:
    """Keeps ``(kind, key, value)`` in a list: for unit tests and in-process consumers."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes]] = []

    def send(self, event: Event, key: bytes, value: bytes) -> None:
        self.records.append((event.kind, key, value))

    def close(self) -> SinkResult:
        return SinkResult(sent=len(self.records))


def best_compression() -> str | None:
    """``lz4`` when its module is installed (the local broker accepts it), else ``gzip``."""
    return "lz4" if importlib.util.find_spec("lz4") is not None else "gzip"


@dataclass(frozen=True)
class KafkaSinkConfig:
    bootstrap: str
    orders_topic: str
    clicks_topic: str
    #: Where customer profiles go (``segstream replay --format customers-csv``, personas).
    profiles_topic: str = "profiles"
    #: ``lz4``, ``gzip`` or ``none``; ``None`` picks :func:`best_compression`.
    compression: str | None = None
    linger_ms: int = 20
    batch_size: int = 512 * 1024
    #: After this long without an acknowledgement a record counts as failed.
    delivery_timeout_ms: int = 120_000
    #: Unconfirmed records allowed in flight before ``send`` waits (kafka-python 3 has no
    #: memory bound of its own, so without this a fast file could fill the RAM).
    max_in_flight_records: int = 200_000
    client_id: str = "segstream-producer"
    #: TLS/SASL of the brokers (settings, not options: the config crosses to a spawned child,
    #: and an SSL context cannot be pickled).
    kafka: KafkaSettings | None = None


class KafkaSink:
    """kafka-python producer with acks=all, batching and compression; confirms on close."""

    #: A checkpoint future every this many records bounds what is in flight.
    CHECKPOINT_EVERY = 10_000

    def __init__(self, config: KafkaSinkConfig, producer: Any | None = None) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        self.config = config
        compression = config.compression or best_compression()
        try:
            self._producer = producer or KafkaProducer(
                bootstrap_servers=config.bootstrap.split(","),
                client_id=config.client_id,
                acks="all",
                linger_ms=config.linger_ms,
                batch_size=config.batch_size,
                compression_type=None if compression == "none" else compression,
                delivery_timeout_ms=config.delivery_timeout_ms,
                # kafka-python requires delivery > linger + request timeout
                request_timeout_ms=max(
                    500, min(30_000, config.delivery_timeout_ms - config.linger_ms - 1)
                ),
                max_request_size=4 * 1024 * 1024,
                metrics_enabled=False,
                partitioner=MemoKeyPartitioner(),
                **(kafka_options(config.kafka) if config.kafka else {}),
            )
        except KafkaError as exc:
            raise DeliveryError(f"cannot connect to Kafka at {config.bootstrap}: {exc}") from exc
        self.compression = compression
        self._topics = {
            "order": config.orders_topic,
            "click": config.clicks_topic,
            "profile": config.profiles_topic,
        }
        self.result = SinkResult()
        self._checkpoints: deque[Any] = deque()
        self._max_checkpoints = max(1, config.max_in_flight_records // self.CHECKPOINT_EVERY)
        self._since_checkpoint = 0

    def _failed(self, exc: BaseException) -> None:
        self.result.failed += 1
        # one failed batch calls this once per record: keep each distinct text once
        text = (
            str(exc) if str(exc).startswith(type(exc).__name__) else f"{type(exc).__name__}: {exc}"
        )
        if len(self.result.errors) < MAX_ERRORS_KEPT and text not in self.result.errors:
            self.result.errors.append(text)

    def send(self, event: Event, key: bytes, value: bytes) -> None:
        self.send_raw(self._topics[event.kind], key, value)

    def send_encoded(self, kind: str, key: bytes, value: bytes) -> None:
        """Send an already encoded ``order`` or ``click`` (see :mod:`producers.parallel`)."""
        self.send_raw(self._topics[kind], key, value)

    def send_raw(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None
    ) -> None:
        """Send one record as is (topic replay uses this to keep keys and headers)."""
        self.result.sent += 1
        try:
            future = self._producer.send(topic, value=value, key=key, headers=headers)
        except Exception as exc:  # raised synchronously: too large, no metadata, closed
            self._failed(exc)
            return
        future.add_errback(self._failed)
        self._since_checkpoint += 1
        if self._since_checkpoint >= self.CHECKPOINT_EVERY:
            self._since_checkpoint = 0
            self._checkpoints.append(future)
            if len(self._checkpoints) > self._max_checkpoints:
                self._await(self._checkpoints.popleft())

    def _await(self, future: Any) -> None:
        # The errback has counted a failure already; here we only wait for it to settle.
        timeout_s = self.config.delivery_timeout_ms / 1000 + 5
        try:
            future.get(timeout=timeout_s)
        except Exception as exc:
            if not future.is_done:
                raise DeliveryError(
                    f"the broker at {self.config.bootstrap} acknowledged nothing for "
                    f"{timeout_s:.0f}s ({exc})"
                ) from exc

    def close(self) -> SinkResult:
        """Flush, wait for every acknowledgement, close; failures are in the result."""
        from kafka.errors import KafkaTimeoutError

        try:
            self._producer.flush(timeout=self.config.delivery_timeout_ms / 1000 + 5)
        except KafkaTimeoutError as exc:
            unconfirmed = self.result.sent - self.result.failed
            self.result.failed = self.result.sent
            self.result.errors.append(
                f"flush timed out: up to {unconfirmed} records unconfirmed ({exc})"
            )
        finally:
            self._producer.close(timeout=5)
        return self.result


class FileSink:
    """Writes orders and clicks to a directory as CSV (the replay formats) or JSONL.

    CSV: ``orders.csv`` in the generic ``orders-csv`` format (plus ``items`` and ``event_id``
    columns, so a replay keeps the ids) and ``clicks.csv`` in ``clicks-csv``. JSONL:
    ``orders.jsonl`` and ``clicks.jsonl``, one encoded event per line (lossless, line items kept).
    """

    def __init__(self, out_dir: str | Path, file_format: str = "csv") -> None:
        if file_format not in ("csv", "jsonl"):
            raise ValueError(f"file format must be csv or jsonl, got {file_format!r}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.format = file_format
        self.result = SinkResult()
        self._profiles = ProfileFile(self.out_dir, file_format)
        if file_format == "jsonl":
            self.paths = {k: self.out_dir / f"{k}s.jsonl" for k in ("order", "click")}
            self._bin = {k: p.open("wb") for k, p in self.paths.items()}
            return
        self.paths = {k: self.out_dir / f"{k}s.csv" for k in ("order", "click")}
        self._text = {k: p.open("w", newline="") for k, p in self.paths.items()}
        self._orders = csv.writer(self._text["order"])
        self._orders.writerow(
            ("customer_id", "order_id", "ts", "amount", "currency", "status", "items", "event_id")
        )
        self._clicks = csv.writer(self._text["click"])
        self._clicks.writerow(
            ("session_id", "ts", "type", "customer_id", "anonymous_id", "sku", "query", "event_id")
        )

    def send(self, event: Event, key: bytes, value: bytes) -> None:
        self.result.sent += 1
        if isinstance(event, CustomerProfile):
            self._profiles.send(event, value)
            return
        if self.format == "jsonl":
            out = self._bin[event.kind]
            out.write(value)
            out.write(b"\n")
            return
        ts = event.event_time.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if isinstance(event, OrderEvent):
            self._orders.writerow(
                (event.customer_id, event.order_id, ts, f"{event.total:.2f}", event.currency,
                 event.status, event.item_count, event.event_id)
            )  # fmt: skip
        else:
            self._clicks.writerow(
                (event.session_id, ts, event.type, event.customer_id or "",
                 event.anonymous_id or "", event.sku or "", event.query or "", event.event_id)
            )  # fmt: skip

    def close(self) -> SinkResult:
        self._profiles.close()
        handles: list[Any] = list(getattr(self, "_bin", {}).values())
        handles += list(getattr(self, "_text", {}).values())
        for handle in handles:
            handle.close()
        return self.result


class ProfileFile:
    """The profiles a :class:`FileSink` gets, in ``profiles.csv`` (the ``customers-csv`` replay
    format, ``null`` for a cleared attribute) or ``profiles.jsonl``; opened with the first one."""

    COLUMNS = ("customer_id", "event_time", "country", "region", "birth_year", "gender",
               "signup_channel", "loyalty_tier", "marketing_consent", "event_id")  # fmt: skip

    def __init__(self, out_dir: Path, file_format: str) -> None:
        self.path = out_dir / f"profiles.{file_format}"
        self.format = file_format
        self._out: Any = None
        self._writer: Any = None

    def send(self, profile: CustomerProfile, value: bytes) -> None:
        if self._out is None:
            if self.format == "jsonl":
                self._out = self.path.open("wb")
            else:
                self._out = self.path.open("w", newline="")
                self._writer = csv.writer(self._out)
                self._writer.writerow(self.COLUMNS)
        if self.format == "jsonl":
            self._out.write(value)
            self._out.write(b"\n")
            return
        changes = profile.changes()
        ts = profile.event_time.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        cells = {"customer_id": profile.customer_id, "event_time": ts,
                 "event_id": profile.event_id}  # fmt: skip
        for name, given in changes.items():
            if given is None:
                cells[name] = "null"
            else:
                cells[name] = str(given).lower() if isinstance(given, bool) else str(given)
        self._writer.writerow([cells.get(c, "") for c in self.COLUMNS])

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
