"""The Redis side of scoring: one Lua read and one Lua write per round, outbox, claims.

Keys (all under ``{prefix}:``, see docs/scoring.md):

- ``c:{<cid>}`` fields ``segment``, ``model_version``, ``segment_seq``, ``seg_as_of`` (epoch ms
  recency was computed at) beside the state fields;
- ``dirty``: customers whose state changed since they were last scored (the state script adds
  them atomically with the state; the write below removes them only if the state it scored is
  still the stored one);
- ``outbox``: hash ``<cid>|<seq>`` -> SegmentChange JSON, written atomically with the new
  segment and deleted once the broker acknowledged the event (at-least-once publication);
- ``online:<version>``: the online model's state (JSON); ``scoring``: status hash (model
  version, drift, updated time);
- ``rescore:request`` / ``rescore:claim:<token>`` and ``drift:notice:<version>`` /
  ``retrain:lock``: once-only claims (``SET NX EX``) shared by every worker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import redis.asyncio as aioredis

from worker.scoring.vectors import READ_FIELDS, STATE_FIELDS, Round, parse
from worker.state import keys


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _lua_list(names: Sequence[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


READ_LUA = f"""
local prefix = ARGV[1]
local out = {{}}
for i = 2, #ARGV do
  local key = prefix .. ':c:{{' .. ARGV[i] .. '}}'
  out[#out + 1] = redis.call('HMGET', key, {_lua_list(READ_FIELDS)})
end
return out
"""

#: ARGV: prefix, model version, as-of ms, n, then n x (cid, signature, expected seq or '',
#: new segment, new seq or '' when unchanged, event JSON or ''). Returns the conflicting ids.
WRITE_LUA = f"""
local prefix, version, asof = ARGV[1], ARGV[2], ARGV[3]
local n = tonumber(ARGV[4])
local dirty = prefix .. ':dirty'
local outbox = prefix .. ':outbox'
local state_fields = {{{_lua_list(STATE_FIELDS)}}}
local conflicts = {{}}
local i = 5
for _ = 1, n do
  local cid, sig, seq = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local seg, nseq, ev = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  i = i + 6
  local key = prefix .. ':c:{{' .. cid .. '}}'
  if redis.call('EXISTS', key) == 0 then
    redis.call('SREM', dirty, cid)
  elseif (redis.call('HGET', key, 'segment_seq') or '') ~= seq then
    conflicts[#conflicts + 1] = cid
  else
    if nseq ~= '' then
      redis.call('HSET', key, 'segment', seg, 'segment_seq', nseq)
      redis.call('HSET', outbox, cid .. '|' .. nseq, ev)
    end
    redis.call('HSET', key, 'model_version', version, 'seg_as_of', asof)
    local now = redis.call('HMGET', key, unpack(state_fields))
    local parts = {{}}
    for j = 1, #state_fields do
      parts[j] = now[j] or ''
    end
    if table.concat(parts, ',') == sig then
      redis.call('SREM', dirty, cid)
    end
  end
end
return conflicts
"""


class ScoringStore:
    """Async access to everything scoring keeps in Redis (see module docstring)."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.redis = aioredis.Redis.from_url(redis_url)
        self._read = self.redis.register_script(READ_LUA)
        self._write = self.redis.register_script(WRITE_LUA)

    def key(self, suffix: str) -> str:
        return f"{self.prefix}:{suffix}"

    async def read(self, customer_ids: Sequence[str]) -> Round:
        """Every customer's state and segment fields in one round trip."""
        if not customer_ids:
            return parse([], [])
        replies = await self._read(keys=[], args=[self.prefix, *customer_ids])
        return parse(customer_ids, replies)

    async def write(
        self, model_version: str, as_of_ms: int, rows: Sequence[tuple[str, ...]]
    ) -> list[str]:
        """Segments (+ outbox entries of changes) in one atomic call; returns conflicting ids.

        Each row: ``(cid, signature, expected_seq, segment, new_seq, event_json)`` as strings.
        """
        if not rows:
            return []
        args: list[Any] = [self.prefix, model_version, as_of_ms, len(rows)]
        for row in rows:
            args.extend(row)
        reply = await self._write(keys=[], args=args)
        return [c.decode() if isinstance(c, bytes) else str(c) for c in reply]

    # -- outbox ---------------------------------------------------------------------------------
    async def outbox(self) -> list[tuple[str, int, bytes]]:
        """Unpublished changes ``(cid, seq, event JSON)``, oldest seq first per customer."""
        raw: dict[Any, Any] = await self.redis.hgetall(self.key("outbox"))
        out: list[tuple[str, int, bytes]] = []
        for field, value in raw.items():
            cid, _, seq = _str(field).rpartition("|")
            out.append((cid, int(seq), bytes(value)))
        return sorted(out, key=lambda t: (t[1], t[0]))

    async def outbox_done(self, entries: Sequence[tuple[str, int]]) -> None:
        if entries:
            await self.redis.hdel(self.key("outbox"), *(f"{c}|{s}" for c, s in entries))

    # -- dirty set and customers ----------------------------------------------------------------
    async def dirty_pages(self, page: int = 1000) -> AsyncIterator[list[str]]:
        batch: list[str] = []
        async for member in self.redis.sscan_iter(keys.dirty(self.prefix), count=page):
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
