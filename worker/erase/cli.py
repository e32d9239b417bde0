"""``segstream forget ID... [--file F]``: forget customers now (GDPR erasure).

Per customer, one atomic Redis script (every key of theirs, the shared indexes, unpublished
segment changes, a suppression entry that keeps a replay of their old events from recreating
them for ``--suppress-days``), then a tombstone (key = id, null value) on segment-changes. The
same as an erase request on the erase-requests topic, done by this process instead of a worker
(docs/forget.md). Idempotent: forgetting a customer twice is harmless.

The output counts customers and never names one (ids are logged at DEBUG only).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import click

from segstream.errors import ConfigError, SegstreamError
from segstream.options import env_option, settings_options
from segstream.redact import redact
from segstream.settings import Settings
from worker.erase.eraser import Eraser
from worker.erase.metrics import EraseMetrics
from worker.erase.store import ForgetStore
from worker.erase.tombstones import TombstonePublisher
from worker.preflight import checks_access

#: The longest customer id the event contracts accept (``schemas.events.Id``).
MAX_ID_CHARS = 128


def read_ids(arguments: Sequence[str], lines: Iterable[str] = ()) -> list[str]:
    """The ids to forget, in order, each once: the arguments, then one id per line of a file
    (blank lines and lines starting with ``#`` skipped; surrounding spaces stripped).

    An id that the event contracts would not accept (empty, or over 128 characters) is a
    :class:`ConfigError` naming its position, not its text.
    """
    out: dict[str, None] = {}
    given = [(f"argument {i}", a) for i, a in enumerate(arguments, start=1)]
    given += [(f"line {i} of --file", s) for i, s in enumerate(lines, start=1)]
    for where, raw in given:
        text = raw.strip()
        if where.startswith("line") and (not text or text.startswith("#")):
            continue
        if not text or len(text) > MAX_ID_CHARS:
            raise ConfigError(f"{where}: a customer id is 1 to {MAX_ID_CHARS} characters")
        out.setdefault(text, None)
    return list(out)


async def forget_all(settings: Settings, customer_ids: Sequence[str]) -> EraseMetrics:
    """Forget each customer (Redis, then its tombstone); the counts of what was done."""
    metrics = EraseMetrics()
    store = ForgetStore(settings.redis, settings.redis.prefix, settings.ingest.erase_suppress_days)
    tombstones = TombstonePublisher(settings.kafka, client_id="segstream-forget")
    eraser = Eraser(store, tombstones, metrics)
    try:
        await tombstones.start()
        for cid in customer_ids:
            await eraser.erase(cid)
    finally:
        await tombstones.stop()
        await store.close()
    return metrics


@click.command("forget")
@click.argument("customer_ids", nargs=-1)
@click.option(
    "--file",
    "id_file",
    type=click.Path(dir_okay=False, allow_dash=True),
    default=None,
    help="A file of customer ids, one per line ('-': standard input).",
)
@env_option(
    "erase_suppress_days",
    "--suppress-days",
    type=float,
    help="Days a forgotten customer's old events are dropped if replayed (docs/forget.md).",
)
@settings_options
@checks_access(kafka=True, redis=True)
def forget(
    customer_ids: tuple[str, ...],
    id_file: str | None,
    erase_suppress_days: float,
    settings: Settings,
) -> None:
    """Forget customers: delete everything segstream keeps about them, publish tombstones."""
    lines: list[str] = []
    if id_file == "-":
        lines = sys.stdin.read().splitlines()
    elif id_file is not None:
        try:
            lines = Path(id_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--file {id_file}: cannot read it ({exc})") from exc
    ids = read_ids(customer_ids, lines)
    if not ids:
        raise ConfigError("no customer id given (arguments or --file)")
    settings = settings.with_(erase_suppress_days=erase_suppress_days)
    try:
        metrics = asyncio.run(forget_all(settings, ids))
    except SegstreamError:
        raise
    except Exception as exc:  # a broker error: one line, no traceback, no secret
        raise SegstreamError(
            redact(f"forget failed: {type(exc).__name__}: {exc}").replace("\n", " ")
        ) from exc
    click.echo(
        f"forgot {len(ids)} customer(s): {metrics.forgotten} had data, {metrics.absent} had none; "
        f"{metrics.tombstones} tombstone(s) published to {settings.kafka.segment_changes_topic}; "
        f"their events up to now are dropped for {erase_suppress_days:g} days"
    )
