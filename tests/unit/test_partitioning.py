"""segstream's one partitioning rule must choose exactly what Kafka's default partitioner does."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as kafka_murmur2

from segstream.partitioning import default_partitions, murmur2, murmur2_many, partition_of


def test_murmur2_of_every_key_equals_the_java_clients_for_every_length() -> None:
    rng = random.Random(11)
    keys = [rng.randbytes(length) for length in range(0, 41) for _ in range(30)]
    keys += [f"C{rng.randrange(10**9):09d}".encode() for _ in range(500)]
    keys += ["klant-é-ü-😀".encode()]
    rng.shuffle(keys)
    assert murmur2_many(keys).tolist() == [kafka_murmur2(k) & 0xFFFFFFFF for k in keys]


def test_one_key_hashes_and_partitions_as_many_keys_do() -> None:
    rng = random.Random(13)
    keys = [rng.randbytes(length) for length in range(0, 41) for _ in range(10)]
    assert [murmur2(k) for k in keys] == murmur2_many(keys).tolist()
    for n in (1, 3, 4, 12):
        assert [partition_of(k, n) for k in keys] == default_partitions(keys, list(range(n)))


def test_same_partition_as_the_default_partitioner_for_every_count() -> None:
    rng = random.Random(12)
    keys = [f"C{i:06d}".encode() for i in range(2000)]
    keys += [rng.randbytes(rng.randrange(1, 30)) for _ in range(500)]
    default = DefaultPartitioner()
    for partitions in ([0], [0, 1, 2], [0, 1, 2, 3], list(range(12)), [2, 5, 9]):
        expected = [default(k, partitions, partitions) for k in keys]
        assert default_partitions(keys, partitions) == expected
    assert default_partitions([], [0, 1]) == []
