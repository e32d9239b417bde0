"""The Redis side of scoring: one Lua write per round (a read where no snapshot), outbox, claims.

Keys (all under ``{prefix}:``, see docs/scoring.md):

- ``c:{<cid>}`` fields ``segment``, ``model_version``, ``segment_seq``, ``seg_as_of`` (epoch ms
  recency was computed at) beside the state fields;
- ``unscored``: hash customer -> stamp of its last state change not scored yet (the state script
  writes it atomically with the state); the write deletes a customer's entry with its segment,
  only while the stamp is the one its state was read at (so a later change stays owed);
  whatever is in it at start-up (or every ``dirty_repair_s``) is re-scored;
- ``outbox``: hash ``<round token>`` -> msgpack ``[cid, seq, SegmentChange JSON, ...]`` and
  ``<round token>:skip`` -> msgpack list of the round's conflicting customers (their events
  are not to be published), written atomically with the round's new segments and deleted once
  the broker acknowledged the events (at-least-once publication);
- ``online:<version>``: the online model's state (JSON); ``scoring``: status hash (model
  version, drift, updated time);
- ``rescore:request`` / ``rescore:claim:<token>`` and ``drift:notice:<version>`` /
  ``retrain:lock``: once-only claims (``SET NX EX``) shared by every worker.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from segstream.redact import redact
from worker.connect import RedisTarget, async_redis, redis_settings, script_client
from worker.redis_io import Arg, Pending, Script
from worker.scoring.vectors import SEGMENT_FIELDS, STATE_FIELDS, Round, from_flat, parse
from worker.state import keys

_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder().decode


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


#: Stands for an absent state field in the read script's reply (exact in a double).
ABSENT = -(2**52)

#: The read script (``read.lua``): state and segment fields of customers without a snapshot,
#: with their unscored stamps. The write script (``write.lua``): a round's segments and outbox
#: entry, customers whose stamp moved meanwhile left out as conflicts. Their arguments and
#: replies are documented in the files.
READ_SCRIPT = Script.packaged("worker.scoring", "read.lua")
WRITE_SCRIPT = Script.packaged("worker.scoring", "write.lua")


@dataclass
class WritePlan:
    """One round's write in ``write.lua``'s columns; rows count from 0 in ``ids``."""

    ids: list[str] = field(default_factory=list)
    #: The unscored stamp each customer's state was read at (0 = none).
    stamps: list[int] = field(default_factory=list)
    #: Flat ``row, expected segment_seq (-1 = none)`` pairs: compared before writing.
    checks: list[int] = field(default_factory=list)
    #: Flat ``row, segment, new segment_seq`` triples: the round's real changes.
    changes: list[int | str] = field(default_factory=list)
    #: Rows whose kept segment was assigned by another model version.
    stale: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


class ScoringStore:
    """Async access to everything scoring keeps in Redis (see module docstring).

    The round's scripts go through :class:`~worker.redis_io.ScriptClient`: ``send_read`` and
    ``send_write`` return once Redis has the request, so the caller can assign a round while
    Redis reads the next one or writes the last one; ``read`` and ``write`` wait for the reply.
    Everything else goes through redis-py (``self.redis``).
    """

    def __init__(self, redis: RedisTarget, prefix: str) -> None:
        #: For messages: the URL with its password masked.
        self.where = redact(redis_settings(redis).url)
        self.prefix = prefix
        self.redis = async_redis(redis)
        self._scripts = script_client(redis)
        self._rounds = itertools.count()

    def key(self, suffix: str) -> str:
        return f"{self.prefix}:{suffix}"

    async def send_read(
        self, customer_ids: Sequence[str], fields: Sequence[str] = STATE_FIELDS
    ) -> Pending[Round]:
        """Send the read of the customers' state ``fields`` (others left absent) and segment
        fields; returns once Redis has it. Nothing is sent for no customers."""
        if not customer_ids:
            return Pending.ready(parse([], []))
        ids, read = list(customer_ids), [*fields, *SEGMENT_FIELDS]
        args: list[Arg] = [self.prefix, _pack(ids), _pack(read), len(fields), ABSENT]
        pending = await self._scripts.send(READ_SCRIPT, args)
        return pending.then(lambda reply: from_flat(ids, reply, ABSENT, fields))

    async def read(
        self, customer_ids: Sequence[str], fields: Sequence[str] = STATE_FIELDS
    ) -> Round:
        """:meth:`send_read`, then its result: the round, in one trip."""
        return await (await self.send_read(customer_ids, fields)).result()

    async def send_write(
        self,
        model_version: str,
        as_of_ms: int,
        plan: WritePlan,
        events: Sequence[tuple[str, int, bytes]] = (),
    ) -> Pending[tuple[list[str], str]]:
        """Send the round's segments (+ its change events ``(cid, seq, JSON)`` for the outbox),
        one atomic write; returns once Redis has it.

        The result: the conflicting ids and the outbox field holding the round's events (to
        delete once the others are published). Nothing is sent for an empty plan.
        """
        if not plan.ids:
            return Pending.ready(([], ""))
        token = f"{time.time_ns():020d}-{os.getpid()}-{next(self._rounds)}"
        flat = [x for event in events for x in event]
        args: list[Arg] = [
            self.prefix, model_version, as_of_ms, token, _pack(plan.ids), _pack(plan.stamps),
            _pack(plan.checks), _pack(plan.changes), _pack(plan.stale),
            _pack(flat) if flat else "",
        ]  # fmt: skip
        pending = await self._scripts.send(WRITE_SCRIPT, args)
        return pending.then(lambda reply: ([_str(c) for c in reply], token))

    async def write(
        self,
        model_version: str,
        as_of_ms: int,
        plan: WritePlan,
        events: Sequence[tuple[str, int, bytes]] = (),
    ) -> tuple[list[str], str]:
        """:meth:`send_write`, then its result."""
        return await (await self.send_write(model_version, as_of_ms, plan, events)).result()

    # -- outbox ---------------------------------------------------------------------------------
    async def outbox(self) -> list[tuple[str, list[tuple[str, int, bytes]]]]:
        """Unpublished rounds ``(field, [(cid, seq, event JSON), ...])``, oldest round first."""
        got: dict[Any, Any] = await self.redis.hgetall(self.key("outbox"))
        raw = {_str(k): _bytes(v) for k, v in got.items()}
        out: list[tuple[str, list[tuple[str, int, bytes]]]] = []
        for name, value in raw.items():
            if name.endswith(":skip"):
                continue
            flat = _unpack(value)
            skip = raw.get(f"{name}:skip")
            conflicts = {_str(c) for c in _unpack(skip)} if skip is not None else set()
            entries = [
                (_str(flat[i]), int(flat[i + 1]), _bytes(flat[i + 2]))
                for i in range(0, len(flat), 3)
                if _str(flat[i]) not in conflicts
            ]
            out.append((name, entries))
        return sorted(out)

    async def outbox_done(self, fields: Sequence[str]) -> None:
        """Delete published rounds (and their skip lists)."""
        if fields:
            await self.redis.hdel(self.key("outbox"), *fields, *(f"{f}:skip" for f in fields))

    # -- unscored customers and every customer ----------------------------------------------
    async def unscored_pages(self, page: int = 1000) -> AsyncIterator[list[str]]:
        """Customers still to score (``unscored``), a page at a time (HSCAN, may repeat)."""
        batch: list[str] = []
        async for member, _ in self.redis.hscan_iter(keys.unscored(self.prefix), count=page):
            batch.append(_str(member))
            if len(batch) >= page:
                yield batch
                batch = []
        if batch:
            yield batch

    async def customer_pages(self, page: int = 1000) -> AsyncIterator[list[str]]:
        """Every customer id, a SCAN page at a time (a customer may appear twice)."""
        batch: list[str] = []
        pattern = keys.customer_pattern(self.prefix)
        async for key in self.redis.scan_iter(match=pattern, count=page):
            batch.append(keys.customer_id_of(self.prefix, key))
            if len(batch) >= page:
                yield batch
                batch = []
        if batch:
            yield batch

    # -- models, online state, status ----------------------------------------------------------
    async def current_version(self) -> str | None:
        raw: Any = await self.redis.get(self.key("model:current"))
        return _str(raw) if raw is not None else None

    async def model_json(self, version: str) -> bytes | None:
        raw: Any = await self.redis.get(self.key(f"model:{version}"))
        return None if raw is None else bytes(raw)

    async def online_state(self, version: str) -> bytes | None:
        raw: Any = await self.redis.get(self.key(f"online:{version}"))
        return None if raw is None else bytes(raw)

    async def save_status(
        self, version: str, online_json: bytes | None, status: dict[str, Any]
    ) -> None:
        pipe = self.redis.pipeline(transaction=False)
        if online_json is not None:
            pipe.set(self.key(f"online:{version}"), online_json)
        pipe.hset(self.key("scoring"), mapping={k: str(v) for k, v in status.items()})
        await pipe.execute()

    async def status(self) -> dict[str, str]:
        raw: dict[Any, Any] = await self.redis.hgetall(self.key("scoring"))
        return {_str(k): _str(v) for k, v in raw.items()}

    # -- claims ---------------------------------------------------------------------------------
    async def claim(self, suffix: str, ttl_s: float) -> bool:
        """True for exactly one caller per ``ttl_s`` (SET NX EX)."""
        got = await self.redis.set(self.key(suffix), "1", nx=True, ex=max(1, int(ttl_s)))
        return bool(got)

    async def rescore_request(self) -> str | None:
        raw: Any = await self.redis.get(self.key("rescore:request"))
        return _str(raw) if raw is not None else None

    async def close(self) -> None:
        await self._scripts.close()
        await self.redis.aclose()
