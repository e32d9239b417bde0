"""Input topics that vanished, and partitions whose log went back behind what was applied.

Two broker failures look like an idle stream from the consumer's side, and one of them loses
events silently if nobody looks:

- **missing topics**: a broker that lost its data (tansu in memory restarted, a topic deleted)
  has no orders or clicks topic; the consumer just gets nothing. Reported on ``/health`` and
  logged at ERROR, every minute while it lasts.
- **a partition reset**: the topic is back (re-created, or auto-created by a producer) and its
  offsets start again at 0, while the state store's fence still holds the last offset applied
  from the old log. Every new record at or below that offset would be skipped as "already
  applied". So when the broker's log of a partition ends at or below its fence, the partition is
  *paused*: nothing is fetched from it (nothing lost, nothing committed) until an operator
  decides, and ``/health`` says what to do. Dropping the partition's fence (``HDEL
  <prefix>:fence:<topic> <partition>``, the exact command is in the log) resumes it within
  ``WATCH_INTERVAL_S``; events applied before are still recognised by their fingerprints.

The check runs before the first records fetched from a newly assigned partition are applied
(the ingest loop holds them until then: aiokafka may fetch before its rebalance listener runs)
and every ``WATCH_INTERVAL_S`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import TopicPartition

from worker.backoff import backoff
from worker.state import keys

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 5.0
#: How often a condition that lasts is logged again (seconds).
REPEAT_LOG_S = 60.0


class ConsumerLike(Protocol):
    """The part of aiokafka's consumer the watch uses."""

    async def topics(self) -> set[str]: ...
    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]: ...
    async def position(self, partition: TopicPartition) -> int: ...
    def assignment(self) -> set[TopicPartition]: ...
    def pause(self, *partitions: TopicPartition) -> None: ...
    def resume(self, *partitions: TopicPartition) -> None: ...
    def seek(self, partition: TopicPartition, offset: int) -> None: ...


@dataclass
class Reset:
    """A partition whose broker log ends at or below the last offset applied from it."""

    broker_end: int
    applied_up_to: int


@dataclass
class TopicWatch:
    """What the watch found; ``fences(topic)`` reads the state store's fences of a topic."""

    topics: Sequence[str]
    fences: Callable[[str], Awaitable[dict[int, int]]]
    prefix: str
    #: The offset after the last record of each partition, read from the records themselves
    #: (:func:`last_offsets`): some brokers (tansu) report the log end as the last *batch's*
    #: first offset plus one, which looks like a log behind the fence.
    true_ends: Callable[[dict[TopicPartition, int]], Awaitable[dict[TopicPartition, int]]]
    missing: list[str] = field(default_factory=list)
    resets: dict[TopicPartition, Reset] = field(default_factory=dict)
    #: Partitions compared with their fence since they were assigned: records fetched from any
    #: other partition wait for :meth:`check_partitions` before they are applied.
    checked: set[TopicPartition] = field(default_factory=set)
    _logged_at: dict[str, float] = field(default_factory=dict)

    async def check(self, consumer: ConsumerLike) -> None:
        """Missing topics, then the assigned partitions (see the module docstring)."""
        present = await consumer.topics()
        missing = [t for t in self.topics if t not in present]
        if missing != self.missing:
            self._logged_at.pop("missing", None)
        self.missing = missing
        if missing:
            self._log_every(
                "missing",
                "input topic(s) %s do not exist on the broker (deleted, or the broker lost its "
                "data): nothing can be consumed from them; create them again (a partition whose "
                "new log is shorter than what was applied is then paused, see /health)",
                ", ".join(missing),
            )
        await self.check_partitions(consumer, consumer.assignment())

    async def check_partitions(
        self,
        consumer: ConsumerLike,
        partitions: Iterable[TopicPartition],
        *,
        assigned: bool = False,
    ) -> None:
        """Pause the partitions whose log went back behind their fence; resume fixed ones.

        ``assigned``: just assigned, before any fetch (the consumer's position is not known
        yet). Otherwise a partition is suspect only when the consumer's position went back too:
        while records are consumed normally it lies past the fence.
        """
        tps = sorted(partitions)
        if not tps:
            return
        fences: dict[str, dict[int, int]] = {}
        for topic in {tp.topic for tp in tps}:  # fences first: the log end only grows
            fences[topic] = await self.fences(topic)
        ends = await consumer.end_offsets(tps)
        suspects = {}
        for tp in tps:
            end, fence = ends.get(tp), fences[tp.topic].get(tp.partition, -1)
            if end is None or end > fence:
                continue
            if assigned or tp in self.resets or await consumer.position(tp) <= fence:
                suspects[tp] = end
        true_ends = await self.true_ends(suspects) if suspects else {}
        behind = {
            tp: Reset(end, fences[tp.topic].get(tp.partition, -1))
            for tp, end in true_ends.items()
            if end <= fences[tp.topic].get(tp.partition, -1)
        }
        for tp, reset in behind.items():
            if tp in self.resets:
                continue
            consumer.pause(tp)
            self.resets[tp] = reset
            log.error(
                "%s[%d]: the broker's log ends at offset %d, but records up to %d were "
                "applied from it: the topic was re-created or the broker lost its data. "
                "Paused (nothing is skipped or committed). If that is expected, drop the "
                "fence to resume: %s",
                tp.topic,
                tp.partition,
                reset.broker_end - 1,
                reset.applied_up_to,
                self._fix(tp),
            )
        for tp in [tp for tp in tps if tp in self.resets and tp not in behind]:
            del self.resets[tp]
            consumer.resume(tp)
            log.info("%s[%d]: its fence is behind the log again; resumed", *tp)
        self.checked.update(tp for tp in tps if tp not in self.resets)

    async def hold_unchecked(
        self, consumer: ConsumerLike, fetched: dict[TopicPartition, list[Any]]
    ) -> dict[TopicPartition, list[Any]]:
        """``fetched`` without the records of partitions not yet compared with their fence.

        1. the partitions not checked since they were assigned are compared now
           (:meth:`check_partitions`); if that fails (Redis or the broker), after a pause;
        2. the records of each partition still unchecked (found reset, or the comparison
           failed) are given back: the consumer is sent back to the first one, and a reset
           partition stays paused, so nothing is skipped as "already applied" and nothing is
           committed. They are fetched again once the partition is checked.
        """
        unchecked = [tp for tp in fetched if tp not in self.checked]
        if not unchecked:
            return fetched
        try:
            await self.check_partitions(consumer, unchecked, assigned=True)
        except Exception as exc:  # Redis or the broker: hold the records, try again
            log.warning("could not compare %s with their fences: %r", names(unchecked), exc)
            await asyncio.sleep(backoff(3))
        for tp in unchecked:
            if tp not in self.checked:
                consumer.seek(tp, fetched.pop(tp)[0].offset)
        return fetched

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Revoked or newly assigned partitions: to be checked again before their records."""
        for tp in partitions:
            self.resets.pop(tp, None)
            self.checked.discard(tp)

    def report(self) -> dict[str, Any]:
        return {
            "missing_topics": list(self.missing),
            "reset_partitions": {
                f"{tp.topic}[{tp.partition}]": {
                    "broker_end": r.broker_end,
                    "applied_up_to": r.applied_up_to,
                    "fix": self._fix(tp),
                }
                for tp, r in sorted(self.resets.items())
            },
        }

    @property
    def healthy(self) -> bool:
        return not self.missing and not self.resets

    def _fix(self, tp: TopicPartition) -> str:
        return f"redis-cli HDEL {keys.fence(self.prefix, tp.topic)} {tp.partition}"

    def _log_every(self, what: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._logged_at.get(what, -REPEAT_LOG_S) >= REPEAT_LOG_S:
            self._logged_at[what] = now
            log.error(message, *args)


def names(partitions: Iterable[TopicPartition]) -> str:
    """``clicks[3], orders[0]``: partitions as logs name them."""
    return ", ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions)) or "none"


async def last_offsets(
    bootstrap: str, reported: dict[TopicPartition, int], timeout_s: float = 5.0, **client: Any
) -> dict[TopicPartition, int]:
    """One past the last record of each partition, read from ``reported - 1`` to the end.

    A consumer of its own (no group, nothing committed): the worker's consumer keeps its
    position. A partition that returns nothing in time keeps its reported end. Only called for
    partitions that look reset (rare on Kafka; after a rebalance on tansu).
    """
    from aiokafka import AIOKafkaConsumer

    ends = dict(reported)
    probe = {tp: end - 1 for tp, end in reported.items() if end > 0}
    if not probe:
        return ends
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, **client
    )
    await consumer.start()
    try:
        consumer.assign(list(probe))
        for tp, offset in probe.items():
            consumer.seek(tp, offset)
        # Read on until a fetch brings nothing new: the batch at ``reported - 1`` need not be
        # the last one.
        deadline = time.monotonic() + timeout_s
        got_some = False
        while time.monotonic() < deadline:
            fetched = await consumer.getmany(timeout_ms=200)
            if not any(fetched.values()):
                if got_some:
                    break
                continue  # a new consumer's first fetches often come back empty
            got_some = True
            for tp, records in fetched.items():
                if records:
                    ends[tp] = max(ends[tp], records[-1].offset + 1)
    finally:
        await consumer.stop()
    return ends
