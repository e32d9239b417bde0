"""When the batch loop itself raises: retry from the batch, then set its records aside.

A failing apply is :mod:`.applier`'s to handle (outages waited out, poison isolated). This is the
case nothing there covers (docs/state.md, "When a batch fails"): the loop's own code raised (a
bug in this process, not a record and not Redis), while fetching, preparing or booking a batch.
Nobody knows which record is to blame, so the whole fetch is retried from its first record,
and after ``poison_retries`` failures in a row dead-lettered whole, so that no input can block a
partition for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from segstream.redact import redact
from worker.backoff import backoff
from worker.ingest.applier import BatchApplier
from worker.ingest.metrics import IngestMetrics
from worker.ingest.offsets import Committer
from worker.ingest.quarantine import dead_letter_fetched, describe_fetched

log = logging.getLogger(__name__)

Fetched = dict[TopicPartition, list[Any]]


class InflightFailed(Exception):
    """The in-flight batch's task raised; carries what was fetched for it, to fetch it again."""

    def __init__(self, error: Exception, fetched: Fetched) -> None:
        super().__init__(str(error))
        self.error, self.fetched = error, fetched


async def recover(
    exc: Exception,
    fetched: Fetched,
    attempt: int,
    *,
    consumer: AIOKafkaConsumer | None,
    applier: BatchApplier | None,
    committer: Committer,
    metrics: IngestMetrics,
    poison_retries: int,
) -> int:
    """The batch path raised (a bug, not a record): retry from the batch, then set it aside.

    ``fetched`` is the fetch the loop was handling (an :class:`InflightFailed` brings its own);
    ``attempt`` counts the failures in a row, this one included.

    1. the failure is counted, ``/health`` says ``retrying-batch`` with the batch's offsets and
       the error, and an ERROR line carries the traceback;
    2. after ``poison_retries`` failures in a row its records are dead-lettered with the error,
       counted, and the fence moved past them; returns 0 (the loop goes on);
    3. otherwise the consumer is sent back to the first record of each of its partitions,
       nothing of it is committed, and the loop pauses before it fetches again; returns
       ``attempt``.
    """
    if isinstance(exc, InflightFailed):
        fetched, exc = exc.fetched, exc.error
    where = describe_fetched(fetched)
    text = redact(f"{type(exc).__name__}: {exc}")
    metrics.batch_path_failures += 1
    metrics.set_state("retrying-batch", f"processing {where} failed: {text}")
    log.error(
        "processing %s failed (attempt %d): %s; retrying from its first record, nothing committed",
        where,
        attempt,
        text,
        exc_info=exc,
    )
    if poison_retries and attempt >= poison_retries and applier is not None and fetched:
        reason = f"the batch path failed {attempt} times with this record's batch: {text}"
        letters, dead = dead_letter_fetched(fetched, reason)
        await applier.send_dead_letters(letters)
        await applier.apply_record_free(dead)
        metrics.count_set_aside(len(letters))
        committer.book(dead)
        metrics.set_state("running", None)
        return 0
    if consumer is not None:
        for tp, records in fetched.items():
            with contextlib.suppress(Exception):  # revoked meanwhile: the new owner reads
                consumer.seek(tp, records[0].offset)
    await asyncio.sleep(backoff(attempt))
    return attempt
