"""Key -> partition, as Kafka's default partitioner does it, remembered per key.

kafka-python hashes every keyed record with a pure-Python murmur2 (about 2 µs a record, an
eighth of a send). A replay sends the same few customer ids over and over, so the partition of
each key is computed once and kept. The result is exactly the default partitioner's (murmur2 of
the key bytes, sign bit cleared, modulo the partition count, as the Java client and aiokafka do),
so a customer lands on the same partition whichever producer sent it; the memo is dropped
whenever a topic's partition count changes and when it grows past :data:`MAX_KEYS`.
"""

from __future__ import annotations

import random
from typing import Any

from kafka.partitioner.abc import Partitioner
from kafka.partitioner.default import murmur2

#: Keys remembered per topic before the memo starts over (a few hundred bytes each).
MAX_KEYS = 1_000_000


def partition_of(key: bytes, partitions: int) -> int:
    """The default partitioner's choice for ``key`` among ``partitions`` partitions."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


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
