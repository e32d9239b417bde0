-- segstream: drain one space's applied purchase lines into its recommendation counts.
--
-- Called with EVALSHA; on a cluster KEYS[1] is a key of the space's slot (routing only); every
-- key is built from the space (ARGV[1]), so one call touches one space. ARGV:
--   1 space   2 half-life (ms)   3 skus kept per segment (M)
-- Input: the list {space}:rbox, one msgpack blob per state script call that applied placed
-- orders (worker/state/apply.lua writes it with the state): flat (batch position, the
-- customer's stored segment or '', event time (epoch ms), member "<category>,<sku>", units)
-- per line. The call takes every blob and deletes the list, so each line is counted once: the
-- state script's fence and fingerprints decided which orders were applied, and a blob left by
-- a worker that died before draining is counted by the next drain of the space.
-- Counts (worker/recommend/decay.py has the same rule in Python): a line of u units at time t
-- adds u * 2^((t - L) / H) to its member in {space}:rpop (the shop) and, when the segment is
-- not '', in {space}:rpop:<segment>, blob by blob and, within a blob, in batch order. L, the
-- landmark, is {space}:rmeta field 'L' (set to the earliest time drained first, floored to H);
-- once the newest time is more than 32 half-lives past it, L moves forward by whole half-lives
-- and every count of the space is scaled by the matching power of two. {space}:rmeta also
-- holds 'T' (the newest event time) and a field 's:<segment>' per segment with counts. Each
-- set touched is trimmed to its M highest members (ties: the lowest member goes first).
-- Counters (HINCRBY {space}:counters): recommend_purchases (orders counted), recommend_bad_lines
-- (lines of a blob this script did not write: skipped, logged; whatever else wrote to the list
-- cannot stop the counts). Returns {orders}.
-- Everything is read before anything is written: a recommendation key of the wrong type fails
-- the call whole, worded as the state script words a shared key, so the consumer waits it out
-- as an outage until the key is deleted, as ingestion does; the blobs stay for the next drain.
local space = ARGV[1]
local H, M = tonumber(ARGV[2]), tonumber(ARGV[3])
local SPAN = 32

local function expect(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then
    error('segstream state key ' .. key .. ' holds a ' .. t .. ', expected a ' .. want)
  end
end
local function num(x) return string.format('%.17g', x) end
local function whole(x, lo, hi) return type(x) == 'number' and x == math.floor(x) and x >= lo and x <= hi end
-- a line as the state script writes it: position, segment, time (epoch ms), member, units
local function line_at(t, p)
  return whole(t[p], 0, 2 ^ 31) and type(t[p + 1]) == 'string' and whole(t[p + 2], 0, 2 ^ 53)
    and type(t[p + 3]) == 'string' and whole(t[p + 4], 1, 2 ^ 31)
end

-- read phase -----------------------------------------------------------------------------------
local box = space .. ':rbox'
expect(box, 'list')
local blobs = redis.call('LRANGE', box, 0, -1)
if #blobs == 0 then return {0} end
-- (a list of something else than this script's blobs is skipped below, line by line)
local meta, shop, counters = space .. ':rmeta', space .. ':rpop', space .. ':counters'
expect(meta, 'hash')
expect(shop, 'zset')
expect(counters, 'hash')

-- every line, blob by blob, each blob's lines in batch order: lines (flat: segment, time,
-- member, units)
local lines, n = {}, 0
local tmin, tmax
local checked, orders = {}, 0
local bad = 0
for b = 1, #blobs do
  local ok, t = pcall(cmsgpack.unpack, blobs[b])
  if not ok or type(t) ~= 'table' then t = {}; bad = bad + 1 end
  local at = {}
  for p = 1, #t - 4, 5 do
    if line_at(t, p) then
      at[#at + 1] = p
    else
      bad = bad + 1
    end
  end
  if #t % 5 ~= 0 then bad = bad + 1 end
  -- stable: lines of one record keep their order (their positions are equal)
  table.sort(at, function(x, y) if t[x] ~= t[y] then return t[x] < t[y] end return x < y end)
  local last
  for _, p in ipairs(at) do
    local seg, ms = t[p + 1], t[p + 2]
    if t[p] ~= last then orders = orders + 1; last = t[p] end
    if seg ~= '' and not checked[seg] then expect(space .. ':rpop:' .. seg, 'zset'); checked[seg] = true end
    if not tmin or ms < tmin then tmin = ms end
    if not tmax or ms > tmax then tmax = ms end
    lines[n + 1], lines[n + 2], lines[n + 3], lines[n + 4] = seg, ms, t[p + 3], t[p + 4]
    n = n + 4
  end
end
if bad > 0 then
  redis.log(redis.LOG_WARNING, 'segstream: ' .. box .. ' held ' .. bad ..
            ' entries the state script did not write; skipped (recommend_bad_lines)')
end
if n == 0 then  -- nothing countable: the list goes, the skipped entries are counted
  redis.call('DEL', box)
  if bad > 0 then redis.call('HINCRBY', counters, 'recommend_bad_lines', bad) end
  return {0}
end
local L = tonumber(redis.call('HGET', meta, 'L') or '')
local T = tonumber(redis.call('HGET', meta, 'T') or '')
local segments = {}
local all = redis.call('HGETALL', meta)
for k = 1, #all, 2 do
  local f = all[k]
  if string.sub(f, 1, 2) == 's:' then segments[#segments + 1] = string.sub(f, 3) end
end

-- write phase ----------------------------------------------------------------------------------
local function zadd_all(key, pairs_)  -- pairs_ = {score, member, score, member, ...}
  for s = 1, #pairs_, 2000 do
    redis.call('ZADD', key, unpack(pairs_, s, math.min(s + 1999, #pairs_)))
  end
end

if not L then L = H * math.floor(tmin / H) end
if tmax - L > SPAN * H then
  local moved = L + H * math.floor((tmax - L) / H)
  local factor = 2 ^ ((L - moved) / H)
  local keys = {shop}
  for _, s in ipairs(segments) do keys[#keys + 1] = space .. ':rpop:' .. s end
  for _, key in ipairs(keys) do
    local raw = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
    local scaled = {}
    for k = 1, #raw, 2 do
      scaled[#scaled + 1] = num(tonumber(raw[k + 1]) * factor)
      scaled[#scaled + 1] = raw[k]
    end
    if #scaled > 0 then zadd_all(key, scaled) end
  end
  L = moved
end
-- the increments, summed per key and member in the order ZADD INCR would add them (so the
-- scores are the same to the last bit), then one ZMSCORE and one ZADD per key touched
local touched, names, order = {}, {}, {}
local function add(key, member, w)
  local inc = touched[key]
  if not inc then inc = {}; touched[key] = inc; order[key] = {} end
  if inc[member] == nil then inc[member] = {}; order[key][#order[key] + 1] = member end
  local ws = inc[member]
  ws[#ws + 1] = w
end
for p = 1, n, 4 do
  local seg, member = lines[p], lines[p + 2]
  local w = lines[p + 3] * 2 ^ ((lines[p + 1] - L) / H)
  add(shop, member, w)
  if seg ~= '' then
    names[seg] = true
    add(space .. ':rpop:' .. seg, member, w)
  end
end
for key, inc in pairs(touched) do
  local members, pairs_ = order[key], {}
  for s = 1, #members, 2000 do
    local last = math.min(s + 1999, #members)
    local old = redis.call('ZMSCORE', key, unpack(members, s, last))
    for k = s, last do
      local score = tonumber(old[k - s + 1]) or 0
      for _, w in ipairs(inc[members[k]]) do score = score + w end
      pairs_[#pairs_ + 1] = num(score)
      pairs_[#pairs_ + 1] = members[k]
    end
  end
  zadd_all(key, pairs_)
end
for key in pairs(touched) do
  local count = redis.call('ZCARD', key)
  if count > M then
    local low = redis.call('ZRANGE', key, 0, count - M - 1)
    for s = 1, #low, 2000 do
      redis.call('ZREM', key, unpack(low, s, math.min(s + 1999, #low)))
    end
  end
end
local fields = {'L', string.format('%d', L), 'T', string.format('%d', (T and T > tmax) and T or tmax)}
for seg in pairs(names) do fields[#fields + 1] = 's:' .. seg; fields[#fields + 1] = '1' end
redis.call('HSET', meta, unpack(fields))
redis.call('DEL', box)
redis.call('HINCRBY', counters, 'recommend_purchases', orders)
if bad > 0 then redis.call('HINCRBY', counters, 'recommend_bad_lines', bad) end
return {orders}
