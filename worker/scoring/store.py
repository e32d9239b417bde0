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
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from worker.redis_io import bulk_client, evalsha_sent, script_sha
from worker.scoring.vectors import SEGMENT_FIELDS, STATE_FIELDS, Round, from_flat, parse
from worker.state import keys

_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder().decode


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _lua_list(names: Sequence[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


#: Stands for an absent state field in the read script's reply (exact in a double).
ABSENT = -(2**52)

#: ARGV: prefix, msgpack list of customer ids, msgpack list of state fields to read. Returns a
#: flat array of strings: per customer ``[*those state fields (ABSENT where absent), segment,
#: model_version, segment_seq ('' where absent)]``, then each customer's unscored stamp (0 =
#: none), read atomically with the state it vouches for (parsed by ``vectors.from_flat``). For
#: customers without a snapshot (backlog, repair, sweep, rescore, conflicts). The values go out
#: as Redis stored them: per-customer tables, ``tonumber`` and a msgpack reply cost the script
#: ~40 % more than the flat strings (5000 customers: 51 ms vs 36 ms of redis-server), and
#: arguments go in as blobs (redis-py's per-argument encoding cost more than the rest of a round).
READ_LUA = f"""
local prefix = ARGV[1]
local ids = cmsgpack.unpack(ARGV[2])
local fields = cmsgpack.unpack(ARGV[3])
local ns = #fields
fields[ns + 1], fields[ns + 2], fields[ns + 3] = {_lua_list(SEGMENT_FIELDS)}
local absent = '{ABSENT}'
local out, n = {{}}, 0
for i = 1, #ids do
  local v = redis.call('HMGET', prefix .. ':c:{{' .. ids[i] .. '}}', unpack(fields))
  for j = 1, ns do out[n + j] = v[j] or absent end
  out[n + ns + 1] = v[ns + 1] or ''
  out[n + ns + 2] = v[ns + 2] or ''
  out[n + ns + 3] = v[ns + 3] or ''
  n = n + ns + 3
end
for s = 1, #ids, 1000 do
  local got = redis.call('HMGET', prefix .. ':unscored', unpack(ids, s, math.min(s + 999, #ids)))
  for j = 1, #got do out[n + j] = got[j] or '0' end
  n = n + #got
end
return out
"""

#: ARGV: prefix, model version, as-of ms, outbox field, then the :class:`WritePlan` as msgpack
#: columns: customer ids, the unscored stamp each was read at, (row, expected segment_seq)
#: pairs to compare, (row, segment, new segment_seq) triples of real changes, rows whose kept
#: segment gets the model version; then the round's change events as the outbox keeps them
#: ('' = none). Rows count from 0.
#:
#: A customer is written only while its ``{prefix}:unscored`` stamp is still the one its state
#: was read at (else a newer state exists, or someone else scored it: a conflict, returned and
#: re-queued by the caller). Stamps only grow and every segment write deletes the stamp, so an
#: unchanged stamp also vouches for ``segment_seq`` and for the hash itself (whatever deletes a
#: customer's hash deletes its ``unscored`` entry in the same call), except where the stamp was
#: 0 or -1 (a customer read while nothing was owed: rescore, sweep; an earlier release's entry):
#: the caller then sends the ``segment_seq`` it read, as for a customer it found without a hash
#: (EXISTS only where segment_seq cannot tell). Comparing every written row cost the script a
#: third of its time (an HGET per change). A real change writes ``segment``, ``segment_seq``,
#: ``model_version`` and ``seg_as_of``; a kept segment writes ``model_version`` and
#: ``seg_as_of`` only when the stored version is another; a kept segment whose version is
#: current writes nothing. Every customer not in conflict leaves ``unscored``; the round's change
#: events go into the outbox as they came (the script never parses them: JSON through Lua cost
#: more than the rest of a row), with the conflicting customers beside them under
#: ``<field>:skip``. Columns, not a table per customer: unpacking 5000 small tables and
#: looping over them cost the script more than its writes.
WRITE_LUA = """
local prefix, version, asof, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ids, stamps = cmsgpack.unpack(ARGV[5]), cmsgpack.unpack(ARGV[6])
local checks, changes, stale = cmsgpack.unpack(ARGV[7]), cmsgpack.unpack(ARGV[8]),
  cmsgpack.unpack(ARGV[9])
local unscored = prefix .. ':unscored'
local n = #ids
local ok, owed, gone = {}, {}, {}
for s = 1, n, 1000 do
  local got = redis.call('HMGET', unscored, unpack(ids, s, math.min(s + 999, n)))
  for j = 1, #got do
    local i = s + j - 1
    local cur = tonumber(got[j]) or 0
    ok[i], owed[i] = cur == stamps[i], cur ~= 0
  end
end
for k = 1, #checks, 2 do
  local i, seq = checks[k] + 1, checks[k + 1]
  if ok[i] then
    local key = prefix .. ':c:{' .. ids[i] .. '}'
    local stored = tonumber(redis.call('HGET', key, 'segment_seq')) or -1
    if stored == -1 and seq == -1 and redis.call('EXISTS', key) == 0 then
      gone[i] = true
    elseif stored ~= seq then
      ok[i] = false
    end
  end
end
for k = 1, #changes, 3 do
  local i = changes[k] + 1
  if ok[i] and not gone[i] then
    redis.call('HSET', prefix .. ':c:{' .. ids[i] .. '}', 'segment', changes[k + 1],
               'segment_seq', changes[k + 2], 'model_version', version, 'seg_as_of', asof)
  end
end
for k = 1, #stale do
  local i = stale[k] + 1
  if ok[i] and not gone[i] then
    redis.call('HSET', prefix .. ':c:{' .. ids[i] .. '}', 'model_version', version,
               'seg_as_of', asof)
  end
end
local conflicts, done = {}, {}
for i = 1, n do
  if not ok[i] then conflicts[#conflicts + 1] = ids[i]
  elseif owed[i] then done[#done + 1] = ids[i] end
end
for s = 1, #done, 1000 do
  redis.call('HDEL', unscored, unpack(done, s, math.min(s + 999, #done)))
end
if #ARGV[10] > 0 then
  redis.call('HSET', prefix .. ':outbox', token, ARGV[10])
  if #conflicts > 0 then
    redis.call('HSET', prefix .. ':outbox', token .. ':skip', cmsgpack.pack(conflicts))
  end
end
return conflicts
"""

#: KEYS: the sets of earlier releases (``dirty``, ``scoring:inflight``). Their members become
#: ``unscored`` entries with stamp -1 (never a real stamp; kept where a real one exists), then
#: the sets are deleted: one atomic call, so a crash leaves either the sets or the entries.
MIGRATE_LUA = """
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('TYPE', key).ok == 'set' then
    for _, cid in ipairs(redis.call('SMEMBERS', key)) do
      n = n + redis.call('HSETNX', ARGV[1] .. ':unscored', cid, -1)
    end
    redis.call('DEL', key)
  end
end
return n
"""


@dataclass
class WritePlan:
    """One round's write in :data:`WRITE_LUA`'s columns; rows count from 0 in ``ids``."""

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
    """Async access to everything scoring keeps in Redis (see module docstring)."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.redis = bulk_client(redis_url)
        self._read_sha, self._write_sha = script_sha(READ_LUA), script_sha(WRITE_LUA)
        self._migrate = self.redis.register_script(MIGRATE_LUA)
        self._rounds = itertools.count()

    def key(self, suffix: str) -> str:
        return f"{self.prefix}:{suffix}"

    async def read(
        self,
        customer_ids: Sequence[str],
        fields: Sequence[str] = STATE_FIELDS,
        on_sent: Callable[[], None] | None = None,
    ) -> Round:
        """The customers' state ``fields`` (others left absent) and segment fields, one trip.

        ``on_sent``: called once Redis has the request (a read ahead runs while the caller
        assigns the current round, see ``ScoringService._read_ahead``); not when nothing is
        sent (``redis_io.until_sent`` also returns when the call ends).
        """
        if not customer_ids:
            return parse([], [])
        args: list[Any] = [self.prefix, _pack(list(customer_ids)), _pack(list(fields))]
        reply = await evalsha_sent(self.redis, self._read_sha, READ_LUA, args, on_sent)
        return from_flat(customer_ids, reply, ABSENT, fields)

    async def write(
        self,
        model_version: str,
        as_of_ms: int,
        plan: WritePlan,
        events: Sequence[tuple[str, int, bytes]] = (),
        on_sent: Callable[[], None] | None = None,
    ) -> tuple[list[str], str]:
        """Segments (+ the round's change events ``(cid, seq, JSON)`` in the outbox), atomically.

        Returns the conflicting ids and the outbox field holding the round's events (to delete
        once the others are published). ``on_sent``: called once Redis has the request (as for
        :meth:`read`).
        """
        if not plan.ids:
            return [], ""
        token = f"{time.time_ns():020d}-{os.getpid()}-{next(self._rounds)}"
        flat = [x for event in events for x in event]
        args: list[str | int | bytes] = [
            self.prefix, model_version, as_of_ms, token, _pack(plan.ids), _pack(plan.stamps),
            _pack(plan.checks), _pack(plan.changes), _pack(plan.stale),
            _pack(flat) if flat else "",
        ]  # fmt: skip
        reply = await evalsha_sent(self.redis, self._write_sha, WRITE_LUA, args, on_sent)
        return [_str(c) for c in reply], token

    # -- outbox ---------------------------------------------------------------------------------
    async def outbox(self) -> list[tuple[str, list[tuple[str, int, bytes]]]]:
        """Unpublished rounds ``(field, [(cid, seq, event JSON), ...])``, oldest round first.

        A field of the per-change layout of earlier releases (``<cid>|<seq>`` -> JSON) reads as
        a round of one.
        """
        got: dict[Any, Any] = await self.redis.hgetall(self.key("outbox"))
        raw = {_str(k): _bytes(v) for k, v in got.items()}
        out: list[tuple[str, list[tuple[str, int, bytes]]]] = []
        for name, value in raw.items():
            if name.endswith(":skip"):
                continue
            if "|" in name:
                cid, _, seq = name.rpartition("|")
                out.append((name, [(cid, int(seq), bytes(value))]))
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
    async def migrate_legacy(self) -> int:
        """Move the ``dirty`` / ``scoring:inflight`` sets of earlier releases into ``unscored``."""
        legacy = list(keys.legacy_dirty(self.prefix))
        return int(await self._migrate(keys=legacy, args=[self.prefix]))

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
        await self.redis.aclose()
