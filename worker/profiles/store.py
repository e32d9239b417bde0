"""The Redis side of profiles: one ``profile.lua`` call per space a batch touches.

The customers of a batch are grouped by space (:class:`~worker.state.keys.Keyspace`: the prefix
on a single Redis, the customer's shard on a cluster), as :func:`worker.state.store.split` does
for orders and clicks, so one call touches one space and runs on the primary of its slot. The
dead-letter accounting and every partition's high offset go to the first space (shard 0), which
is called whenever the batch has a partition; each other space's fence moves to the highest
offset of its own updates, so a batch half applied when the worker died is re-applied exactly
where a space had not taken it yet. The batch counts as applied once every call returned.

The script (documented in the file) merges per attribute, last write wins: see
:mod:`worker.profiles.merge` for the same rule in Python.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from msgspec import UNSET

from schemas import CustomerProfile
from segstream.redact import redact
from worker.connect import RedisTarget, async_redis, keyspace, redis_settings, script_client
from worker.core.attributes import PROFILE_FIELDS
from worker.profiles.batch import ProfileBatch, ProfileRecord
from worker.profiles.merge import value_text
from worker.redis_io import Script
from worker.state import keys
from worker.state.errors import redis_errors
from worker.state.keys import Keyspace

__all__ = ["PROFILE_COUNTER_NAMES", "ProfileResult", "ProfileStore", "build_args", "split"]

#: The profile counters in ``{space}:counters`` (see profile.lua).
PROFILE_COUNTER_NAMES: tuple[str, ...] = (
    "profiles_received",
    "profiles_applied",
    "profiles_changed",
    "profiles_dead_lettered",
    "profiles_suppressed",
    "profiles_fenced",
)
_SCRIPT = Script.packaged("worker.profiles", "profile.lua")


@dataclass(frozen=True, slots=True)
class ProfileResult:
    """What the calls of one batch did (summed over spaces)."""

    applied: int = 0
    fenced: int = 0
    suppressed: int = 0
    #: Updates that changed a stored value (the rest lost to a later or larger one).
    changed: int = 0
    #: Customers marked for re-scoring (values changed and they have behaviour state).
    marked: tuple[str, ...] = ()


def _action(attribute: str, profile: CustomerProfile) -> str:
    """'' absent (no change), '-' clear, '=' + text set (profile.lua's encoding)."""
    value = getattr(profile, attribute)
    if value is UNSET:
        return ""
    if value is None:
        return "-"
    return "=" + value_text(attribute, value)


def build_args(batch: ProfileBatch, space: str) -> list[Any]:
    """The script's ARGV for ``batch`` in ``space`` (layout: the head of profile.lua)."""
    index = {tp: i for i, tp in enumerate(batch.high, start=1)}
    args: list[Any] = [space, len(index)]
    for (topic, partition), top in batch.high.items():
        args += [topic, partition, top]
    args.append(len(batch.dead))
    for topic, partition, offset in batch.dead:
        args += [index[(topic, partition)], offset]
    args.append(len(batch.records))
    for r in batch.records:
        p = r.profile
        args += [p.customer_id, index[(r.topic, r.partition)], r.offset, p.event_time_ms]
        args += [_action(attribute, p) for attribute in PROFILE_FIELDS]
    return args


def split(batch: ProfileBatch, space: Keyspace) -> list[tuple[str, ProfileBatch]]:
    """``batch`` as one batch per space it touches, in shard order (one, on a single Redis)."""
    if not space.cluster:
        return [(space.spaces[0], batch)]
    if batch.route is not None:
        return [(space.space_of(batch.route), batch)]
    by_shard: dict[int, list[ProfileRecord]] = {}
    for r in batch.records:
        by_shard.setdefault(space.shard_of(r.profile.customer_id), []).append(r)
    if batch.high:
        by_shard.setdefault(0, [])
    out = []
    for shard in sorted(by_shard):
        records = by_shard[shard]
        if shard == 0:
            part = ProfileBatch(records, batch.dead, batch.high)
        else:
            high: dict[tuple[str, int], int] = {}
            for r in records:
                tp = (r.topic, r.partition)
                high[tp] = max(high.get(tp, -1), r.offset)
            part = ProfileBatch(records, (), high)
        out.append((space.spaces[shard], part))
    return out


class ProfileStore:
    """Async writer of profiles (one script call per space and batch) and reader of counters."""

    def __init__(self, redis: RedisTarget, prefix: str) -> None:
        self.where = redact(redis_settings(redis).url)
        self.prefix = prefix
        self.keyspace = keyspace(redis, prefix)
        self._scripts = script_client(redis)
        self._redis = async_redis(redis)

    async def apply(
        self, batch: ProfileBatch, done: Callable[[ProfileResult], None] | None = None
    ) -> ProfileResult:
        """Apply ``batch`` exactly once; raises StoreUnavailable (retry) or StoreRejected.

        ``done`` hears each space's result as its call returns: when a later space's call
        fails, the spaces already applied stay applied (their fence skips them on the retry),
        and this is the only report of what they did.
        """
        if batch.empty:
            return ProfileResult()
        parts: list[ProfileResult] = []
        with self._errors("refused a profile batch"):
            for space, part in split(batch, self.keyspace):
                key = f"{space}:counters" if self.keyspace.cluster else None
                reply = await self._scripts.call(_SCRIPT, build_args(part, space), key)
                marked = tuple(m.decode() if isinstance(m, bytes) else str(m) for m in reply[5:])
                applied, fenced, suppressed, changed = (int(v) for v in reply[:4])
                got = ProfileResult(applied, fenced, suppressed, changed, marked)
                parts.append(got)
                if done is not None:
                    done(got)
        return ProfileResult(
            sum(r.applied for r in parts),
            sum(r.fenced for r in parts),
            sum(r.suppressed for r in parts),
            sum(r.changed for r in parts),
            tuple(m for r in parts for m in r.marked),
        )

    async def counters(self) -> dict[str, int]:
        """The profile counters summed over every space."""
        total = dict.fromkeys(PROFILE_COUNTER_NAMES, 0)
        with self._errors():
            for space in self.keyspace.spaces:
                raw = await self._redis.hmget(keys.counters(space), list(PROFILE_COUNTER_NAMES))
                for name, value in zip(PROFILE_COUNTER_NAMES, raw, strict=True):
                    total[name] += int(value or 0)
        return total

    async def close(self) -> None:
        await self._scripts.close()
        await self._redis.aclose()

    def _errors(self, refused: str = "") -> contextlib.AbstractContextManager[None]:
        return redis_errors(f"Redis at {self.where}", refused)


def counters_of(hashes: Sequence[dict[Any, Any]]) -> dict[str, int]:
    """The profile counters summed over raw ``{space}:counters`` hashes (for sync readers)."""
    total = dict.fromkeys(PROFILE_COUNTER_NAMES, 0)
    for raw in hashes:
        got = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
        for name in PROFILE_COUNTER_NAMES:
            total[name] += got.get(name, 0)
    return total
