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
- on a Redis Cluster, ``c:{<cid>}``, ``unscored`` and ``outbox`` are per shard, under the
  shard's space (``{prefix}:{k}:``, worker/state/keys.py): a round is one read and one write per
  shard it touches, all with the same outbox token; the storefront's ``{prefix}:c:{<cid>}`` is
  then a copy of ``segment``, ``model_version`` and ``segment_seq``, written once the change is
  published (:meth:`ScoringStore.published`), never older than the one it replaces;
- ``rescore:request`` / ``rescore:claim:<token>`` and ``drift:notice:<version>`` /
  ``retrain:lock``: once-only claims (``SET NX EX``) shared by every worker.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec
import orjson

from segstream.redact import redact
from worker.connect import RedisTarget, async_redis, keyspace, redis_settings, script_client
from worker.redis_io import Arg, Pending, Script
from worker.scoring.plan import OutgoingChange, WritePlan
from worker.scoring.vectors import SEGMENT_FIELDS, STATE_FIELDS, Round, from_flat, parse
from worker.state import keys

_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder().decode


def _abandon(sent: Sequence[Pending[Any]]) -> None:
    for pending in sent:
        pending.abandon()


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

#: The storefront's copy of a segment (cluster only): written unless it already holds a
#: segment_seq at least as high (a replayed outbox round never takes a customer back).
STOREFRONT_LUA = """
local seq = tonumber(redis.call('HGET', KEYS[1], 'segment_seq')) or -1
if seq >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'segment_seq', ARGV[1], 'segment', ARGV[2], 'model_version', ARGV[3])
return 1
"""


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
        self.keyspace = keyspace(redis, prefix)
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
        read = [*fields, *SEGMENT_FIELDS]
        groups = self._by_space(customer_ids)
        sent = []
        for space, ids in groups:
            args: list[Arg] = [space, _pack(ids), _pack(read), len(fields), ABSENT]
            sent.append(await self._scripts.send(READ_SCRIPT, args, self._slot_key(space)))
        order = [cid for _, ids in groups for cid in ids]
        width = len(read)

        async def receive() -> Round:
            rows: list[Any] = []
            stamps: list[Any] = []
            for (_, ids), pending in zip(groups, sent, strict=True):
                reply = await pending.result()
                rows += reply[: len(ids) * width]
                stamps += reply[len(ids) * width :]
            return from_flat(order, rows + stamps, ABSENT, fields)

        return Pending(receive, lambda: _abandon(sent))

    async def send_attributes(
        self, customer_ids: Sequence[str], fields: Sequence[str]
    ) -> Pending[dict[str, list[bytes | None]]]:
        """Send the read of the customers' attribute ``fields`` (a model's categorical features,
        worker/scoring/categories.py); returns once Redis has it. Its result: customer -> its
        values (``None`` where absent or empty).

        The read script itself with no state field: one call per space, like the state read,
        so it is cluster-safe and routed by slot the same way (its unscored stamps are unused).
        Nothing is sent for no customers or no fields (a numeric-only model).
        """
        if not customer_ids or not fields:
            return Pending.ready({})
        groups = self._by_space(customer_ids)
        sent = []
        for space, ids in groups:
            args: list[Arg] = [space, _pack(ids), _pack(list(fields)), 0, ABSENT]
            sent.append(await self._scripts.send(READ_SCRIPT, args, self._slot_key(space)))
        width = len(fields)

        async def receive() -> dict[str, list[bytes | None]]:
            out: dict[str, list[bytes | None]] = {}
            for (_, ids), pending in zip(groups, sent, strict=True):
                reply = await pending.result()
                for i, cid in enumerate(ids):
                    out[cid] = [_bytes(v) or None for v in reply[i * width : (i + 1) * width]]
            return out

        return Pending(receive, lambda: _abandon(sent))

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
        sent = []
        for space, part, part_events in self._split_plan(plan, events):
            flat = [x for event in part_events for x in event]
            args: list[Arg] = [
                space, model_version, as_of_ms, token, _pack(part.ids), _pack(part.stamps),
                _pack(part.checks), _pack(part.changes), _pack(part.stale),
                _pack(flat) if flat else "",
            ]  # fmt: skip
            sent.append(await self._scripts.send(WRITE_SCRIPT, args, self._slot_key(space)))

        async def receive() -> tuple[list[str], str]:
            conflicts = [_str(c) for pending in sent for c in await pending.result()]
            return conflicts, token

        return Pending(receive, lambda: _abandon(sent))

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
        """Unpublished rounds ``(field, [(cid, seq, event JSON), ...])``, oldest round first (a
        round written in several shards comes back as one)."""
        rounds: dict[str, list[tuple[str, int, bytes]]] = {}
        for space in self.keyspace.spaces:
            got: dict[Any, Any] = await self.redis.hgetall(f"{space}:outbox")
            raw = {_str(k): _bytes(v) for k, v in got.items()}
            for name, value in raw.items():
                if name.endswith(":skip"):
                    continue
                flat = _unpack(value)
                skip = raw.get(f"{name}:skip")
                conflicts = {_str(c) for c in _unpack(skip)} if skip is not None else set()
                rounds.setdefault(name, []).extend(
                    (_str(flat[i]), int(flat[i + 1]), _bytes(flat[i + 2]))
                    for i in range(0, len(flat), 3)
                    if _str(flat[i]) not in conflicts
                )
        return sorted(rounds.items())

    async def published(self, fields: Sequence[str], changes: Sequence[OutgoingChange]) -> None:
        """The broker acknowledged ``changes``: on a cluster, copy them to the storefront's
        keys; then delete their rounds ``fields`` (and skip lists) from the outbox."""
        if changes and self.keyspace.separate_storefront:
            pipe = self.redis.pipeline(transaction=False)
            for change in changes:
                segment = orjson.loads(change.payload)["new_segment"]
                key = self.keyspace.storefront(change.customer_id)
                pipe.execute_command(
                    "EVAL", STOREFRONT_LUA, 1, key, change.segment_seq, segment,
                    change.model_version,
                )  # fmt: skip
            await pipe.execute()
        if fields:
            gone = [*fields, *(f"{f}:skip" for f in fields)]
            for space in self.keyspace.spaces:
                await self.redis.hdel(f"{space}:outbox", *gone)

    # -- unscored customers and every customer ----------------------------------------------
    async def unscored_pages(self, page: int = 1000) -> AsyncIterator[list[str]]:
        """Customers still to score (``unscored``), a page at a time (HSCAN, may repeat)."""
        batch: list[str] = []
        for space in self.keyspace.spaces:
            async for member, _ in self.redis.hscan_iter(keys.unscored(space), count=page):
                batch.append(_str(member))
                if len(batch) >= page:
                    yield batch
                    batch = []
        if batch:
            yield batch

    async def customer_pages(self, page: int = 1000) -> AsyncIterator[list[str]]:
        """Every customer id, a SCAN page at a time (a customer may appear twice)."""
        batch: list[str] = []
        pattern = self.keyspace.customer_pattern()
        async for key in self.redis.scan_iter(match=pattern, count=page):
            batch.append(self.keyspace.customer_id_of(key))
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

    def _by_space(self, customer_ids: Sequence[str]) -> list[tuple[str, list[str]]]:
        """The customers grouped by the space they live in (one group on a single Redis)."""
        if not self.keyspace.cluster:
            return [(self.prefix, list(customer_ids))]
        groups: dict[str, list[str]] = {}
        for cid in customer_ids:
            groups.setdefault(self.keyspace.space_of(cid), []).append(cid)
        return sorted(groups.items())

    def _slot_key(self, space: str) -> str | None:
        return f"{space}:unscored" if self.keyspace.cluster else None

    def _split_plan(
        self, plan: WritePlan, events: Sequence[tuple[str, int, bytes]]
    ) -> list[tuple[str, WritePlan, list[tuple[str, int, bytes]]]]:
        """``plan`` and its events as one plan per space, rows renumbered within each."""
        if not self.keyspace.cluster:
            return [(self.prefix, plan, list(events))]
        space_of_row = [self.keyspace.space_of(cid) for cid in plan.ids]
        parts: dict[str, WritePlan] = {}
        new_row: list[int] = []
        for cid, stamp, space in zip(plan.ids, plan.stamps, space_of_row, strict=True):
            part = parts.setdefault(space, WritePlan())
            new_row.append(len(part.ids))
            part.ids.append(cid)
            part.stamps.append(stamp)
        for k in range(0, len(plan.checks), 2):
            row = plan.checks[k]
            parts[space_of_row[row]].checks += [new_row[row], plan.checks[k + 1]]
        for k in range(0, len(plan.changes), 3):
            row = int(plan.changes[k])
            parts[space_of_row[row]].changes += [new_row[row], *plan.changes[k + 1 : k + 3]]
        for row in plan.stale:
            parts[space_of_row[row]].stale.append(new_row[row])
        by_space: dict[str, list[tuple[str, int, bytes]]] = {}
        for event in events:
            by_space.setdefault(self.keyspace.space_of(event[0]), []).append(event)
        return [(space, parts[space], by_space.get(space, [])) for space in sorted(parts)]

    async def close(self) -> None:
        await self._scripts.close()
        await self.redis.aclose()
