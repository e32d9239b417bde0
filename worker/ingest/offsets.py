"""Booking applied offsets per partition and committing them, off the apply path.

A batch's offsets are booked here once it is in Redis (never before: a commit must not run ahead
of the state it stands for). The service's committer task commits whatever was booked meanwhile
in one request, so the next batch's apply never waits for the broker's answer. A failed commit
loses nothing: the state is in Redis with its fence, and the next commit covers those offsets.
Only partitions still assigned are committed; a revoked one is the new owner's to commit.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from worker.core.batch import Batch
from worker.ingest.batch import offsets_to_commit
from worker.ingest.metrics import IngestMetrics


class Committer:
    """Applied, not yet committed offsets: (topic, partition) -> highest applied offset."""

    def __init__(self, metrics: IngestMetrics) -> None:
        self.metrics = metrics
        self._uncommitted: dict[tuple[str, int], int] = {}
        self._booked = asyncio.Event()

    def book(self, batch: Batch) -> None:
        """``batch`` is in Redis: its offsets are to be committed."""
        uncommitted = self._uncommitted
        for tp, offset in batch.high_offsets.items():  # every batch built here has them all
            if offset > uncommitted.get(tp, -1):
                uncommitted[tp] = offset
        self._booked.set()

    async def booked(self) -> None:
        """Return once something was booked since the previous call returned."""
        await self._booked.wait()
        self._booked.clear()

    async def commit(self, consumer: AIOKafkaConsumer) -> None:
        """Commit everything booked so far for the partitions ``consumer`` is assigned."""
        taken, self._uncommitted = self._uncommitted, {}
        assigned = [(tp.topic, tp.partition) for tp in consumer.assignment()]
        offsets = offsets_to_commit(taken, assigned)
        if not offsets:
            return
        try:
            await consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})
            self.metrics.commits += 1
        except (KafkaError, AssertionError) as exc:
            # The state is already in Redis with its fence; a later commit covers these offsets.
            self.metrics.commit_failures += 1
            self.metrics.note_error(f"commit failed (next commit covers it): {exc!r}")
