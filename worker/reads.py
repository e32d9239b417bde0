"""``segstream customer`` and ``segstream export``: read customer state out of Redis.

Both derive recency and tenure from one as-of time (default: now), fixed when the command
starts so every row of an export is computed against the same instant. ``export`` streams: one
SCAN page and one pipelined HGETALL at a time, rows written as they arrive, never ``KEYS``.

An export row is the feature columns (:data:`worker.core.rfm.EXPORT_COLUMNS`, what training
reads) followed by the customer's segment (:data:`SEGMENT_COLUMNS`): the same HGETALL returns
both, so the segment costs no extra round trip. A customer never scored has empty cells there.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import click
import orjson

from segstream.errors import ConfigError
from segstream.options import settings_options
from segstream.redact import redact
from segstream.settings import Settings
from worker.core.rfm import EXPORT_COLUMNS, CustomerState, features
from worker.preflight import checks_access
from worker.state.errors import CustomerNotFound
from worker.state.reader import StateReader

AS_OF_ENV = "SEGSTREAM_AS_OF"
FORMAT_ENV = "SEGSTREAM_EXPORT_FORMAT"
OUT_ENV = "SEGSTREAM_EXPORT_OUT"

#: The segment columns after the feature columns: the segment name, the model version that
#: assigned it, and the per-customer sequence number of its segment changes (the ``segment_seq``
#: of the change events on segment-changes). Empty / ``null`` for a customer never scored.
SEGMENT_COLUMNS: tuple[str, ...] = ("segment", "model_version", "segment_seq")
#: Every column of an export row, in order.
COLUMNS: tuple[str, ...] = (*EXPORT_COLUMNS, *SEGMENT_COLUMNS)


def parse_as_of(text: str | None, now: datetime | None = None) -> datetime:
    """ISO 8601 (``2024-05-01``, ``2024-05-01T12:00:00Z``, ``...+02:00``) or ``now``/empty.

    A time without an offset is taken as UTC.
    """
    if text is None or text.strip().lower() in ("", "now"):
        return now or datetime.now(UTC)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ConfigError(
            f"--as-of {text!r} is not an ISO 8601 time (e.g. 2024-05-01T12:00Z)"
        ) from exc
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def rows(states: Iterable[CustomerState], as_of: datetime) -> Iterator[dict[str, object]]:
    """The export row of each state: its features as of ``as_of``, then its segment."""
    for state in states:
        row = features(state, as_of)
        row["segment"] = state.segment
        row["model_version"] = state.model_version
        row["segment_seq"] = state.segment_seq
        yield row


def _cell(value: object) -> object:
    return "" if value is None else value


def write_csv(records: Iterable[dict[str, object]], out: IO[str]) -> int:
    """Header, then one line per row; ``None`` is an empty cell. Returns the number of rows."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    n = 0
    for row in records:
        writer.writerow([_cell(row[c]) for c in COLUMNS])
        n += 1
    return n


def write_jsonl(records: Iterable[dict[str, object]], out: IO[str]) -> int:
    """One JSON object per line (``None`` is ``null``). Returns the number of rows."""
    n = 0
    for row in records:
        out.write(orjson.dumps(row).decode())
        out.write("\n")
        n += 1
    return n


WRITERS = {"csv": write_csv, "jsonl": write_jsonl}


@contextlib.contextmanager
def _open_out(path: str) -> Iterator[IO[str]]:
    """stdout for ``-``; else a temporary file beside ``path`` renamed into place on success."""
    if path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            yield fh
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


_AS_OF = click.option(
    "--as-of",
    "as_of",
    envvar=AS_OF_ENV,
    show_envvar=True,
    default=None,
    help="Time recency and tenure are computed at (ISO 8601, UTC if no offset). [default: now]",
)


@click.command("customer")
@click.argument("customer_id")
@click.option("--json", "as_json", is_flag=True, envvar="SEGSTREAM_JSON", show_envvar=True,
              help="Print one JSON object instead of a table.")  # fmt: skip
@click.option("--explain", "explain", is_flag=True, envvar="SEGSTREAM_EXPLAIN", show_envvar=True,
              help="Why it is in its segment (distances, margin; docs/scoring.md).")  # fmt: skip
@_AS_OF
@settings_options
@checks_access(redis=True)
def customer(
    customer_id: str, as_json: bool, explain: bool, as_of: str | None, settings: Settings
) -> None:
    """Print one customer's state (RFM, behaviour, segment) as of a time."""
    if explain:
        from worker.scoring.explain import explanation, render

        info = explanation(settings, customer_id, parse_as_of(as_of) if as_of else None)
        click.echo(orjson.dumps(info).decode() if as_json else render(info))
        return
    when = parse_as_of(as_of)
    with StateReader(settings.redis, settings.redis.prefix) as reader:
        state = reader.get(customer_id)
    if state is None:
        raise CustomerNotFound(
            f"no state for customer {customer_id!r} under prefix {settings.redis.prefix!r} "
            f"at {redact(settings.redis.url)}"
        )
    click.echo(render_customer(state, when, as_json))


def render_customer(state: CustomerState, as_of: datetime, as_json: bool) -> str:
    row = next(rows([state], as_of))
    row["as_of"] = as_of.isoformat(timespec="milliseconds")
    if as_json:
        return orjson.dumps(row).decode()
    buf = io.StringIO()
    width = max(len(k) for k in row)
    for key, value in row.items():
        shown = "-" if value is None else f"{value:.4f}" if isinstance(value, float) else value
        buf.write(f"{key:<{width}}  {shown}\n")
    return buf.getvalue().rstrip("\n")


@click.command("export")
@click.option("--format", "fmt", type=click.Choice(sorted(WRITERS)), default="csv",
              envvar=FORMAT_ENV, show_envvar=True, show_default=True,
              help="Output format.")  # fmt: skip
@_AS_OF
@click.option("--out", "out", default="-", envvar=OUT_ENV, show_envvar=True, show_default=True,
              help="File to write (replaced atomically when done); - is stdout.")  # fmt: skip
@settings_options
@checks_access(redis=True)
def export(fmt: str, as_of: str | None, out: str, settings: Settings) -> None:
    """Write every customer's state and segment as CSV or JSON lines, streamed by SCAN."""
    when = parse_as_of(as_of)
    with StateReader(settings.redis, settings.redis.prefix) as reader, _open_out(out) as fh:
        n = WRITERS[fmt](rows(reader.customers(), when), fh)
    where = "stdout" if out == "-" else out
    click.echo(f"exported {n} customers as of {when.isoformat()} to {where}", err=True)
