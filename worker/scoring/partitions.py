"""Kafka's default partition of many keys at once: murmur2 in numpy (pure, no Kafka client).

A round publishes up to 5000 change events, each keyed by customer id, and the producer must
put every key on the partition Kafka's default partitioner gives it (Java's
``Utils.murmur2(key) & 0x7fffffff % partitions``), so that a consumer of ``segment-changes`` sees
one customer's changes on one partition, whichever client produced them. aiokafka's ``murmur2``
is pure Python, ~3 us a key: a cold backlog of 100k first segments spent ~0.3 s of the worker's
CPU hashing keys one by one. Here keys of one length are hashed together as ``uint32`` columns
(numpy's unsigned arithmetic wraps, as Java's ``int`` does): ~0.2 us a key.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_SEED = 0x9747B28C
_M = np.uint32(0x5BD1E995)
_R = 24


def murmur2_many(keys: Sequence[bytes]) -> np.ndarray:
    """Kafka's murmur2 (unsigned 32-bit) of every key, in order."""
    out = np.empty(len(keys), dtype=np.uint32)
    by_length: dict[int, list[int]] = {}
    for row, key in enumerate(keys):
        by_length.setdefault(len(key), []).append(row)
    for length, rows in by_length.items():
        data = np.frombuffer(b"".join(keys[r] for r in rows), dtype=np.uint8)
        data = data.reshape(len(rows), length)
        h = np.full(len(rows), _SEED ^ length, dtype=np.uint32)
        whole = length // 4
        if whole:
            words = np.ascontiguousarray(data[:, : whole * 4]).view("<u4")
            for j in range(whole):
                k = words[:, j] * _M
                k ^= k >> _R
                k *= _M
                h *= _M
                h ^= k
        tail, extra = whole * 4, length % 4
        if extra >= 3:
            h ^= data[:, tail + 2].astype(np.uint32) << 16
        if extra >= 2:
            h ^= data[:, tail + 1].astype(np.uint32) << 8
        if extra >= 1:
            h ^= data[:, tail].astype(np.uint32)
            h *= _M
        h ^= h >> 13
        h *= _M
        h ^= h >> 15
        out[rows] = h
    return out


def default_partitions(keys: Sequence[bytes], partitions: Sequence[int]) -> list[int]:
    """The partition Kafka's default partitioner picks for each key (``partitions`` sorted)."""
    if not keys:
        return []
    idx = (murmur2_many(keys) & np.uint32(0x7FFFFFFF)) % np.uint32(len(partitions))
    return [partitions[i] for i in idx.tolist()]
