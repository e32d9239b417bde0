"""The campaign consumer: assigns an arm to every customer entering a campaign's segment.

A :class:`~worker.side_consumer.SideConsumer` beside ingestion (like the erase-requests
consumer), reading the segment-changes topic in its own consumer group
(``<group_id>-campaigns``). Per batch:

1. the registry (``{prefix}:campaigns``, one HGETALL: a new campaign is seen at the next batch);
2. each record: a tombstone (a forgotten customer) is skipped; a record that is not a
   ``SegmentChange`` is dead-lettered with its reason; a change whose ``new_segment`` is a
   running campaign's segment at its ``processing_time`` is a candidate, assigned at that time;
3. the candidates are recorded once each (``assign.lua``: the first assignment wins, a forgotten
   customer's replayed change assigns nothing), the records not yet published are published to
   ``campaign-assignments`` and acknowledged, then marked published;
4. the offsets are committed.

Exactly once in Redis (HSET only when absent, the arm a pure function); at least once on the
topic, with a stable ``assignment_id`` (a crash between the broker's acknowledgement and the
mark republishes the same record). A replay of the topic (a reset group) finds every assignment
recorded and published: nothing changes, nothing is sent. Failures: an outage is waited out
with backoff, nothing committed; anything else is retried ``poison_retries`` times, then the
batch's records are handled one by one and a record that still fails is dead-lettered with the
error. No line at INFO or above names a customer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, TypeAlias

from aiokafka import ConsumerRecord

from schemas import SchemaError, SegmentChange, decode
from segstream.settings import Settings
from worker.campaigns.metrics import CampaignMetrics
from worker.campaigns.model import Assignment, Campaign
from worker.campaigns.publisher import AssignmentPublisher, record_of
from worker.campaigns.registry import AsyncCampaignRegistry
from worker.campaigns.store import AssignmentStore, Candidate
from worker.connect import async_redis, keyspace
from worker.erase.failures import is_outage
from worker.side_consumer import Fetched, SideConsumer

log = logging.getLogger(__name__)

__all__ = ["CampaignService", "candidates_of"]

Record: TypeAlias = "ConsumerRecord[Any, Any]"


def candidates_of(
    records: Sequence[Record], campaigns: Any
) -> tuple[list[tuple[Candidate, Record]], list[tuple[Record, SchemaError]]]:
    """The assignments a batch of segment-change records asks for, and its bad records.

    One candidate per (campaign, customer): the earliest entry in the batch.
    """
    out: dict[tuple[str, str], tuple[Candidate, Record]] = {}
    bad: list[tuple[Record, SchemaError]] = []
    for record in records:
        if record.value is None:
            continue  # a tombstone: the customer was forgotten
        try:
            change = decode(SegmentChange, record.value)
        except SchemaError as exc:
            bad.append((record, exc))
            continue
        at_ms = int(change.processing_time.timestamp() * 1000)
        for campaign in campaigns.entering(change.new_segment, at_ms):
            key = (campaign.name, change.customer_id)
            if key not in out or at_ms < out[key][0][2]:
                out[key] = ((campaign, change.customer_id, at_ms), record)
    return list(out.values()), bad


class CampaignService(SideConsumer):
    """Consumes segment changes and assigns campaign arms (see the module docstring)."""

    part = "campaigns"
    noun = "segment changes"
    fetch_max_records = 2000
    metrics: CampaignMetrics

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self._registry: AsyncCampaignRegistry | None = None
        self._store: AssignmentStore | None = None
        self._publisher: AssignmentPublisher | None = None
        topic = settings.kafka.segment_changes_topic
        super().__init__(settings, topic, CampaignMetrics(), **kwargs)

    async def _open(self) -> None:
        s = self.settings
        redis = async_redis(s.redis)
        self._registry = AsyncCampaignRegistry(redis, s.redis.prefix)
        self._store = AssignmentStore(redis, keyspace(s.redis, s.redis.prefix))
        self._publisher = AssignmentPublisher(
            s.kafka, s.kafka.campaign_assignments_topic, client_id=f"segstream-{self.group_id}"
        )
        self._closers += [self._publisher.stop, redis.aclose]

    async def handle(self, fetched: Fetched) -> None:
        """One batch: assigned, published and marked, or its bad records dead-lettered."""
        records = [r for rs in fetched.values() for r in rs]
        self.metrics.changes += len(records)
        registry = self._registry
        assert registry is not None
        campaigns = await self._retry("read the campaign registry", registry.load)
        if not campaigns.by_name:
            return
        wanted, bad = candidates_of(records, campaigns)
        for record, error in bad:
            await self._dead_letter(record, error)
        if not wanted or await self._attempts_of([c for c, _ in wanted], whole=True) is None:
            return
        for candidate, record in wanted:  # one by one: only what still fails is dropped
            failed = await self._attempts_of([candidate], whole=False)
            if failed is not None:
                reason = f"could not be assigned {self.settings.ingest.poison_retries} times: "
                await self._dead_letter(record, SchemaError("$", (reason + failed)[:300]))

    async def _attempts_of(self, items: list[Candidate], whole: bool) -> str | None:
        """:meth:`_attempts` of assigning ``items``; logs when they kept failing."""
        hide = [cid for _, cid, _ in items]
        error = await self._attempts(
            "campaign assignment", lambda: self._assign(items), is_outage=is_outage, hide=hide
        )
        if error is not None:
            log.error("campaign assignment failed %d times (%s)%s",
                      self.settings.ingest.poison_retries, error,
                      "; trying its records one by one" if whole else "")  # fmt: skip
        return error

    async def _assign(self, items: list[Candidate]) -> None:
        store, publisher = self._store, self._publisher
        assert store is not None and publisher is not None
        stored = await store.record(items)
        owed: list[tuple[Assignment, Campaign]] = []
        for (campaign, _, _), got in zip(items, stored, strict=True):
            if got is not None:
                self.metrics.assigned += 1
                if not got.published:
                    owed.append((got, campaign))
        if owed:
            await publisher.publish([record_of(a, c) for a, c in owed])
            self.metrics.published += len(owed)
            await store.mark_published([a for a, _ in owed])
