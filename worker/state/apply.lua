-- segstream: apply one batch of events to the customer state, atomically and exactly once.
--
-- Called with EVALSHA, no KEYS (every key is built from the prefix; this script targets a single
-- Redis primary). ARGV:
--   1 prefix   2 max fingerprints per customer   3 number of partitions N
--   then N times: topic, partition, high offset, dead-lettered count (-1 = given as records)
--   then the number of customer groups M, then M times: customer id ('' = no customer), blob
-- A blob is a run of 64-byte little-endian records (see worker/state/store.py RECORD):
--   kind u8, click u8, partition index u16, offset i64, event time ms i64, amount cents i64,
--   items i32, fingerprint, session fingerprint, marker fingerprint, partner fingerprint (8 bytes)
-- A record at or below its partition's fence (the last applied offset, stored with the state)
-- is skipped; so is an event whose fingerprint the customer already holds.
-- Hash field names are worker.core.rfm.HASH_FIELDS (short: they repeat in every customer).
-- Returns {applied, duplicates, changed customer ids...}.
local prefix = ARGV[1]
local max_fp = tonumber(ARGV[2])
local ntp = tonumber(ARGV[3])
local REC, FMT = 64, '<BBHi8i8i8i4c8c8c8c8'
local PLACED, CANCELLED, RETURNED, CLICK, DEAD = 1, 2, 3, 4, 5
local PAGE_VIEW, PRODUCT_VIEW, ADD_TO_CART, CHECKOUT_START = 1, 2, 3, 6
local LO_BUCKET_MS = 3600000

local function int(n) return string.format('%d', n) end

local fence, high, tp_key, tp_field = {}, {}, {}, {}
local c = {received = 0, valid = 0, dead_lettered = 0, applied = 0, fenced = 0, deduped = 0,
           anonymous = 0}
local i = 4
for t = 1, ntp do
  tp_key[t] = prefix .. ':fence:' .. ARGV[i]
  tp_field[t] = ARGV[i + 1]
  local f = redis.call('HGET', tp_key[t], tp_field[t])
  fence[t] = f and tonumber(f) or -1
  high[t] = tonumber(ARGV[i + 2])
  local dl = tonumber(ARGV[i + 3])
  if dl > 0 and high[t] > fence[t] then c.dead_lettered = c.dead_lettered + dl end
  i = i + 4
end

-- true when fp is one of the 8-byte-aligned fingerprints in s
local function holds(s, fp)
  local init = 1
  while true do
    local p = string.find(s, fp, init, true)
    if not p then return false end
    if (p - 1) % 8 == 0 then return true end
    init = p + 1
  end
end

local changed = {}
local ngroups = tonumber(ARGV[i]); i = i + 1
for g = 1, ngroups do
  local cid, blob = ARGV[i], ARGV[i + 1]
  i = i + 2
  local n = #blob / REC
  if cid == '' then
    for r = 0, n - 1 do
      local kind, _, tp, off = struct.unpack('<BBHi8', blob, r * REC + 1)
      if off <= fence[tp] then c.fenced = c.fenced + 1
      elseif kind == DEAD then c.dead_lettered = c.dead_lettered + 1
      else c.valid = c.valid + 1; c.anonymous = c.anonymous + 1 end
    end
  else
    local hkey = prefix .. ':c:{' .. cid .. '}'
    local fkey = prefix .. ':f:{' .. cid .. '}'
    local cur = redis.call('HMGET', hkey, 't0', 't1', 'ts', 'fp')
    local first, last, seen = tonumber(cur[1]), tonumber(cur[2]), tonumber(cur[3])
    local first0, last0, seen0 = first, last, seen
    local old, in_key = cur[4], false
    if not old then
      old = redis.call('GET', fkey)
      if old then in_key = true else old = '' end
    end
    local new, added = {}, {}
    local function has(fp) return new[fp] or holds(old, fp) end
    local function add(fp) new[fp] = true; added[#added + 1] = fp end
    local d = {}
    local function bump(f, by) d[f] = (d[f] or 0) + by end
    local applied = 0
    for r = 0, n - 1 do
      local kind, click, tp, off, ms, amount, items, fp, sfp, mfp, pfp =
        struct.unpack(FMT, blob, r * REC + 1)
      if off <= fence[tp] then
        c.fenced = c.fenced + 1
      else
        c.valid = c.valid + 1
        if has(fp) then
          c.deduped = c.deduped + 1
        else
          add(fp)
          applied = applied + 1
          if not seen or ms > seen then seen = ms end
          if kind == PLACED then
            bump('f', 1); bump('m', amount); bump('i', items)
            if not first or ms < first then first = ms end
            if not last or ms > last then last = ms end
          elseif kind == CANCELLED then
            bump('f', -1); bump('m', -amount); bump('i', -items)
          elseif kind == RETURNED then
            bump('m', -amount); bump('i', -items)
          else
            if not has(sfp) then add(sfp); bump('s', 1) end
            if click == PAGE_VIEW then bump('pv', 1)
            elseif click == PRODUCT_VIEW then bump('iv', 1)
            elseif click == ADD_TO_CART or click == CHECKOUT_START then
              bump(click == ADD_TO_CART and 'ac' or 'co', 1)
              if not has(mfp) then
                add(mfp)
                if click == ADD_TO_CART then bump('cs', 1) end
                if has(pfp) then bump('cc', 1) end
              end
            end
          end
        end
      end
    end
    if applied > 0 then
      c.applied = c.applied + applied
      changed[#changed + 1] = cid
      for f, by in pairs(d) do
        if by ~= 0 then redis.call('HINCRBY', hkey, f, int(by)) end
      end
      local set = {}
      if first ~= first0 then set[#set + 1] = 't0'; set[#set + 1] = int(first) end
      if last ~= last0 then
        set[#set + 1] = 't1'; set[#set + 1] = int(last)
        -- the sweep index: one sorted set per hour of last order time (see worker/state/keys.py)
        local bucket = math.floor(last / LO_BUCKET_MS)
        if last0 and math.floor(last0 / LO_BUCKET_MS) ~= bucket then
          redis.call('ZREM', prefix .. ':lo:' .. int(math.floor(last0 / LO_BUCKET_MS)), cid)
        end
        redis.call('ZADD', prefix .. ':lo:' .. int(bucket), int(last), cid)
      end
      if seen ~= seen0 then set[#set + 1] = 'ts'; set[#set + 1] = int(seen) end
      local fps = old .. table.concat(added)
      if #fps > max_fp * 8 then fps = string.sub(fps, #fps - max_fp * 8 + 1) end
      -- Up to 8 fingerprints live in the hash (a small hash stays a compact listpack while its
      -- values are <= 64 bytes); more move to their own string key.
      if not in_key and #fps <= 64 then
        set[#set + 1] = 'fp'; set[#set + 1] = fps
      else
        redis.call('SET', fkey, fps)
        if not in_key then redis.call('HDEL', hkey, 'fp') end
      end
      if #set > 0 then redis.call('HSET', hkey, unpack(set)) end
    end
  end
end

for t = 1, ntp do
  if high[t] > fence[t] then redis.call('HSET', tp_key[t], tp_field[t], int(high[t])) end
end
c.received = c.valid + c.dead_lettered
c.duplicates = c.fenced + c.deduped
local ckey = prefix .. ':counters'
for name, v in pairs(c) do
  if v ~= 0 then redis.call('HINCRBY', ckey, name, int(v)) end
end
for s = 1, #changed, 1000 do
  redis.call('SADD', prefix .. ':dirty', unpack(changed, s, math.min(s + 999, #changed)))
end
local out = {c.applied, c.duplicates}
for k = 1, #changed do out[#out + 1] = changed[k] end
return out
