-- segstream: forget one customer (GDPR erasure), atomically: every key of theirs, their entries
-- in the shared indexes, their segment changes not yet published, and a suppression entry.
--
-- Called with EVALSHA, no KEYS (every key is built from the prefix, like the state script; this
-- script targets a single Redis primary: docs/forget.md says what a cluster would need). ARGV:
--   1 prefix   2 customer id   3 erasure time (epoch ms)   4 how long the suppression lasts (ms)
--   5.. the per-customer key families ('c', 'f', ...: key = prefix:<family>:{<customer id>})
-- Writes, in one atomic call:
--   * DEL of every per-customer key (the state hash, the fingerprints, any later family);
--   * HDEL of the customer's {prefix}:unscored entry (scoring takes an unchanged stamp as proof
--     that the hash it read is still there: the hash and the entry go together);
--   * ZREM from the sweep-index bucket of the customer's last order (t1 of the hash);
--   * the customer's change events out of every {prefix}:outbox round (and out of the rounds'
--     skip lists), so a worker that restarts never publishes them (the entries are msgpack
--     arrays holding bin values, which Redis's cmsgpack cannot decode: they are walked below);
--   * {prefix}:x:{<customer id>} = the erasure time, expiring after ARGV[4] ms: the state script
--     drops the customer's events stamped at or before it (a replay of their old events);
--   * {prefix}:x:until, expiring no earlier than any suppression entry (the state script reads
--     no suppression entry while it is absent);
--   * counters: erasures + 1, forgotten + 1 when anything of the customer was stored.
-- Returns {1 if anything was stored else 0, outbox rounds that held the customer...}: the caller
-- publishes the tombstone only once those rounds are published (or given up on), so no change
-- event of the customer reaches the topic after it.
-- Everything is read before anything is written: a key of the wrong type fails the call whole.
local prefix, cid = ARGV[1], ARGV[2]
local now_ms, keep_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local tag = '{' .. cid .. '}'
local hkey = prefix .. ':c:' .. tag
local outbox = prefix .. ':outbox'
local unscored = prefix .. ':unscored'
local xkey = prefix .. ':x:' .. tag
local ukey = prefix .. ':x:until'

local function int(n) return string.format('%d', n) end

-- The outbox holds msgpack arrays written by Python (strings, integers, and *bin* values, which
-- the cmsgpack of Redis cannot decode), so they are walked here: elements are copied byte for
-- byte, never re-encoded. Returns the byte offsets of the array's elements (and the end).
local function msgpack_elements(s)
  local b, pos, n = string.byte(s, 1), 2, 0
  if b >= 0x90 and b <= 0x9f then n = b - 0x90
  elseif b == 0xdc then n, pos = struct.unpack('>H', s, 2)
  elseif b == 0xdd then n, pos = struct.unpack('>I', s, 2)
  else error('segstream outbox entry is not a msgpack array') end
  local starts = {}
  for e = 1, n do
    starts[e] = pos
    local t = string.byte(s, pos)
    if t <= 0x7f or t >= 0xe0 or t == 0xc0 or t == 0xc2 or t == 0xc3 then pos = pos + 1
    elseif t >= 0xa0 and t <= 0xbf then pos = pos + 1 + (t - 0xa0)
    elseif t == 0xd9 or t == 0xc4 then pos = pos + 2 + string.byte(s, pos + 1)
    elseif t == 0xda or t == 0xc5 then pos = pos + 3 + struct.unpack('>H', s, pos + 1)
    elseif t == 0xdb or t == 0xc6 then pos = pos + 5 + struct.unpack('>I', s, pos + 1)
    elseif t == 0xcc or t == 0xd0 then pos = pos + 2
    elseif t == 0xcd or t == 0xd1 then pos = pos + 3
    elseif t == 0xce or t == 0xd2 or t == 0xca then pos = pos + 5
    elseif t == 0xcf or t == 0xd3 or t == 0xcb then pos = pos + 9
    else error('segstream outbox entry holds an unexpected msgpack type ' .. t) end
  end
  starts[n + 1] = pos
  return starts, n
end

-- the string at byte offset pos (nil if the element there is not a msgpack str)
local function msgpack_str(s, pos)
  local t = string.byte(s, pos)
  if t >= 0xa0 and t <= 0xbf then return string.sub(s, pos + 1, pos + t - 0xa0) end
  local len, from
  if t == 0xd9 then len, from = string.byte(s, pos + 1), pos + 2
  elseif t == 0xda then len, from = struct.unpack('>H', s, pos + 1)
  elseif t == 0xdb then len, from = struct.unpack('>I', s, pos + 1)
  else return nil end
  return string.sub(s, from, from + len - 1)
end

local function msgpack_array(n)
  if n <= 15 then return string.char(0x90 + n) end
  if n <= 65535 then return string.char(0xdc) .. struct.pack('>H', n) end
  return string.char(0xdd) .. struct.pack('>I', n)
end

-- read phase ------------------------------------------------------------------------------------
local t1 = redis.call('HGET', hkey, 't1')
local doomed = {}
for k = 5, #ARGV do doomed[#doomed + 1] = prefix .. ':' .. ARGV[k] .. ':' .. tag end
local stored = redis.call('EXISTS', unpack(doomed))
local owed = redis.call('HMGET', unscored, cid)[1]
local old_floor = tonumber(redis.call('GET', xkey) or '0') or 0
local until_s = redis.call('TTL', ukey)  -- -2: absent

-- the outbox rounds holding the customer, rewritten without them (the plain string.find skips
-- the msgpack decoding of every round that cannot hold them)
local rewritten, emptied, rounds = {}, {}, {}
local t = redis.call('TYPE', outbox)['ok']
if t == 'hash' then
  local all = redis.call('HGETALL', outbox)
  for j = 1, #all, 2 do
    local field, value = all[j], all[j + 1]
    if string.find(value, cid, 1, true) then
      -- a round is [cid, seq, event, cid, seq, event, ...]; its skip list [cid, cid, ...]
      local starts, n = msgpack_elements(value)
      local skip = string.sub(field, -5) == ':skip'
      local step = skip and 1 or 3
      local kept, nkept, hit = {}, 0, false
      for e = 1, n, step do
        if msgpack_str(value, starts[e]) == cid then
          hit = true
        else
          kept[#kept + 1] = string.sub(value, starts[e], starts[e + step] - 1)
          nkept = nkept + step
        end
      end
      if hit then
        if nkept == 0 then
          emptied[#emptied + 1] = field
        else
          rewritten[#rewritten + 1] = field
          rewritten[#rewritten + 1] = msgpack_array(nkept) .. table.concat(kept)
        end
        if not skip then rounds[#rounds + 1] = field end
      end
    end
  end
elseif t ~= 'none' then
  error('segstream key ' .. outbox .. ' holds a ' .. t .. ', expected a hash')
end

-- write phase -----------------------------------------------------------------------------------
-- the first write is HINCRBY (deny-oom): out of memory fails the call before anything changed
local existed = (stored > 0 or owed or #rounds > 0) and 1 or 0
local counters = prefix .. ':counters'
redis.call('HINCRBY', counters, 'erasures', 1)
if existed == 1 then redis.call('HINCRBY', counters, 'forgotten', 1) end
redis.call('DEL', unpack(doomed))
if owed then redis.call('HDEL', unscored, cid) end
if t1 and tonumber(t1) then
  local bucket = prefix .. ':lo:' .. int(math.floor(tonumber(t1) / 3600000))
  local ok = redis.pcall('ZREM', bucket, cid)
  if type(ok) == 'table' and ok.err then
    redis.log(redis.LOG_WARNING, 'segstream: forget: sweep index ' .. bucket .. ': ' .. ok.err)
  end
end
if #emptied > 0 then redis.call('HDEL', outbox, unpack(emptied)) end
if #rewritten > 0 then redis.call('HSET', outbox, unpack(rewritten)) end
local floor = math.max(old_floor, now_ms)
redis.call('SET', xkey, int(floor), 'PX', int(keep_ms))
-- every suppression entry expires within keep_ms (Redis's clock), and so does this one
if until_s * 1000 < keep_ms then redis.call('SET', ukey, '1', 'PX', int(keep_ms)) end
local out = {existed}
for k = 1, #rounds do out[#out + 1] = rounds[k] end
return out
