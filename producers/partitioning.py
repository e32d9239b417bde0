"""kafka-python's partitioner hook for segstream's producers: the default rule, remembered per key.

kafka-python hashes every keyed record with a pure-Python murmur2 on each send; a replay sends
the same customer ids over and over, so the partition of each key is computed once with
:func:`segstream.partitioning.partition_of` (the one partitioning rule every producer of
segstream uses) and kept. The memo is dropped whenever a topic's partition count changes and
when it grows past :data:`MAX_KEYS`.
"""

from __future__ import annotations

import random
from typing import Any

from kafka.partitioner.abc import Partitioner

from segstream.partitioning import partition_of

#: Keys remembered per topic before the memo starts over (a few hundred bytes each).
MAX_KEYS = 1_000_000


class MemoKeyPartitioner(Partitioner):  # type: ignore[misc]  # kafka-python has no type hints
    """Kafka's default keyed partitioning with each key's result remembered."""

    def __init__(self) -> None:
        self._memo: dict[str, tuple[list[int], dict[bytes, int]]] = {}

    def partition(
        self,
        topic: str,
        key: Any,
        serialized_key: bytes | None,
        value: Any,
        serialized_value: bytes | None,
        cluster: Any,
    ) -> int:
        partitions = cluster.partitions_for_topic(topic)
        if partitions is None:
            raise ValueError(f"Topic {topic} not found in ClusterMetadata")
        if serialized_key is None:
            available = cluster.available_partitions_for_topic(topic)
            return int(random.choice(sorted(available or partitions)))
        memo = self._memo.get(topic)
        if memo is None or len(memo[0]) != len(partitions) or len(memo[1]) >= MAX_KEYS:
            memo = self._memo[topic] = (sorted(partitions), {})
        ordered, known = memo
        chosen = known.get(serialized_key)
        if chosen is None:
            chosen = known[serialized_key] = ordered[partition_of(serialized_key, len(ordered))]
        return chosen
