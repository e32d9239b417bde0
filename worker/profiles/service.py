"""The profiles consumer: a :class:`~worker.side_consumer.SideConsumer` beside ingestion.

Platform services write customer-profile updates (key = customer id, value =
:class:`schemas.CustomerProfile` JSON) to ``settings.kafka.profiles_topic``. This service reads
them in its own consumer group (``<group_id>-profiles``, so it never joins ingestion's
rebalances) and, per fetched batch:

1. decodes every record (:mod:`worker.profiles.batch`); a record that is null, not JSON, of an
   unknown version or with a bad value is dead-lettered with its reason (original bytes kept,
   one WARNING line each) and the rest goes on;
2. applies the valid updates with one ``profile.lua`` call per space
   (:class:`~worker.profiles.store.ProfileStore`): per-partition fence, per-attribute last write
   wins, forgotten customers' old updates dropped, changed customers marked for re-scoring;
3. tells the change listener (scoring) which customers to re-score, then commits the offsets.

Failures, as ingestion's (docs/state.md, "When a batch fails"): an outage (Redis or the broker
unreachable) is waited out with backoff, nothing committed; a batch Redis keeps refusing for
another reason is retried ``poison_retries`` times (``SEGSTREAM_POISON_RETRIES``; 0 = forever),
then applied record by record, and a record that is still refused is dead-lettered with the
error. Re-applying is always safe (the fence, and the merge is idempotent), so a batch processed
again after a crash changes nothing. No line at INFO or above names a customer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiokafka import ConsumerRecord

from schemas.errors import SchemaError
from segstream.settings import Settings
from worker.ingest.listener import ChangeListener
from worker.profiles.batch import ProfileBatch, assemble
from worker.profiles.metrics import ProfileMetrics
from worker.profiles.store import ProfileResult, ProfileStore
from worker.side_consumer import Fetched, SideConsumer

log = logging.getLogger(__name__)

__all__ = ["ProfileService"]


class ProfileService(SideConsumer):
    """Consumes profile updates and merges them into the customer hashes (module docstring)."""

    part = "profiles"
    noun = "profiles"
    #: Profile updates are rarer than clicks, and one batch is one script call per space whose
    #: arguments grow with it.
    fetch_max_records = 1000
    metrics: ProfileMetrics

    def __init__(
        self, settings: Settings, listener: ChangeListener | None = None, **kwargs: Any
    ) -> None:
        self.listener = listener
        self._store: ProfileStore | None = None
        super().__init__(settings, settings.kafka.profiles_topic, ProfileMetrics(), **kwargs)

    async def _open(self) -> None:
        s = self.settings
        self._store = ProfileStore(s.redis, s.redis.prefix)
        self._closers.append(self._store.close)

    async def handle(self, fetched: Fetched) -> None:
        """One fetched batch: dead letters sent, updates applied, listener told (not committed)."""
        self.metrics.records += sum(len(records) for records in fetched.values())
        batch, rejected = assemble(fetched.values())
        if rejected:
            await self._send_dead_letters(rejected)
        raw = {(r.topic, r.partition, r.offset): r for rs in fetched.values() for r in rs}
        result = await self._apply(batch, raw)
        if result.marked and self.listener is not None:
            try:
                await self.listener.on_changed(list(result.marked), None, None)
            except Exception:  # scoring's repair finds them in {prefix}:unscored anyway
                log.exception("on_changed failed for %d customer(s)", len(result.marked))

    async def _apply(
        self, batch: ProfileBatch, raw: Mapping[tuple[str, int, int], ConsumerRecord[Any, Any]]
    ) -> ProfileResult:
        """Apply ``batch``: outages waited out, a batch refused too often applied record by
        record, a record refused too often dead-lettered. The result carries the customers
        marked for re-scoring (the counts are in the metrics)."""
        marked: list[str] = []
        error = await self._attempts_of(batch, marked)
        if error is None:
            return ProfileResult(marked=tuple(marked))
        self.metrics.isolated_batches += 1
        log.error("a profile batch was refused %d times (%s); applying it record by record",
                  self.settings.ingest.poison_retries, error)  # fmt: skip
        for one in batch.items():
            error = await self._attempts_of(one, marked)
            if error is None:
                continue
            if one.records:
                r = one.records[0]
                limit = self.settings.ingest.poison_retries
                reason = f"the state store refused this record {limit} times: {error}"
                await self._dead_letter(
                    raw[(r.topic, r.partition, r.offset)], SchemaError("$", reason[:300])
                )
                tp = (r.topic, r.partition)
                accounting = ProfileBatch(
                    (), [(*tp, r.offset)], {tp: r.offset}, route=r.profile.customer_id
                )
                error = await self._attempts_of(accounting, marked)
            if error is not None:  # not even the dead letter's accounting: logged, goes on
                log.error("a profile record's accounting was refused (%s); not counted", error)
        return ProfileResult(marked=tuple(marked))

    async def _attempts_of(self, batch: ProfileBatch, marked: list[str]) -> str | None:
        """:meth:`_attempts` of ``batch``. What each space's call did is counted as it returns
        (a later space's failure does not undo it), and the customers it marked for
        re-scoring are added to ``marked``."""
        store = self._store
        assert store is not None
        m = self.metrics

        def count(part: ProfileResult) -> None:
            m.applied += part.applied
            m.changed += part.changed
            m.fenced += part.fenced
            m.suppressed += part.suppressed
            marked.extend(part.marked)

        return await self._attempts("a profile batch", lambda: store.apply(batch, count))
