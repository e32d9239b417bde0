"""Re-emit a bounded range of one topic into another (ops re-drive a window of events).

The range starts at an offset (the same on every partition) or at a time (the first record
whose broker timestamp is at or after it, per partition, via ``offsets_for_times``) and ends at
an end time (exclusive) or at the end offsets read when the replay starts, so it always
terminates even while producers keep writing. Keys, values and headers are copied unchanged.
No consumer group is used (partitions are assigned) and nothing is committed.

Record timestamps are the broker's (producers here leave them to the client clock, not the event
time, because a broker's retention deletes by timestamp and an old backfill would vanish).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from producers.errors import SourceError
from producers.run import Summary, progress_bar
from producers.sinks import KafkaSink

#: Polls that return nothing for this long while a partition is short of its end offset end the
#: replay with a note (the broker may have under-reported nothing: records were deleted).
IDLE_GIVE_UP_S = 10.0


@dataclass(frozen=True)
class TopicRange:
    topic: str
    start_offset: int | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None

    def __post_init__(self) -> None:
        if (self.start_offset is None) == (self.start_time is None):
            raise SourceError("give exactly one of --start-offset and --start-time")
        if self.start_offset is not None and self.start_offset < 0:
            raise SourceError(f"--start-offset must be >= 0, got {self.start_offset}")
        if self.start_time and self.end_time and self.end_time <= self.start_time:
            raise SourceError("--end-time must be after --start-time")


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def true_end_offsets(consumer: Any, tps: list[Any], reported: dict[Any, int]) -> dict[Any, int]:
    """One past the last record of each partition, even where the broker under-reports it.

    The local broker (tansu) answers ListOffsets "latest" with the last *batch's* base offset
    plus one, so a batch of 500 records looks like one. Fetching from ``reported - 1`` returns
    that last batch whole; its last record's offset plus one is the real end. On Apache Kafka the
    fetch returns the single last record and the answer is ``reported`` itself.
    """
    probe = {tp: end - 1 for tp, end in reported.items() if end > 0}
    ends = dict(reported)
    if not probe:
        return ends
    consumer.assign(list(probe))
    for tp, offset in probe.items():
        consumer.seek(tp, offset)
    pending = set(probe)
    deadline = time.monotonic() + IDLE_GIVE_UP_S
    while pending and time.monotonic() < deadline:
        for tp, records in consumer.poll(timeout_ms=200).items():
            if tp in pending and records:
                ends[tp] = max(ends[tp], records[-1].offset + 1)
                pending.discard(tp)
                consumer.pause(tp)
    consumer.resume(*probe)
    return ends


def plan(consumer: Any, rng: TopicRange) -> dict[Any, tuple[int, int]]:
    """Per partition, the ``[start, stop)`` offsets to copy (empty ranges left out).

    With times, offsets are where to look; each record's own timestamp decides (see
    :func:`replay_topic`), because a broker may answer ``offsets_for_times`` with the base
    offset of a batch that starts a little before the asked time.
    """
    from kafka import TopicPartition

    partitions = consumer.partitions_for_topic(rng.topic)
    if not partitions:
        raise SourceError(f"topic {rng.topic!r} does not exist or has no partitions")
    tps = [TopicPartition(rng.topic, p) for p in sorted(partitions)]
    first = consumer.beginning_offsets(tps)
    last = true_end_offsets(consumer, tps, consumer.end_offsets(tps))
    if rng.start_offset is not None:
        starts = {tp: max(rng.start_offset, first[tp]) for tp in tps}
    else:
        assert rng.start_time is not None
        found = consumer.offsets_for_times({tp: _ms(rng.start_time) for tp in tps})
        starts = {tp: (found[tp].offset if found.get(tp) else last[tp]) for tp in tps}
    stops = dict(last)
    if rng.end_time is not None:
        found = consumer.offsets_for_times({tp: _ms(rng.end_time) for tp in tps})
        # a batch may straddle the end time: read through it, the timestamps decide
        stops = {
            tp: (
                true_end_offsets(consumer, [tp], {tp: found[tp].offset + 1})[tp]
                if found.get(tp)
                else last[tp]
            )
            for tp in tps
        }
        stops = {tp: min(stops[tp], last[tp]) for tp in tps}
    return {tp: (starts[tp], stops[tp]) for tp in tps if stops[tp] > starts[tp]}


def replay_topic(
    bootstrap: str,
    rng: TopicRange,
    to_topic: str,
    sink: KafkaSink,
    *,
    progress: bool | None = None,
    client: Mapping[str, Any] | None = None,
) -> Summary:
    """Copy the records of ``rng`` to ``to_topic`` through ``sink``; returns the summary.

    ``client``: the consumer's TLS/SASL options (:func:`segstream.security.kafka_options`).
    """
    from kafka import KafkaConsumer

    summary = Summary(source=f"topic {rng.topic}")
    started = time.perf_counter()
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        group_id=None,
        enable_auto_commit=False,
        client_id="segstream-replay",
        max_poll_records=5000,
        fetch_max_bytes=16 * 1024 * 1024,
        **(client or {}),
    )
    copied = 0
    lo_ms = _ms(rng.start_time) if rng.start_time else -(2**63)
    hi_ms = _ms(rng.end_time) if rng.end_time else 2**63
    try:
        ranges = plan(consumer, rng)
        consumer.assign(list(ranges))
        for tp, (start, _) in ranges.items():
            consumer.seek(tp, start)
        remaining = {tp: stop for tp, (_, stop) in ranges.items()}
        total = sum(stop - start for start, stop in ranges.values())
        summary.notes["partitions"] = ", ".join(
            f"{tp.partition}:[{a},{b})" for tp, (a, b) in sorted(ranges.items())
        )
        bar = progress_bar(f"replaying {rng.topic} -> {to_topic}", total, progress)
        last_data = time.monotonic()
        if bar is not None:
            bar.start()
        try:
            while remaining:
                batches = consumer.poll(timeout_ms=500, max_records=5000)
                if not batches:
                    if time.monotonic() - last_data > IDLE_GIVE_UP_S:
                        short = ", ".join(f"{tp.partition}" for tp in remaining)
                        summary.errors.append(
                            f"no records for {IDLE_GIVE_UP_S:.0f}s while partitions {short} "
                            "were short of their end offsets; stopped there"
                        )
                        break
                    continue
                last_data = time.monotonic()
                for tp, records in batches.items():
                    stop = remaining.get(tp)
                    if stop is None:
                        continue
                    for record in records:
                        if record.offset >= stop:
                            break
                        if not lo_ms <= record.timestamp < hi_ms:
                            continue
                        sink.send_raw(to_topic, record.key, record.value, record.headers or None)
                        copied += 1
                    if records and records[-1].offset >= stop - 1:
                        del remaining[tp]
                        consumer.pause(tp)
                if bar is not None:
                    bar.update(bar.task_ids[0], completed=copied)
        finally:
            if bar is not None:
                bar.stop()
    finally:
        consumer.close()
        result = sink.close()
    summary.seconds = time.perf_counter() - started
    summary.rows_read = copied
    summary.events_sent = result.sent
    summary.delivered = result.delivered
    summary.failed = result.failed
    summary.errors.extend(result.errors)
    return summary
