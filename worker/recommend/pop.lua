-- segstream: add one batch of purchases to one space's recommendation counts, exactly once.
--
-- Called with EVALSHA; on a cluster KEYS[1] is a key of the space's slot (routing only); every
-- key is built from the space (ARGV[1]), so one call touches one space. ARGV:
--   1 space   2 half-life (ms)   3 skus kept per segment (M)   4 number of partitions N
--   then N times: topic, partition, high offset (the fence moves to it)
--   then the number of purchases P, then P times:
--     customer id, partition index, offset, event time (epoch ms), the order's hash (3 raw
--     bytes: rank.sku_hash('order:<order_id>'), the first 3 bytes of its SHA-1), number of
--     lines L, then L times: member ("<category>,<sku>"), the sku's bought-hash (3 raw bytes,
--     rank.sku_hash(sku)), units
-- Exactly once: {space}:rfence:<topic> (hash partition -> last applied offset) is read first and
-- written with the counts; a purchase at or below it is skipped (counted as fenced).
-- Forgotten customers: a purchase stamped at or before {space}:x:{<id>} (worker/erase/forget.lua)
-- is dropped (counted as suppressed), so a replay of their old orders brings nothing back.
-- Counts (worker/recommend/decay.py has the same rule in Python): a purchase of u units at time
-- t adds u * 2^((t - L) / H) to its member in {space}:rpop (the shop) and, when the customer's
-- hash holds a segment, in {space}:rpop:<segment>. L, the landmark, is {space}:rmeta field 'L'
-- (set to the first batch's earliest time floored to H); once the batch's newest time is more
-- than 32 half-lives past it, L moves forward by whole half-lives and every count of the space
-- is scaled by the matching power of two. {space}:rmeta also holds 'T' (the newest event time)
-- and a field 's:<segment>' per segment with counts. Each set touched is trimmed to its M
-- highest members (ties: the lowest member goes first).
-- The customer's recently bought skus: field 'rb' of {space}:c:{<id>}, bought-hashes (3 raw
-- bytes each, at multiples of 3) newest last, 8 at most: 24 bytes (worker/recommend/rank.py);
-- field 'ro': the hashes of their 8 latest counted orders, 24 bytes (a replay of one of them at
-- new offsets is skipped, counted as recommend_deduped). A field whose length is not a
-- multiple of 3 is not of this layout and is taken as empty (as rank.bought_hashes does).
-- Counters (HINCRBY {space}:counters): recommend_purchases, recommend_fenced,
-- recommend_suppressed, recommend_skipped (purchases of a customer whose hash is of the wrong
-- type). Returns {applied, fenced, suppressed}.
-- Everything is read before anything is written: a recommendation key of the wrong type fails
-- the call whole, with the state script's wording for a shared key, so the consumer waits it out
-- as an outage until the key is deleted, as ingestion does.
local space = ARGV[1]
local H, M = tonumber(ARGV[2]), tonumber(ARGV[3])
local ntp = tonumber(ARGV[4])
local SPAN, KEEP, HC, OKEEP = 32, 8, 3, 8

local function expect(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then
    -- every key checked here is shared by many customers: worded as the state script words a
    -- shared key, so the consumer waits it out as an outage (worker/ingest/failures.py)
    error('segstream state key ' .. key .. ' holds a ' .. t .. ', expected a ' .. want)
  end
end
local function num(x) return string.format('%.17g', x) end
-- where the HC-byte hash h sits in s (at a multiple of HC), or nil: one plain find, not a
-- string.sub per slot
local function slot(s, h)
  local init = 1
  while true do
    local p = string.find(s, h, init, true)
    if not p then return nil end
    if (p - 1) % HC == 0 then return p end
    init = p + 1
  end
end

-- read phase -----------------------------------------------------------------------------------
local fence, high, fkey, ffield = {}, {}, {}, {}
local i = 5
for t = 1, ntp do
  fkey[t] = space .. ':rfence:' .. ARGV[i]
  ffield[t] = ARGV[i + 1]
  expect(fkey[t], 'hash')
  local f = redis.call('HGET', fkey[t], ffield[t])
  fence[t] = f and tonumber(f) or -1
  high[t] = tonumber(ARGV[i + 2])
  i = i + 3
end
local meta, shop, counters = space .. ':rmeta', space .. ':rpop', space .. ':counters'
expect(meta, 'hash')
expect(shop, 'zset')
expect(counters, 'hash')

-- One pass over the purchases, reading as it goes (every read comes before the first write):
-- fenced (at or below the partition's fence), suppressed (the customer was forgotten after it),
-- skipped (the customer's hash is of the wrong type), deduped (an order the customer's 'ro'
-- already holds); what is left is kept. A purchase is the ARGV index of its customer id:
-- id, partition index, offset, time, order hash, lines, then its lines (3 arguments each).
-- A customer hash of the wrong type is ingestion's to report (the state script, which runs
-- first, refuses it and ingestion dead-letters the record with the reason); one found here
-- (changed between the two calls) has its purchases skipped and counted (recommend_skipped), so
-- a batch the state took is never failed by it and the other customers' purchases still count.
local A = ARGV
local np = tonumber(A[i]); i = i + 1
local erasures = np > 0 and redis.call('EXISTS', space .. ':x:until') == 1
local kept, nkept, fenced, suppressed, skipped, deduped = {}, 0, 0, 0, 0, 0
local erased, segment_of, bought, ckey, counted = {}, {}, {}, {}, {}
local tmin, tmax
for _ = 1, np do
  local at, cid = i, A[i]
  i = i + 6 + 3 * tonumber(A[i + 5])
  local t = tonumber(A[at + 3])
  if tonumber(A[at + 2]) <= fence[tonumber(A[at + 1])] then
    fenced = fenced + 1
  else
    if erasures and erased[cid] == nil then
      local x = redis.call('GET', space .. ':x:{' .. cid .. '}')
      erased[cid] = x and tonumber(x) or false
    end
    if erasures and erased[cid] and t <= erased[cid] then
      suppressed = suppressed + 1
    else
      if ckey[cid] == nil then
        ckey[cid] = space .. ':c:{' .. cid .. '}'
        -- pcall, not TYPE first: one call per customer (another type answers WRONGTYPE)
        local got = redis.pcall('HMGET', ckey[cid], 'segment', 'rb', 'ro')
        if got.err then
          ckey[cid] = false
        else
          segment_of[cid] = got[1] or false
          bought[cid] = (got[2] and #got[2] % HC == 0) and got[2] or ''
          counted[cid] = (got[3] and #got[3] % HC == 0) and got[3] or ''
        end
      end
      if not ckey[cid] then
        skipped = skipped + 1
      else
        -- an order counts once: 'ro' holds the hashes of the customer's OKEEP latest counted
        -- orders, so a replay at new offsets (or the same order twice in a batch) is skipped
        local ro, oh = counted[cid], A[at + 4]
        if slot(ro, oh) then
          deduped = deduped + 1
        else
          ro = ro .. oh
          if #ro > OKEEP * HC then ro = string.sub(ro, #ro - OKEEP * HC + 1) end
          counted[cid] = ro
          nkept = nkept + 1
          kept[nkept] = at
          if not tmin or t < tmin then tmin = t end
          if not tmax or t > tmax then tmax = t end
        end
      end
    end
  end
end
local checked = {}
for k = 1, nkept do
  local seg = segment_of[A[kept[k]]]
  if seg and not checked[seg] then expect(space .. ':rpop:' .. seg, 'zset'); checked[seg] = true end
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

if nkept > 0 then
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
  local buying = {}  -- the customers whose 'rb' and 'ro' are written
  for k = 1, nkept do
    local at = kept[k]
    local cid, t = A[at], tonumber(A[at + 3])
    local seg = segment_of[cid]
    local skey = seg and (space .. ':rpop:' .. seg) or nil
    if seg then names[seg] = true end
    local rb = bought[cid]
    for l = at + 6, at + 3 + 3 * tonumber(A[at + 5]), 3 do
      local w = tonumber(A[l + 2]) * 2 ^ ((t - L) / H)
      add(shop, A[l], w)
      if skey then add(skey, A[l], w) end
      -- move the hash to the end of rb (hashes sit at multiples of HC)
      local h = A[l + 1]
      local o = slot(rb, h)
      if o then rb = string.sub(rb, 1, o - 1) .. string.sub(rb, o + HC) end
      rb = rb .. h
    end
    if #rb > KEEP * HC then rb = string.sub(rb, #rb - KEEP * HC + 1) end
    bought[cid] = rb
    buying[cid] = true
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
  for cid in pairs(buying) do redis.call('HSET', ckey[cid], 'rb', bought[cid], 'ro', counted[cid]) end
  for key in pairs(touched) do
    local n = redis.call('ZCARD', key)
    if n > M then
      local low = redis.call('ZRANGE', key, 0, n - M - 1)
      for s = 1, #low, 2000 do
        redis.call('ZREM', key, unpack(low, s, math.min(s + 1999, #low)))
      end
    end
  end
  local fields = {'L', string.format('%d', L), 'T', string.format('%d', (T and T > tmax) and T or tmax)}
  for seg in pairs(names) do fields[#fields + 1] = 's:' .. seg; fields[#fields + 1] = '1' end
  redis.call('HSET', meta, unpack(fields))
end

for t = 1, ntp do
  if high[t] > fence[t] then redis.call('HSET', fkey[t], ffield[t], string.format('%d', high[t])) end
end
if nkept > 0 then redis.call('HINCRBY', counters, 'recommend_purchases', nkept) end
if fenced > 0 then redis.call('HINCRBY', counters, 'recommend_fenced', fenced) end
if suppressed > 0 then redis.call('HINCRBY', counters, 'recommend_suppressed', suppressed) end
if skipped > 0 then redis.call('HINCRBY', counters, 'recommend_skipped', skipped) end
if deduped > 0 then redis.call('HINCRBY', counters, 'recommend_deduped', deduped) end
return {nkept, fenced, suppressed, deduped}
