"""The Redis side of scoring: one Lua read and one Lua write per round, outbox, claims.

Keys (all under ``{prefix}:``, see docs/scoring.md):

- ``c:{<cid>}`` fields ``segment``, ``model_version``, ``segment_seq``, ``seg_as_of`` (epoch ms
  recency was computed at) beside the state fields;
- ``dirty``: customers whose state changed since they were last scored (the state script adds
  them atomically with the state); the read moves them to ``scoring:inflight`` atomically with
  reading their state (so a later change puts them back in ``dirty``), the write removes them
  from there; whatever is in either set at start-up (or every ``dirty_repair_s``) is re-scored;
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

import msgspec

from worker.redis_io import bulk_client
from worker.scoring.vectors import SEGMENT_FIELDS, STATE_FIELDS, Round, from_packed, parse
from worker.state import keys

#: One customer of a write: cid, expected seq (-1), segment, new seq (0), event JSON ('').
WriteRow = tuple[str, int, str, int, str]
_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder().decode


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _lua_list(names: Sequence[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


#: Stands for an absent state field in the read script's reply (exact in a double).
ABSENT = -(2**52)

#: ARGV: prefix, msgpack list of customer ids, msgpack list of state fields to read. Puts the
#: round's customers in ``scoring:inflight`` and takes them out of ``dirty`` (atomically with the
#: read: a state change after this read adds one to ``dirty`` again) and returns msgpack: per
#: customer ``[*those state fields as numbers (ABSENT if absent), segment or '', model_version
#: or '', segment_seq or -1]``.
#: Blobs rather than one argument per value: redis-py's per-argument encoding cost more than
#: the rest of a round.
READ_LUA = f"""
local prefix = ARGV[1]
local ids = cmsgpack.unpack(ARGV[2])
local fields = cmsgpack.unpack(ARGV[3])
local ns = #fields
fields[ns + 1], fields[ns + 2], fields[ns + 3] = {_lua_list(SEGMENT_FIELDS)}
local dirty, inflight = prefix .. ':dirty', prefix .. ':scoring:inflight'
-- dirty -> inflight for the whole round, 1000 members a call (a call per customer cost more
-- than the read itself; a customer that was not dirty only gets an extra re-score on a crash)
for s = 1, #ids, 1000 do
  local e = math.min(s + 999, #ids)
  redis.call('SADD', inflight, unpack(ids, s, e))
  redis.call('SREM', dirty, unpack(ids, s, e))
end
local out = {{}}
for i = 1, #ids do
  local cid = ids[i]
  local v = redis.call('HMGET', prefix .. ':c:{{' .. cid .. '}}', unpack(fields))
  local row = {{}}
  for j = 1, ns do
    row[j] = tonumber(v[j]) or {ABSENT}
  end
  row[ns + 1] = v[ns + 1] or ''
  row[ns + 2] = v[ns + 2] or ''
  row[ns + 3] = tonumber(v[ns + 3]) or -1
  out[i] = row
end
return cmsgpack.pack(out)
"""

#: ARGV: prefix, model version, as-of ms, msgpack list of rows ``[cid, expected seq (-1 =
#: none), new segment, new seq (0 = unchanged), event JSON or '']``. Removes each customer from
#: ``scoring:inflight``; returns the ids whose ``segment_seq`` was not the expected one (someone
#: else scored them meanwhile; they are re-queued).
WRITE_LUA = """
local prefix, version, asof = ARGV[1], ARGV[2], ARGV[3]
local rows = cmsgpack.unpack(ARGV[4])
local inflight = prefix .. ':scoring:inflight'
local outbox = prefix .. ':outbox'
local conflicts, done, entries = {}, {}, {}
for i = 1, #rows do
  local row = rows[i]
  local cid, seq, seg, nseq, ev = row[1], row[2], row[3], row[4], row[5]
  local key = prefix .. ':c:{' .. cid .. '}'
  local stored = tonumber(redis.call('HGET', key, 'segment_seq')) or -1
  -- EXISTS only where segment_seq cannot tell: a hash deleted meanwhile must not be recreated
  if stored == -1 and seq == -1 and redis.call('EXISTS', key) == 0 then
    done[#done + 1] = cid
  elseif stored ~= seq then
    conflicts[#conflicts + 1] = cid
  else
    if nseq > 0 then
      redis.call('HSET', key, 'segment', seg, 'segment_seq', nseq, 'model_version', version,
                 'seg_as_of', asof)
      entries[#entries + 1] = cid .. '|' .. nseq
      entries[#entries + 1] = ev
    else
      redis.call('HSET', key, 'model_version', version, 'seg_as_of', asof)
    end
    done[#done + 1] = cid
  end
end
-- the outbox entries and the SREMs of the round, 1000 a call
for s = 1, #entries, 2000 do
  redis.call('HSET', outbox, unpack(entries, s, math.min(s + 1999, #entries)))
end
for s = 1, #done, 1000 do
  redis.call('SREM', inflight, unpack(done, s, math.min(s + 999, #done)))
end
return conflicts
"""


class ScoringStore:
    """Async access to everything scoring keeps in Redis (see module docstring)."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.redis = bulk_client(redis_url)
        self._read = self.redis.register_script(READ_LUA)
        self._write = self.redis.register_script(WRITE_LUA)

    def key(self, suffix: str) -> str:
        return f"{self.prefix}:{suffix}"

    async def read(
        self, customer_ids: Sequence[str], fields: Sequence[str] = STATE_FIELDS
    ) -> Round:
        """The customers' state ``fields`` (others left absent) and segment fields, one trip."""
        if not customer_ids:
            return parse([], [])
        args: list[str | bytes] = [self.prefix, _pack(list(customer_ids)), _pack(list(fields))]
        blob = await self._read(keys=[], args=args)
        return from_packed(customer_ids, _unpack(blob), ABSENT, fields)

    async def write(self, model_version: str, as_of_ms: int, rows: Sequence[WriteRow]) -> list[str]:
        """Segments (+ outbox entries of changes) in one atomic call; returns conflicting ids.

        Each row: ``(cid, expected_seq or -1, segment, new_seq or 0, event JSON or "")``.
        """
        if not rows:
            return []
        args: list[str | int | bytes] = [self.prefix, model_version, as_of_ms, _pack(rows)]
        reply = await self._write(keys=[], args=args)
        return [_str(c) for c in reply]

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
        """Customers still to score: ``dirty`` and ``scoring:inflight`` (read, not written)."""
        batch: list[str] = []
        for key in (keys.dirty(self.prefix), self.key("scoring:inflight")):
            async for member in self.redis.sscan_iter(key, count=page):
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
