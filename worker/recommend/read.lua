-- segstream: one customer's recommendations, read-only, in one call (docs/recommendations.md).
--
-- EVALSHA_RO <sha> 1 <customer hash key> <space> <n> <boost>   (EVAL_RO with the text works too)
-- KEYS[1] is {space}:c:{<customer id>}: the customer's state hash in their space (the prefix on a
-- single Redis; on a cluster the space of their shard, worker/state/keys.py Keyspace). Every key
-- read shares its hash tag, so the call runs on the one node that holds the customer.
-- Reads the hash's 'segment', 'ks' (spend by category: the favourite is the largest, ties by
-- name) and 'rb' (recently bought: the first 3 bytes of each sku's SHA-1, raw, 3 bytes apart;
-- a field whose length is not a multiple of 3 is taken as empty), then ranks
-- {space}:rtop:<segment> and, to fill up, {space}:rtop (the shop), as worker/recommend/rank.py
-- does: score x (1 + boost) in the favourite category, best first (ties: sku bytes), bought and
-- already-listed skus skipped.
-- Returns {segment or nil, favourite or nil, {sku, category, score, source}...}, source one of
-- 'segment', 'segment+favourite', 'shop', 'shop+favourite'.
local key, space, n, boost = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local got = redis.call('HMGET', key, 'segment', 'ks', 'rb')
local segment, ks, rb = got[1], got[2], got[3]

local function less(a, b)  -- a < b comparing bytes
  local m = math.min(#a, #b)
  for k = 1, m do
    local x, y = string.byte(a, k), string.byte(b, k)
    if x ~= y then return x < y end
  end
  return #a < #b
end

local favourite, best = nil, nil
if ks then
  for item in string.gmatch(ks, '[^,]+') do
    local eq = 0
    for k = #item, 1, -1 do if string.sub(item, k, k) == '=' then eq = k; break end end
    if eq > 1 then
      local name, count = string.sub(item, 1, eq - 1), tonumber(string.sub(item, eq + 1))
      if count and (not best or count > best or (count == best and less(name, favourite))) then
        favourite, best = name, count
      end
    end
  end
end
local bought = {}
if rb and #rb % 3 == 0 then for at = 1, #rb, 3 do bought[string.sub(rb, at, at + 2)] = true end end
-- a sku's bought-hash: the first 3 bytes of its SHA-1 (rank.sku_hash), from its hex digits
local function sku_hash(sku)
  local h = redis.sha1hex(sku)
  return string.char(tonumber(string.sub(h, 1, 2), 16), tonumber(string.sub(h, 3, 4), 16),
    tonumber(string.sub(h, 5, 6), 16))
end

local picks, taken = {}, {}
local function walk(list, source)
  local raw = redis.call('ZRANGE', list, 0, -1, 'REV', 'WITHSCORES')
  local items = {}
  for k = 1, #raw, 2 do
    local m = raw[k]
    local comma = string.find(m, ',', 1, true)
    local cat, sku = string.sub(m, 1, comma - 1), string.sub(m, comma + 1)
    local score = tonumber(raw[k + 1])
    local fav = favourite ~= nil and cat == favourite
    if fav then score = score * (1 + boost) end
    items[#items + 1] = {sku, cat, score, fav}
  end
  table.sort(items, function(a, b)
    if a[3] ~= b[3] then return a[3] > b[3] end
    return less(a[1], b[1])
  end)
  for _, it in ipairs(items) do
    if #picks >= n then return end
    if not taken[it[1]] and not bought[sku_hash(it[1])] then
      taken[it[1]] = true
      picks[#picks + 1] = {it[1], it[2], string.format('%.17g', it[3]), source .. (it[4] and '+favourite' or '')}
    end
  end
end
if segment then walk(space .. ':rtop:' .. segment, 'segment') end
if #picks < n then walk(space .. ':rtop', 'shop') end
return {segment or false, favourite or false, picks}
