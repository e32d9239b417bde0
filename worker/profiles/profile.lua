-- segstream: apply one batch of customer-profile updates to one space, atomically, exactly once.
--
-- Called with EVALSHA; on a cluster KEYS[1] is a key of the space's slot (for routing only),
-- every key is built from the space (ARGV[1]), so one call touches one space. ARGV:
--   1 space   2 number of partitions N
--   then N times: topic, partition, high offset (the fence moves to it)
--   then the number of dead-lettered records D, then D times: partition index, offset
--   then the number of updates U, then U times (11 arguments):
--     customer id, partition index, offset, event time (epoch ms), then one argument per
--     profile attribute in worker.core.attributes.PROFILE_FIELDS order (pc pr pb pg ps pl pm):
--     '' absent (no change), '-' clear, '=' .. text set to text
-- Exactly once: {space}:pfence:<topic> (hash partition -> last applied offset) is read first and
-- written with the state; an update or a dead letter at or below it is skipped (counted as
-- fenced). The merge itself is idempotent, so an update applied again with a new offset (a
-- replay) changes nothing either: per attribute the stored (time, value) becomes the larger of
-- the stored and the new pair, by event time then by the value's bytes (absent/cleared = ''),
-- and a clear that wins writes its time and deletes the value field. Times live in the field
-- 'pt' (worker/core/attributes.py), 8 base-36 digits of epoch ms per time, in two forms, both
-- read: compact (10 characters: the one time every written attribute has, then 2 hex digits,
-- the mask of those attributes, bit k-1 = FIELDS[k]) whenever every written attribute has the
-- same time; else full (56 characters: 7 times in FIELDS order, '00000000' = never written).
-- It is written compact whenever that is exact, so the stored text depends only on the times.
-- Forgotten customers: an update stamped at or before {space}:x:{<id>} (the erasure time,
-- written by worker/erase/forget.lua) is dropped and counted as suppressed, as apply.lua does.
-- A customer whose stored values changed and who has behaviour state ('ts') is marked for
-- scoring like apply.lua marks them (INCR {space}:stamp, HSET {space}:unscored id stamp); a
-- customer known only by their profile has nothing to score yet.
-- Counters (HINCRBY {space}:counters): profiles_received, profiles_dead_lettered,
-- profiles_applied (merged: received = applied + suppressed + dead_lettered, above the fence),
-- profiles_suppressed, profiles_fenced, profiles_changed (updates that changed a stored value).
-- Returns {applied, fenced, suppressed, changed updates, stamp, marked customer ids...}.
-- Everything is read before anything is written: a key of the wrong type fails the call whole.
local space = ARGV[1]
local ntp = tonumber(ARGV[2])
local FIELDS = {'pc', 'pr', 'pb', 'pg', 'ps', 'pl', 'pm'}
local NF, DIGITS, PER = 7, 8, 11
local COMPACT = DIGITS + 2
local B36 = '0123456789abcdefghijklmnopqrstuvwxyz'

local function int(n) return string.format('%d', n) end

local function expect(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then
    error('segstream state key ' .. key .. ' holds a ' .. t .. ', expected a ' .. want)
  end
end

-- a > b comparing bytes (Lua's own string comparison follows the server's locale)
local function greater(a, b)
  local n = math.min(#a, #b)
  for k = 1, n do
    local x, y = string.byte(a, k), string.byte(b, k)
    if x ~= y then return x > y end
  end
  return #a > #b
end

local function encode_time(ms)
  local out = {}
  for k = DIGITS, 1, -1 do
    local r = ms % 36
    out[k] = string.sub(B36, r + 1, r + 1)
    ms = (ms - r) / 36
  end
  return table.concat(out)
end

-- 'pt', either form -> the 7 times (0 = never written)
local function decode_times(pt)
  local t = {}
  if #pt == COMPACT then
    local ms, mask = tonumber(string.sub(pt, 1, DIGITS), 36) or 0,
                     tonumber(string.sub(pt, DIGITS + 1), 16) or 0
    for k = 1, NF do
      t[k] = (mask % 2 == 1) and ms or 0
      mask = (mask - mask % 2) / 2
    end
  else
    for k = 1, NF do
      local chunk = string.sub(pt, (k - 1) * DIGITS + 1, k * DIGITS)
      t[k] = (#chunk == DIGITS and tonumber(chunk, 36)) or 0
    end
  end
  return t
end

-- the 7 times -> 'pt': compact when every written attribute has the same time, else full
local function encode_times(t)
  local one, mask, bit = nil, 0, 1
  for k = 1, NF do
    if t[k] ~= 0 then
      if one == nil then one = t[k] elseif one ~= t[k] then one = false end
      mask = mask + bit
    end
    bit = bit * 2
  end
  if one then return encode_time(one) .. string.format('%02x', mask) end
  local out = {}
  for k = 1, NF do out[k] = encode_time(t[k]) end
  return table.concat(out)
end

-- read phase ------------------------------------------------------------------------------------
local fence, high, fkey, ffield = {}, {}, {}, {}
local i = 3
for t = 1, ntp do
  fkey[t] = space .. ':pfence:' .. ARGV[i]
  ffield[t] = ARGV[i + 1]
  local f = redis.call('HGET', fkey[t], ffield[t])
  fence[t] = f and tonumber(f) or -1
  high[t] = tonumber(ARGV[i + 2])
  i = i + 3
end
local counters = space .. ':counters'
expect(counters, 'hash')
expect(space .. ':unscored', 'hash')
expect(space .. ':stamp', 'string')

local c = {profiles_received = 0, profiles_dead_lettered = 0, profiles_applied = 0,
           profiles_suppressed = 0, profiles_fenced = 0, profiles_changed = 0}
local ndead = tonumber(ARGV[i]); i = i + 1
for d = 1, ndead do
  local tp, off = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  if off > fence[tp] then c.profiles_dead_lettered = c.profiles_dead_lettered + 1
  else c.profiles_fenced = c.profiles_fenced + 1 end
  i = i + 2
end

local nrec = tonumber(ARGV[i]); i = i + 1
local first = i
-- the customers of the batch, in first-seen order, and their stored profile
local order, state = {}, {}
for r = 1, nrec do
  local cid = ARGV[first + (r - 1) * PER]
  if not state[cid] then
    local hkey = space .. ':c:{' .. cid .. '}'
    local cur = redis.call('HMGET', hkey, 'pc', 'pr', 'pb', 'pg', 'ps', 'pl', 'pm', 'pt', 'ts')
    local s = {key = hkey, v = {}, v0 = {}, t = {}, t0 = {}, seen = cur[NF + 2], touched = false}
    s.t = decode_times(cur[NF + 1] or '')
    for k = 1, NF do
      s.v[k] = cur[k] or ''
      s.v0[k] = s.v[k]
      s.t0[k] = s.t[k]
    end
    state[cid] = s
    order[#order + 1] = cid
  end
end
-- forgotten customers (as in apply.lua): one EXISTS while no erasure is live
local floor_of = {}
if redis.call('EXISTS', space .. ':x:until') == 1 and #order > 0 then
  for s = 1, #order, 1000 do
    local xkeys = {}
    for k = s, math.min(s + 999, #order) do xkeys[#xkeys + 1] = space .. ':x:{' .. order[k] .. '}' end
    local got = redis.call('MGET', unpack(xkeys))
    for j = 1, #got do
      if got[j] then floor_of[order[s + j - 1]] = tonumber(got[j]) end
    end
  end
end

-- merge (in memory) ------------------------------------------------------------------------------
for r = 1, nrec do
  local base = first + (r - 1) * PER
  local cid, tp, off, ms = ARGV[base], tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]),
                           tonumber(ARGV[base + 3])
  if off <= fence[tp] then
    c.profiles_fenced = c.profiles_fenced + 1
  elseif floor_of[cid] and ms <= floor_of[cid] then
    c.profiles_suppressed = c.profiles_suppressed + 1
  else
    c.profiles_applied = c.profiles_applied + 1
    local s, won = state[cid], false
    for k = 1, NF do
      local a = ARGV[base + 3 + k]
      if a ~= '' then
        local x = (a == '-') and '' or string.sub(a, 2)
        if ms > s.t[k] or (ms == s.t[k] and greater(x, s.v[k])) then
          if x ~= s.v[k] then won = true end
          s.t[k], s.v[k] = ms, x
          s.touched = true
        end
      end
    end
    if won then c.profiles_changed = c.profiles_changed + 1 end
  end
end

-- write phase: the first write is HINCRBY (deny-oom), so out of memory fails before any change
c.profiles_received = c.profiles_applied + c.profiles_suppressed + c.profiles_dead_lettered
redis.call('HINCRBY', counters, 'profiles_received', c.profiles_received)
local marked = {}
for _, cid in ipairs(order) do
  local s = state[cid]
  if s.touched then
    local set, del, changed = {}, {}, false
    for k = 1, NF do
      if s.v[k] ~= s.v0[k] then
        changed = true
        if s.v[k] == '' then del[#del + 1] = FIELDS[k]
        else set[#set + 1] = FIELDS[k]; set[#set + 1] = s.v[k] end
      end
    end
    set[#set + 1] = 'pt'; set[#set + 1] = encode_times(s.t)
    redis.call('HSET', s.key, unpack(set))
    if #del > 0 then redis.call('HDEL', s.key, unpack(del)) end
    if changed and s.seen then marked[#marked + 1] = cid end
  end
end
for t = 1, ntp do
  if high[t] > fence[t] then redis.call('HSET', fkey[t], ffield[t], int(high[t])) end
end
for name, v in pairs(c) do
  if v ~= 0 and name ~= 'profiles_received' then redis.call('HINCRBY', counters, name, int(v)) end
end
local stamp = 0
if #marked > 0 then
  stamp = redis.call('INCR', space .. ':stamp')
  local pairs_ = {}
  for k = 1, #marked do pairs_[#pairs_ + 1] = marked[k]; pairs_[#pairs_ + 1] = stamp end
  redis.call('HSET', space .. ':unscored', unpack(pairs_))
end
local out = {c.profiles_applied, c.profiles_fenced, c.profiles_suppressed, c.profiles_changed,
             stamp}
for k = 1, #marked do out[#out + 1] = marked[k] end
return out
