"""``segstream report``: gather the state, the model and the segment changes, write the report.

Inputs come from Redis (or ``--state-file``), the model directory and the segment-changes topic;
the output is ``report.html`` plus CSV tables in ``--out``. Without a trained model or without
segment changes the report is still written, with notes saying what is missing.
"""

from __future__ import annotations

from datetime import UTC, datetime

import click
import pandas as pd

from segstream.errors import ConfigError
from segstream.options import env_option, settings_options
from segstream.redact import redact
from segstream.security import kafka_options
from segstream.settings import Settings
from worker.preflight import checks_access

__all__ = ["parse_as_of", "report"]


def parse_as_of(text: str) -> datetime:
    """An ISO 8601 time (``Z`` or an offset; naive means UTC), or ``now``/empty for now."""
    if text.strip().lower() in ("", "now"):
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(
            f"--as-of {text!r} is not an ISO 8601 time (e.g. 2026-06-30T12:00:00Z)"
        ) from exc
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@click.command("report")
@settings_options
@env_option("report_dir", "--out", help="Directory the report and its CSV tables are written to.")
@env_option("report_as_of", "--as-of", help="Report time, ISO 8601 (default: now).")
@env_option(
    "report_state_file",
    "--state-file",
    help="Read customer state from this export (CSV/JSON/JSONL) instead of Redis.",
)
@env_option(
    "report_model",
    "--model",
    help="Model artifact: 'current', a version, a path to an artifact JSON, or 'none'.",
)
@env_option("report_currency", "--currency", help="Currency label of revenue figures.")
@click.option(
    "--changes/--no-changes",
    "read_topic",
    default=True,
    show_default=True,
    envvar="SEGSTREAM_REPORT_CHANGES",
    show_envvar=True,
    help="Read the segment-changes topic (--no-changes: skip the movement section's data).",
)
@checks_access(kafka=True, redis=True)
def report(
    settings: Settings,
    report_dir: str,
    report_as_of: str,
    report_state_file: str,
    report_model: str,
    report_currency: str,
    read_topic: bool,
) -> None:
    """Write the analyst report (HTML with embedded figures + CSV tables)."""
    from analytics.report.builder import build_report
    from analytics.report.errors import ReportInputError
    from analytics.report.sources import (
        assign_segments,
        load_model,
        load_model_redis,
        read_changes,
        read_state_file,
        read_state_redis,
    )

    as_of = parse_as_of(report_as_of)
    sources: dict[str, str] = {}
    if report_state_file:
        state = read_state_file(report_state_file)
        sources["state"] = f"{len(state):,} customers from {report_state_file}"
    else:
        state = read_state_redis(settings.redis, settings.redis.prefix, as_of)
        sources["state"] = (
            f"{len(state):,} customers from Redis {redact(settings.redis.url)} "
            f"(prefix {settings.redis.prefix})"
        )
    click.echo(f"state: {sources['state']}")
    model, model_source = None, ""
    if (
        not report_state_file
        and report_model.lower() != "none"
        and not report_model.endswith(".json")
    ):
        # The model the worker scores with (and that labelled this state), if published.
        model, model_source = load_model_redis(settings.redis, settings.redis.prefix, report_model)
    if model is None:
        model, file_source = load_model(settings.model_dir, report_model)
        model_source = f"{model_source}; {file_source}" if model_source else file_source
    sources["model"] = model_source
    click.echo(f"model: {model_source}")
    labelled = "segment" in state and state["segment"].notna().any()
    if model is not None and not labelled and len(state):
        try:
            state = state.assign(segment=assign_segments(state, model, as_of))
            sources["segments"] = "the state carries none: assigned by the model's nearest centroid"
        except ReportInputError as exc:
            sources["segments"] = f"the state carries none and none could be assigned: {exc}"
        click.echo(f"segments: {sources['segments']}")
    changes = None
    if read_topic:
        read = read_changes(
            settings.kafka.bootstrap,
            settings.kafka.segment_changes_topic,
            client=kafka_options(settings.kafka),
        )
        changes = read.frame
        sources["segment changes"] = read.describe(settings.kafka.segment_changes_topic)
    else:
        sources["segment changes"] = "not read (--no-changes)"
    click.echo(f"segment changes: {sources['segment changes']}")
    impact = None
    if not report_state_file:  # campaign impact: assignments (Redis) + orders (topic)
        from analytics.impact_sources import gather

        empty = pd.DataFrame(columns=["customer_id", "new_segment", "processing_time"])
        impact = gather(settings, changes=changes if changes is not None else empty)
        for what in ("assignments", "orders"):
            if what in impact.sources:
                sources[f"campaign {what}"] = impact.sources[what]
                click.echo(f"campaign {what}: {impact.sources[what]}")
    path = build_report(
        state, model, changes, report_dir, as_of, currency=report_currency, sources=sources,
        impact=impact,
    )  # fmt: skip
    click.echo(f"report written: {path.resolve()}")
    click.echo(f"tables (CSV) beside it in {path.parent.resolve()}")
