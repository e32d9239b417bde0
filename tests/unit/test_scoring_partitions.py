"""The vectorised partitioner of segment changes must choose exactly what Kafka's default does."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner, murmur2

from worker.scoring.partitions import default_partitions, murmur2_many


def test_murmur2_of_every_key_equals_the_java_clients_for_every_length() -> None:
    rng = random.Random(11)
    keys = [rng.randbytes(length) for length in range(0, 41) for _ in range(30)]
    keys += [f"C{rng.randrange(10**9):09d}".encode() for _ in range(500)]
    keys += ["klant-é-ü-😀".encode()]
    rng.shuffle(keys)
    assert murmur2_many(keys).tolist() == [murmur2(k) & 0xFFFFFFFF for k in keys]


def test_same_partition_as_the_default_partitioner_for_every_count() -> None:
    rng = random.Random(12)
    keys = [f"C{i:06d}".encode() for i in range(2000)]
    keys += [rng.randbytes(rng.randrange(1, 30)) for _ in range(500)]
    default = DefaultPartitioner()
    for partitions in ([0], [0, 1, 2], [0, 1, 2, 3], list(range(12)), [2, 5, 9]):
        expected = [default(k, partitions, partitions) for k in keys]
        assert default_partitions(keys, partitions) == expected
    assert default_partitions([], [0, 1]) == []
