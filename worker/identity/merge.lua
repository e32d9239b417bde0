-- segstream: merge transfers (written by anon.lua) into their customers, atomically and
-- idempotently, in the customers' space.
--
-- Called with EVALSHA (KEYS[1], on a cluster, is {prefix}:counters: it only routes the call).
-- ARGV: 1 prefix (the customers' space)   2 max fingerprints per customer
--       3 number of transfers N, then N times: transfer id (16 hex digits), value
-- (the value's layout is in anon.lua). Per transfer, for its customer:
--   * a forgotten customer ({prefix}:x:{<id>}, as in apply.lua) whose erasure is at or after
--     both the transfer's last event and its link time: the transfer is dropped and reported,
--     so that the caller removes the link (an old identify replayed must not re-link);
--   * a transfer whose id fingerprint the customer holds was merged before: skipped;
--   * otherwise each event whose fingerprint the customer does not hold counts (its click's
--     counter), the session fingerprints and the cart / checkout markers are united with the
--     customer's (a session seen under both ids counts once; a cart session reaches checkout
--     when both markers are held, whichever came first), last seen is the max, and the
--     transfer's id fingerprint is kept with the others. The anonymous id joins
--     {prefix}:al:{<id>} (what forget unlinks).
-- Fingerprints are stored as apply.lua stores them: 8-byte aligned, at most max fingerprints
-- (oldest dropped), in the hash field fp while they fit 64 bytes, else in {prefix}:f:{<id>};
-- `ts` is written in the same call as the first fingerprints. A changed customer is stamped
-- unscored (INCR {prefix}:stamp, HSET {prefix}:unscored) so scoring re-decides them.
-- Returns {stamp (0 = nobody changed), number of changed customers, their ids...,
--          then per dropped transfer: its id, anonymous id, customer id}.
-- Everything is read before anything is written.
local prefix = ARGV[1]
local max_fp = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local CLICK_FIELD = {[1] = 'pv', [2] = 'iv', [3] = 'ac', [6] = 'co'}
local COUNTERS = {'s', 'pv', 'iv', 'ac', 'co', 'cs', 'cc'}
local READ = {'s', 'pv', 'iv', 'ac', 'co', 'cs', 'cc', 'ts', 'fp'}
local TS, FP = 8, 9

local function int(v) return string.format('%d', v) end

local function expect(key, want_type)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want_type then
    error('segstream state key ' .. key .. ' holds a ' .. t .. ', expected a ' .. want_type)
  end
end
local counters_key = prefix .. ':counters'
expect(counters_key, 'hash')
expect(prefix .. ':unscored', 'hash')
expect(prefix .. ':stamp', 'string')

-- true when fp is one of the 8-byte-aligned fingerprints in s (as in apply.lua)
local function holds(s, fp)
  local init = 1
  while true do
    local p = string.find(s, fp, init, true)
    if not p then return false end
    if (p - 1) % 8 == 0 then return true end
    init = p + 1
  end
end

local function binary(hex)
  return (string.gsub(hex, '..', function(cc) return string.char(tonumber(cc, 16)) end))
end

-- Read phase: the transfers, then each customer's state, fingerprints and suppression.
local live = redis.call('EXISTS', prefix .. ':x:until') == 1
local transfers, customers, order = {}, {}, {}
for t = 1, n do
  local id, value = ARGV[2 + 2 * t], ARGV[3 + 2 * t]
  local lc, la = struct.unpack('>HH', value)
  local cid = string.sub(value, 5, 4 + lc)
  local anon = string.sub(value, 5 + lc, 4 + lc + la)
  local body = cmsgpack.unpack(string.sub(value, 5 + lc + la))
  transfers[t] = {id = id, cid = cid, anon = anon, body = body}
  if not customers[cid] then
    local hkey = prefix .. ':c:{' .. cid .. '}'
    local akey = prefix .. ':al:{' .. cid .. '}'
    expect(akey, 'set')
    local cur = redis.call('HMGET', hkey, unpack(READ))
    local old, in_key = cur[FP], false
    if not old then
      if cur[TS] then old = redis.call('GET', prefix .. ':f:{' .. cid .. '}') end
      if old then in_key = true else old = '' end
    end
    local floor = nil
    if live then floor = tonumber(redis.call('GET', prefix .. ':x:{' .. cid .. '}') or '') end
    customers[cid] = {hkey = hkey, akey = akey, cur = cur, old = old, in_key = in_key,
                      floor = floor, new = {}, added = {}, d = {}, ts = tonumber(cur[TS]),
                      anons = {}, touched = false}
    for _, name in ipairs(COUNTERS) do customers[cid].d[name] = 0 end
    order[#order + 1] = cid
  end
end

local c = {identity_merges = 0, identity_merge_duplicates = 0, identity_suppressed = 0}
local dropped = {}
for t = 1, n do
  local x = transfers[t]
  local g = customers[x.cid]
  local function has(fp) return g.new[fp] or holds(g.old, fp) end
  local function add(fp) g.new[fp] = true; g.added[#g.added + 1] = fp end
  local ts, link_ms, e, k, sf, xa, xk = unpack(x.body)
  local xfp = binary(x.id)
  if g.floor and math.max(ts, link_ms) <= g.floor then
    c.identity_suppressed = c.identity_suppressed + 1
    dropped[#dropped + 1] = x
  elseif #e > 0 and has(xfp) then
    c.identity_merge_duplicates = c.identity_merge_duplicates + 1
    g.anons[x.anon] = true
  else
    c.identity_merges = c.identity_merges + 1
    g.anons[x.anon] = true
    if #e > 0 then
      add(xfp)
      for j = 1, #e / 8 do
        local fp = string.sub(e, 8 * j - 7, 8 * j)
        if not has(fp) then
          add(fp)
          local field = CLICK_FIELD[string.byte(k, j)]
          if field then g.d[field] = g.d[field] + 1 end
        end
      end
      for j = 1, #sf, 8 do
        local fp = string.sub(sf, j, j + 7)
        if not has(fp) then add(fp); g.d.s = g.d.s + 1 end
      end
      for j = 1, #xa, 16 do
        local m, p = string.sub(xa, j, j + 7), string.sub(xa, j + 8, j + 15)
        if not has(m) then
          add(m)
          g.d.cs = g.d.cs + 1
          if has(p) then g.d.cc = g.d.cc + 1 end
        end
      end
      for j = 1, #xk, 16 do
        local m, p = string.sub(xk, j, j + 7), string.sub(xk, j + 8, j + 15)
        if not has(m) then
          add(m)
          if has(p) then g.d.cc = g.d.cc + 1 end
        end
      end
      if not g.ts or ts > g.ts then g.ts = ts end
      g.touched = true
    end
  end
end

-- Write phase; the first write is HINCRBY (deny-oom).
redis.call('HINCRBY', counters_key, 'identity_merges', 0)
local changed = {}
for _, cid in ipairs(order) do
  local g = customers[cid]
  local members = {}
  for anon in pairs(g.anons) do members[#members + 1] = anon end
  if #members > 0 then redis.call('SADD', g.akey, unpack(members)) end
  if g.touched then
    local set, cur = {}, g.cur
    for j, name in ipairs(COUNTERS) do
      local by = g.d[name]
      if by ~= 0 then
        local v = tonumber(cur[j])
        if cur[j] and not v then
          redis.log(redis.LOG_WARNING, 'segstream: ' .. g.hkey .. ' ' .. name ..
                    ' was not an integer; reset to this merge\'s change')
        end
        set[#set + 1] = name
        set[#set + 1] = int((v or 0) + by)
      end
    end
    if g.ts ~= tonumber(cur[TS]) then set[#set + 1] = 'ts'; set[#set + 1] = int(g.ts) end
    local fps = g.old .. table.concat(g.added)
    if #fps > max_fp * 8 then fps = string.sub(fps, #fps - max_fp * 8 + 1) end
    if not g.in_key and #fps <= 64 then
      set[#set + 1] = 'fp'; set[#set + 1] = fps
    else
      redis.call('SET', prefix .. ':f:{' .. cid .. '}', fps)
      if cur[FP] then redis.call('HDEL', g.hkey, 'fp') end
    end
    if #set > 0 then redis.call('HSET', g.hkey, unpack(set)) end
    changed[#changed + 1] = cid
  end
end
for name, v in pairs(c) do
  if v ~= 0 then redis.call('HINCRBY', counters_key, name, int(v)) end
end
local stamp = 0
if #changed > 0 then
  stamp = redis.call('INCR', prefix .. ':stamp')
  local pairs_ = {}
  for _, cid in ipairs(changed) do pairs_[#pairs_ + 1] = cid; pairs_[#pairs_ + 1] = stamp end
  redis.call('HSET', prefix .. ':unscored', unpack(pairs_))
end
local out = {stamp, #changed}
for _, cid in ipairs(changed) do out[#out + 1] = cid end
for _, x in ipairs(dropped) do
  out[#out + 1] = x.id; out[#out + 1] = x.anon; out[#out + 1] = x.cid
end
return out
