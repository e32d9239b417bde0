-- segstream: read one space's recommendation counts for the merge (worker/recommend/store.py).
--
-- Called with EVALSHA; on a cluster KEYS[1] is a key of the space's slot (routing only). ARGV:
--   1 space   2 how many of each segment's best members to return (K)
-- Returns {L, T, {segment ('' = the shop), {member, score, member, score...}}...}: the landmark
-- and newest event time of {space}:rmeta (false when the space has no counts), then the K
-- highest members of {space}:rpop and of every {space}:rpop:<segment> named in {space}:rmeta.
local space, k = ARGV[1], tonumber(ARGV[2])
local meta = space .. ':rmeta'
local L, T = redis.call('HGET', meta, 'L'), redis.call('HGET', meta, 'T')
local out = {L or false, T or false}
if not L then return out end
out[#out + 1] = {'', redis.call('ZRANGE', space .. ':rpop', 0, k - 1, 'REV', 'WITHSCORES')}
local all = redis.call('HGETALL', meta)
for i = 1, #all, 2 do
  local f = all[i]
  if string.sub(f, 1, 2) == 's:' then
    local seg = string.sub(f, 3)
    out[#out + 1] = {seg, redis.call('ZRANGE', space .. ':rpop:' .. seg, 0, k - 1, 'REV', 'WITHSCORES')}
  end
end
return out
