"""``segstream produce synthetic`` and ``segstream replay`` (a file or a topic range).

Every flag falls back to an environment variable shown in ``--help``: the shared ones come from
:func:`segstream.options.settings_options`, the producer's own are named ``SEGSTREAM_PRODUCER_*``,
``SEGSTREAM_SYNTHETIC_*`` and ``SEGSTREAM_REPLAY_*``.

Exit status: 0 when every event was confirmed by the broker (rejected rows do not fail a run:
they are in the summary and the rejects file), 1 when any send failed or the run could not start.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from producers.demographics import merged, profiles
from producers.errors import DeliveryError
from producers.file_source import FORMATS, FileSource
from producers.parallel import ParallelFileSource, options_of
from producers.readers import parse_map, parse_ts
from producers.run import RejectsWriter, Summary, pump, pump_chunks
from producers.sinks import EventSink, FileSink, KafkaSink, KafkaSinkConfig
from producers.synthetic import SyntheticConfig, default_start, generate
from segstream.options import settings_options, var_option
from segstream.security import kafka_options
from segstream.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def _opt(var: str, *flags: str, **kwargs: Any) -> Callable[[F], F]:
    """:func:`segstream.options.var_option` for ``SEGSTREAM_<var>``."""
    return var_option(f"SEGSTREAM_{var}", *flags, **kwargs)


def _parse_when(value: str | None, flag: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_ts(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=flag) from None


def producer_options(func: F) -> F:
    """Rate and Kafka batching options shared by every producing command."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("rate") is not None and kwargs.get("max_rate"):
            raise click.UsageError("give --rate or --max-rate, not both")
        if kwargs.get("max_rate"):
            kwargs["rate"] = None
        kwargs.pop("max_rate", None)
        return func(*args, **kwargs)

    options = [
        _opt("PRODUCER_RATE", "--rate", type=float, default=None,
             help="Events per second (token bucket). Default: as fast as possible."),
        _opt("PRODUCER_MAX_RATE", "--max-rate", is_flag=True, default=False,
             help="Send unthrottled (the default; overrides a --rate from the environment)."),
        _opt("PRODUCER_COMPRESSION", "--compression", default="auto", show_default=True,
             type=click.Choice(["auto", "lz4", "gzip", "none"]),
             help="Batch compression; auto = lz4 when installed, else gzip."),
        _opt("PRODUCER_LINGER_MS", "--linger-ms", type=int, default=20, show_default=True,
             help="How long the client waits to fill a batch."),
        _opt("PRODUCER_BATCH_SIZE", "--batch-size", type=int, default=512 * 1024,
             show_default=True, help="Bytes per partition batch."),
        _opt("PRODUCER_DELIVERY_TIMEOUT_MS", "--delivery-timeout-ms", type=int, default=120_000,
             show_default=True, help="A record not acknowledged within this counts as failed."),
        _opt("PRODUCER_PROGRESS", "--progress/--no-progress", default=None,
             help="Progress bar (default: when stderr is a terminal)."),
    ]  # fmt: skip
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]


def _kafka_sink(settings: Settings, kw: dict[str, Any]) -> KafkaSink:
    """The producer to Kafka, once a login as every client will make has been accepted."""
    from worker.preflight import preflight

    preflight(settings.kafka, None)
    return KafkaSink(
        KafkaSinkConfig(
            bootstrap=settings.kafka.bootstrap,
            orders_topic=settings.kafka.orders_topic,
            clicks_topic=settings.kafka.clicks_topic,
            profiles_topic=settings.kafka.profiles_topic,
            compression=None if kw["compression"] == "auto" else kw["compression"],
            linger_ms=kw["linger_ms"],
            batch_size=kw["batch_size"],
            delivery_timeout_ms=kw["delivery_timeout_ms"],
            kafka=settings.kafka,
        )
    )


def _finish(summary: Summary) -> None:
    for line in summary.lines():
        click.echo(line)
    if summary.failed or summary.errors:
        raise DeliveryError(
            f"{summary.failed} of {summary.events_sent} events were not confirmed by the broker"
            if summary.failed
            else summary.errors[0]
        )


@click.group("produce")
def produce() -> None:
    """Generate events (synthetic customers with known personas) to Kafka or files."""


@produce.command("synthetic")
@settings_options
@_opt(
    "SYNTHETIC_CUSTOMERS",
    "--customers",
    type=int,
    default=1000,
    show_default=True,
    help="Number of customers.",
)
@_opt(
    "SYNTHETIC_DAYS",
    "--days",
    type=int,
    default=180,
    show_default=True,
    help="Length of the generated history in days.",
)
@_opt(
    "SYNTHETIC_SEED",
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Random seed: same seed and start, same bytes.",
)
@_opt(
    "SYNTHETIC_START",
    "--start",
    default=None,
    help="First day (ISO 8601, UTC). Default: today's midnight minus --days.",
)
@_opt(
    "SYNTHETIC_OUT_DIR",
    "--out-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Write files here instead of sending to Kafka.",
)
@_opt(
    "SYNTHETIC_FILE_FORMAT",
    "--file-format",
    type=click.Choice(["csv", "jsonl"]),
    default="csv",
    show_default=True,
    help="File format with --out-dir.",
)
@_opt(
    "SYNTHETIC_TO_KAFKA",
    "--to-kafka",
    is_flag=True,
    default=False,
    help="Send to the orders/clicks topics (the default without --out-dir).",
)
@_opt(
    "SYNTHETIC_LABELS",
    "--labels",
    type=click.Path(dir_okay=False),
    default=None,
    help="Ground-truth labels CSV (default: labels.csv in --out-dir, else not written).",
)
@_opt(
    "SYNTHETIC_TIME_SCALE",
    "--time-scale",
    type=float,
    default=None,
    help="Follow event-time gaps, sped up this many times (60 = an hour a minute).",
)
@producer_options
def synthetic(settings: Settings, customers: int, days: int, seed: int, start: str | None,
              out_dir: str | None, file_format: str, to_kafka: bool, labels: str | None,
              time_scale: float | None, rate: float | None, **kw: Any) -> None:  # fmt: skip
    """Synthetic customers with personas (ground truth in a labels file), in event-time order."""
    if out_dir and to_kafka:
        raise click.UsageError("give --to-kafka or --out-dir, not both")
    first = _parse_when(start, "--start") or default_start(days)
    try:
        config = SyntheticConfig(customers=customers, days=days, seed=seed, start=first)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    data = generate(config)
    labels_path = Path(labels) if labels else (Path(out_dir) / "labels.csv" if out_dir else None)
    if labels_path is not None:
        labels_path.parent.mkdir(parents=True, exist_ok=True)
        data.write_labels(labels_path)
    sink: EventSink = FileSink(out_dir, file_format) if out_dir else _kafka_sink(settings, kw)
    people = profiles(data)  # one per customer at first appearance, some updates later
    summary = pump(
        merged(data, people), sink,
        source=f"synthetic seed={seed} customers={customers} days={days}", rate=rate,
        time_scale=time_scale, total=len(data) + len(people), progress=kw["progress"],
    )  # fmt: skip
    summary.notes["start"] = config.start.isoformat()
    summary.notes["orders"] = data.n_orders
    summary.notes["clicks"] = data.n_clicks
    summary.notes["profiles"] = len(people)
    if labels_path is not None:
        summary.notes["labels"] = str(labels_path)
    if out_dir:
        summary.notes["written to"] = str(out_dir)
    _finish(summary)


@click.command("replay")
@settings_options
@_opt(
    "REPLAY_FILE",
    "--file",
    "file",
    type=click.Path(dir_okay=False),
    default=None,
    help="File to replay.",
)
@_opt(
    "REPLAY_FORMAT",
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="orders-csv",
    show_default=True,
    help="Format of --file.",
)
@_opt(
    "REPLAY_MAP",
    "--map",
    "mapping",
    multiple=True,
    help="COLUMN=SOURCE: read COLUMN from the file's SOURCE column (repeatable).",
)
@_opt(
    "REPLAY_REJECTS",
    "--rejects",
    type=click.Path(dir_okay=False),
    default=None,
    help="Rejects CSV (default: <file>.rejects.csv beside the file).",
)
@_opt(
    "REPLAY_SOURCE_NAME",
    "--source-name",
    default=None,
    help="Namespace of the derived event ids (default: the file's name).",
)
@_opt(
    "REPLAY_CURRENCY",
    "--currency",
    default=None,
    help="Currency when the file has none (orders-csv: EUR, online-retail: GBP).",
)
@_opt(
    "REPLAY_DAY_FIRST",
    "--day-first",
    is_flag=True,
    default=False,
    help="online-retail dates are day/month/year (the UCI file is month/day/year).",
)
@_opt(
    "REPLAY_TIME_SCALE",
    "--time-scale",
    type=float,
    default=None,
    help="Follow event-time gaps, sped up this many times (60 = an hour a minute).",
)
@_opt(
    "REPLAY_READER_PROCESS",
    "--reader-process/--no-reader-process",
    default=True,
    show_default=True,
    help="Parse and encode the file in a second process while this one sends.",
)
@_opt("REPLAY_FROM_TOPIC", "--from-topic", default=None, help="Replay a range of this topic.")
@_opt("REPLAY_TO_TOPIC", "--to-topic", default=None, help="Topic receiving the replayed range.")
@_opt(
    "REPLAY_START_OFFSET",
    "--start-offset",
    type=int,
    default=None,
    help="Topic replay from this offset on every partition.",
)
@_opt(
    "REPLAY_START_TIME",
    "--start-time",
    default=None,
    help="Topic replay from this broker timestamp (ISO 8601 or epoch seconds).",
)
@_opt(
    "REPLAY_END_TIME",
    "--end-time",
    default=None,
    help="Topic replay up to this broker timestamp, exclusive (default: the current end).",
)
@producer_options
def replay(settings: Settings, file: str | None, fmt: str, mapping: tuple[str, ...],
           rejects: str | None, source_name: str | None, currency: str | None, day_first: bool,
           time_scale: float | None, from_topic: str | None, to_topic: str | None,
           start_offset: int | None, start_time: str | None, end_time: str | None,
           rate: float | None, **kw: Any) -> None:  # fmt: skip
    """Replay a file (orders/clicks/customers CSV, UCI Online Retail, JSONL) or a topic range.

    File rows become events with deterministic ids; bad rows go to the rejects file with their
    line number and reason. Orders go to the orders topic, clicks to the clicks topic, profiles
    (customers-csv, and one per online-retail customer) to the profiles topic.
    """
    if (file is None) == (from_topic is None):
        raise click.UsageError("give --file or --from-topic (exactly one)")
    if from_topic is not None:
        from producers.topic_replay import TopicRange, replay_topic

        if not to_topic:
            raise click.UsageError("--from-topic needs --to-topic")
        if rate is not None or time_scale is not None:
            raise click.UsageError("--rate and --time-scale apply to file replays only")
        rng = TopicRange(
            from_topic,
            start_offset=start_offset,
            start_time=_parse_when(start_time, "--start-time"),
            end_time=_parse_when(end_time, "--end-time"),
        )
        summary = replay_topic(
            settings.kafka.bootstrap, rng, to_topic, _kafka_sink(settings, kw),
            progress=kw["progress"], client=kafka_options(settings.kafka),
        )  # fmt: skip
        summary.notes["to topic"] = to_topic
        _finish(summary)
        return
    assert file is not None
    if to_topic or start_offset is not None or start_time or end_time:
        raise click.UsageError("--to-topic/--start-*/--end-time apply to --from-topic only")
    options = options_of(parse_map(mapping), source_name, currency, day_first)
    sends_profiles = fmt in ("customers-csv", "online-retail")
    if sends_profiles and not _topic_exists(settings, settings.kafka.profiles_topic):
        missing = f"the profiles topic {settings.kafka.profiles_topic!r} does not exist"
        if fmt == "customers-csv":
            raise DeliveryError(f"{missing}: create it or set SEGSTREAM_PROFILES_TOPIC")
        options["profiles"] = sends_profiles = False  # the orders still go
        click.echo(f"note: {missing}; online-retail profiles are not sent", err=True)
    rejects_path = Path(rejects) if rejects else Path(f"{file}.rejects.csv")
    if kw["reader_process"]:
        source: ParallelFileSource | FileSource = ParallelFileSource(file, fmt, **options)
    else:
        source = FileSource(file, fmt, **options)
    total = None if fmt == "online-retail" else source.count_rows()
    sink = _kafka_sink(settings, kw)
    run = dict(
        source=str(file), rate=rate, time_scale=time_scale,
        rejects=RejectsWriter(rejects_path), total=total, progress=kw["progress"],
    )  # fmt: skip
    if isinstance(source, ParallelFileSource):
        summary = pump_chunks(source.chunks(), sink, **run)
    else:
        summary = pump(source, sink, **run)
    summary.rows_read = source.stats.rows
    if fmt == "online-retail" and not sends_profiles:
        summary.notes["profiles"] = f"not sent ({settings.kafka.profiles_topic} does not exist)"
    _finish(summary)


def _topic_exists(settings: Settings, topic: str) -> bool:
    """Whether the brokers know ``topic`` (a send to an unknown one would wait for metadata
    until every record of the run expires, orders included)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap.split(","), **kafka_options(settings.kafka)
    )
    try:
        return topic in consumer.topics()
    finally:
        consumer.close()


__all__ = ["produce", "replay"]
