"""Kafka's default key -> partition rule, for every producer segstream runs.

A consumer of ``orders``, ``clicks`` or ``segment-changes`` must see one customer's records on
one partition whichever client produced them, so every producer here picks partitions exactly
as Kafka's default partitioner does (the Java client's ``Utils.murmur2(key) & 0x7fffffff %
partitions``; aiokafka and kafka-python do the same). :func:`partition_of` is the rule for one
key; :func:`default_partitions` applies it to many keys at once, hashing keys of one length
together as ``uint32`` columns (numpy's unsigned arithmetic wraps as Java's ``int`` does), which
is what a scoring round of thousands of changes needs. Pure: no Kafka client.
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


def murmur2(key: bytes) -> int:
    """Kafka's murmur2 (unsigned 32-bit) of one key."""
    m, seed, length = 0x5BD1E995, 0x9747B28C, len(key)
    h = (seed ^ length) & 0xFFFFFFFF
    whole = length // 4
    for i in range(whole):
        k = int.from_bytes(key[4 * i : 4 * i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail, extra = whole * 4, length % 4
    if extra >= 3:
        h ^= key[tail + 2] << 16
    if extra >= 2:
        h ^= key[tail + 1] << 8
    if extra >= 1:
        h ^= key[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_of(key: bytes, partitions: int) -> int:
    """The default partitioner's choice for ``key`` among ``partitions`` partitions."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
