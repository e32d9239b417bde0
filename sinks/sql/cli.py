"""``segstream sink sql``: keep PostgreSQL or MySQL/MariaDB tables in step with segment-changes."""

from __future__ import annotations

import asyncio
import logging

import click

from segstream.errors import ConfigError
from segstream.options import env_option, settings_options
from segstream.redact import redact
from segstream.settings import Settings
from sinks.sql.connect import open_database
from sinks.sql.database import Database
from sinks.sql.schema import dialect_of
from sinks.sql.service import SinkStats, SqlSink, run_sink
from worker.preflight import checks_access


async def _run(
    settings: Settings, database: Database, once: bool
) -> tuple[tuple[int, int], SinkStats]:
    # Built inside the loop: aiokafka clients bind to the running loop when created.
    return await run_sink(SqlSink(settings, database, once=once))


@click.group("sink")
def sink() -> None:
    """Keep other systems in step with segstream (docs/bi.md)."""


@sink.command("sql")
@env_option(
    "sink_sql_url",
    "--url",
    default=None,
    show_default=False,
    help="postgresql://user:password@host:5432/db or mysql://user:password@host:3306/db "
    "(MariaDB too; the password is never printed).",
)
@env_option(
    "sink_sql_batch_records",
    "--batch-records",
    type=int,
    default=None,
    help="Records per transaction. [default: 20000]",
)
@click.option(
    "--once",
    is_flag=True,
    help="Drain up to the end offsets seen at start, then exit (backfills, scheduled jobs).",
)
@settings_options
@checks_access(kafka=True)
def sql(
    sink_sql_url: str | None, sink_sql_batch_records: int | None, once: bool, settings: Settings
) -> None:
    """Keep customer_segment, segment_history and segment_profile tables in step, exactly once.

    Consumes the segment-changes topic (its own consumer; the offsets live in the database,
    written in the same transaction as the rows), creates and migrates its own schema, deletes
    an erased customer's rows on its tombstone, and dead-letters a record it cannot take.
    """
    settings = settings.with_(
        sink_sql_url=sink_sql_url, sink_sql_batch_records=sink_sql_batch_records
    )
    url = settings.sink.sql_url
    if not url:
        raise ConfigError("no database: give --url or set SEGSTREAM_SINK_SQL_URL")
    dialect_of(url)  # a wrong scheme is one line, before anything starts
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    database = open_database(url)
    click.echo(
        f"sink: {settings.kafka.segment_changes_topic} -> {redact(url)}"
        + (" (once: up to the current end offsets)" if once else ""),
        err=True,
    )
    (before, after), stats = asyncio.run(_run(settings, database, once))
    schema = f"schema v{after}" + (f" (upgraded from v{before})" if before != after else "")
    click.echo(
        f"sink: {schema}; {stats.changes} change(s), {stats.tombstones} tombstone(s), "
        f"{stats.dead_letters} dead letter(s), {stats.profiles} profile row(s) in "
        f"{stats.batches} batch(es)",
        err=True,
    )
