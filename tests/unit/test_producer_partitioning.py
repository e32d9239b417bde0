"""The memoised partitioner must choose exactly what Kafka's default partitioner chooses."""

from __future__ import annotations

import random

import pytest
from kafka.cluster import ClusterMetadata
from kafka.partitioner.default import DefaultPartitioner

from producers import partitioning
from producers.partitioning import MemoKeyPartitioner
from segstream.partitioning import partition_of


class _Cluster(ClusterMetadata):  # type: ignore[misc]
    """Metadata with a settable partition count per topic, no broker needed."""

    def __init__(self, counts: dict[str, int]) -> None:
        super().__init__()
        self.counts = counts

    def topics(self, exclude_internal_topics: bool = True) -> set[str]:
        return set(self.counts)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        n = self.counts.get(topic)
        return None if n is None else set(range(n))

    def available_partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions_for_topic(topic)


def test_same_choice_as_the_default_partitioner_for_every_key_and_count() -> None:
    rng = random.Random(7)
    keys = [f"C{rng.randrange(10**9)}".encode() for _ in range(3000)]
    keys += [rng.randbytes(rng.randrange(0, 40)) for _ in range(1000)]
    default, memo = DefaultPartitioner(), MemoKeyPartitioner()
    for count in (1, 3, 4, 12):
        cluster = _Cluster({"t": count})
        for key in keys + keys:  # the second pass answers from the memo
            expected = default.partition("t", key, key, b"v", b"v", cluster)
            assert memo.partition("t", key, key, b"v", b"v", cluster) == expected
            assert partition_of(key, count) == expected


def test_a_new_partition_count_is_noticed() -> None:
    counts = {"t": 4}
    cluster, memo = _Cluster(counts), MemoKeyPartitioner()
    keys = [f"C{i}".encode() for i in range(200)]
    before = [memo.partition("t", k, k, None, None, cluster) for k in keys]
    counts["t"] = 7
    after = [memo.partition("t", k, k, None, None, cluster) for k in keys]
    assert after == [partition_of(k, 7) for k in keys]
    assert before == [partition_of(k, 4) for k in keys]
    assert max(after) > 3


def test_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(partitioning, "MAX_KEYS", 50)
    cluster, memo = _Cluster({"t": 4}), MemoKeyPartitioner()
    for i in range(500):
        key = f"C{i}".encode()
        assert memo.partition("t", key, key, None, None, cluster) == partition_of(key, 4)
    assert len(memo._memo["t"][1]) <= 50


def test_unkeyed_records_go_to_an_existing_partition() -> None:
    cluster, memo = _Cluster({"t": 3}), MemoKeyPartitioner()
    chosen = {memo.partition("t", None, None, b"v", b"v", cluster) for _ in range(200)}
    assert chosen <= {0, 1, 2} and len(chosen) > 1
