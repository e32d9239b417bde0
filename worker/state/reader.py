"""Reading the state back: counters, fences, customers, the sweep's index (sync, redis-py).

:class:`StateReader` is what the CLI, tests and the sweep read through; the helpers below sum
what every space of a cluster holds (counters, fences) and plan the sweep's bucket queries, for
it and for the async :class:`~worker.state.store.StateStore` alike.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from segstream.redact import redact
from worker.connect import RedisTarget, keyspace, redis_settings, sync_redis
from worker.core.memory import COUNTER_NAMES
from worker.core.rfm import CustomerState
from worker.state import keys
from worker.state.errors import redis_errors
from worker.state.keys import Keyspace

__all__ = ["ERASURE_COUNTER_NAMES", "StateReader"]


def int_map(raw: dict[Any, Any]) -> dict[int, int]:
    return {int(k): int(v) for k, v in raw.items()}


def highest(maps: Sequence[dict[int, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for fences in maps:
        for partition, offset in fences.items():
            out[partition] = max(offset, out.get(partition, offset))
    return out


def summed(
    hashes: Sequence[dict[Any, Any]], names: tuple[str, ...] = COUNTER_NAMES
) -> dict[str, int]:
    total = dict.fromkeys(names, 0)
    for raw in hashes:
        for name, value in counters_of(raw, names).items():
            total[name] += value
    return total


def counters_of(raw: dict[Any, Any], names: tuple[str, ...] = COUNTER_NAMES) -> dict[str, int]:
    got = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
    return {name: got.get(name, 0) for name in names}


#: Counters of forgetting, in the same hash (docs/forget.md): ``suppressed`` events of forgotten
#: customers the state script dropped (counted in ``valid`` too, so ``valid = applied + deduped
#: + anonymous + suppressed``), ``erasures`` forget calls, ``forgotten`` customers that had data.
#: Apart from :func:`StateReader.counters` so that those stay the oracle's (worker.core).
ERASURE_COUNTER_NAMES: tuple[str, ...] = ("suppressed", "erasures", "forgotten")


def crossing_queries(
    keyspace: Keyspace,
    threshold_days: float,
    since_ms: int,
    until_ms: int,
    chunk: int = 500,
) -> Iterator[list[tuple[str, str, int]]]:
    """(bucket key, min, max) ZRANGEBYSCORE arguments for a sweep, in score order, chunked.

    recency(t) = t - last crosses d days at t = last + d, so crossing within (since, until]
    means last in (since - d, until - d]: only the hour buckets of that range are read (in
    every shard's space).
    """
    shift = round(threshold_days * 86_400_000)
    lo, hi = since_ms - shift, until_ms - shift
    if hi <= lo:
        return
    width = keys.LAST_ORDER_BUCKET_MS
    hours = range(lo // width, hi // width + 1)
    buckets = [(space, h) for h in hours for space in keyspace.spaces]
    for start in range(0, len(buckets), chunk):
        yield [
            (keys.last_order(space, h * width), f"({lo}", hi)
            for space, h in buckets[start : start + chunk]
        ]


class StateReader:
    """Sync reads of the state: one customer, all customers (SCAN), the sweep index, counters."""

    def __init__(self, redis: RedisTarget, prefix: str) -> None:
        #: For messages: the URL with its password masked.
        self.where = redact(redis_settings(redis).url)
        self.prefix = prefix
        self.keyspace = keyspace(redis, prefix)
        self._redis = sync_redis(redis)

    def __enter__(self) -> StateReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._redis.close()

    def get(self, customer_id: str) -> CustomerState | None:
        """One customer's state, or ``None`` if nothing is stored for it."""
        raw = self._call(self._redis.hgetall, self.keyspace.customer(customer_id))
        return CustomerState.from_hash(customer_id, raw) if raw else None

    def customers(self, page: int = 1000) -> Iterator[CustomerState]:
        """Every customer, streamed: SCAN (every primary of a cluster), then one pipelined
        HGETALL per page of keys.

        Order is Redis's (unsorted). SCAN may return a key twice, so repeats are dropped here; a
        customer first written during the scan may or may not appear.
        """
        seen: set[str] = set()
        pattern = self.keyspace.customer_pattern()
        found: list[bytes] = []
        scan = self._redis.scan_iter(match=pattern, count=page)
        while (key := self._call(next, scan, None)) is not None:
            found.append(key)
            if len(found) == page:
                yield from self._states(found, seen)
                found = []
        yield from self._states(found, seen)

    def _states(self, found: list[bytes], seen: set[str]) -> Iterator[CustomerState]:
        if not found:
            return
        pipe = self._redis.pipeline(transaction=False)
        for key in found:
            pipe.hgetall(key)
        replies = self._call(pipe.execute)
        for key, raw in zip(found, replies, strict=True):
            cid = self.keyspace.customer_id_of(key)
            if raw and cid not in seen:
                seen.add(cid)
                yield CustomerState.from_hash(cid, raw)

    def customers_crossing(self, threshold_days: float, since_ms: int, until_ms: int) -> list[str]:
        """Customers whose recency crossed ``threshold_days`` within ``(since_ms, until_ms]``.

        ZRANGEBYSCORE on the hour buckets of the last-order index that the window covers (one
        pipeline per 500 hours), never a scan of all customers. Sorted by last order time.
        """
        out: list[str] = []
        for chunk in crossing_queries(self.keyspace, threshold_days, since_ms, until_ms):
            pipe = self._redis.pipeline(transaction=False)
            for key, lo, hi in chunk:
                pipe.zrangebyscore(key, lo, hi)
            for found in self._call(pipe.execute):
                out.extend(m.decode() for m in found)
        return out

    def _counter_hashes(self) -> list[dict[Any, Any]]:
        return [
            self._call(self._redis.hgetall, keys.counters(space)) for space in self.keyspace.spaces
        ]

    def counters(self) -> dict[str, int]:
        return summed(self._counter_hashes())

    def erasure_counters(self) -> dict[str, int]:
        """``suppressed``, ``erasures``, ``forgotten`` (see :data:`ERASURE_COUNTER_NAMES`)."""
        return summed(self._counter_hashes(), ERASURE_COUNTER_NAMES)

    def fences(self, topic: str) -> dict[int, int]:
        """Partition -> last applied offset of ``topic`` (the highest of any shard's)."""
        return highest(
            [
                int_map(self._call(self._redis.hgetall, keys.fence(space, topic)))
                for space in self.keyspace.spaces
            ]
        )

    def dirty(self) -> set[str]:
        """Customers whose state changed since they were last scored (``{space}:unscored``)."""
        return {
            m.decode()
            for space in self.keyspace.spaces
            for m in self._call(self._redis.hkeys, keys.unscored(space))
        }

    def _call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        with redis_errors(f"Redis at {self.where}"):
            return func(*args, **kwargs)
