-- segstream: replace one space's merged top lists, atomically (worker/recommend/store.py merges).
--
-- Called with EVALSHA; on a cluster KEYS[1] is a key of the space's slot (routing only). ARGV:
--   1 space   2 the time the scores are "as of" (epoch ms)   3 number of lists S
--   then S times: segment ('' = the shop), number of entries E, then E times: member, score
-- Writes {space}:rtop:<segment> (the shop: {space}:rtop) as a sorted set of exactly the given
-- entries, deletes the lists of segments no longer given (their names are the 't:<segment>'
-- fields of {space}:rmeta) and sets {space}:rmeta field 'merged' to ARGV[2]. Idempotent: the
-- same arguments give the same keys, so merges may run in any number of workers.
local space, as_of, ns = ARGV[1], ARGV[2], tonumber(ARGV[3])
local meta = space .. ':rmeta'
local t = redis.call('TYPE', meta)['ok']
if t ~= 'none' and t ~= 'hash' then error('segstream key ' .. meta .. ' holds a ' .. t) end

local function list_key(seg) if seg == '' then return space .. ':rtop' end return space .. ':rtop:' .. seg end

local given, lists, i = {}, {}, 4
for s = 1, ns do
  local seg, n = ARGV[i], tonumber(ARGV[i + 1])
  local pairs_ = {}
  for e = 1, n do
    pairs_[#pairs_ + 1] = ARGV[i + 2 * e + 1]
    pairs_[#pairs_ + 1] = ARGV[i + 2 * e]
  end
  lists[#lists + 1] = {seg, pairs_}
  given[seg] = true
  i = i + 2 + 2 * n
end
local stale = {}
local all = redis.call('HGETALL', meta)
for k = 1, #all, 2 do
  local f = all[k]
  if string.sub(f, 1, 2) == 't:' and not given[string.sub(f, 3)] then stale[#stale + 1] = string.sub(f, 3) end
end
for _, seg in ipairs(stale) do
  redis.call('DEL', list_key(seg))
  redis.call('HDEL', meta, 't:' .. seg)
end
for _, l in ipairs(lists) do
  local key = list_key(l[1])
  redis.call('DEL', key)
  for s = 1, #l[2], 2000 do
    redis.call('ZADD', key, unpack(l[2], s, math.min(s + 1999, #l[2])))
  end
  redis.call('HSET', meta, 't:' .. l[1], '1')
end
redis.call('HSET', meta, 'merged', as_of)
return #lists
