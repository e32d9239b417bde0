-- segstream: record a customer's campaign assignments once, or mark them published.
--
-- KEYS: 1 the customer's assignments hash {space}:cp:{<customer id>} (campaign -> arm|ms|flag)
--       2 the customer's suppression entry {space}:x:{<customer id>} (segstream forget)
-- (both carry the same hash tag: one slot on a Redis Cluster)
-- ARGV: 1 mode: 'assign' | 'published'
--   assign:    2.. triples (campaign, arm, assigned ms): an absent campaign field is set to
--              'arm|ms|0' (the first assignment wins: the arm is a pure function anyway), unless
--              the customer was forgotten at or after ms (a replayed segment change of an erased
--              customer assigns nothing). Returns, per triple, the stored record ('' = skipped).
--   published: 2.. campaigns whose record reached the topic: 'arm|ms|0' becomes 'arm|ms|1'. A
--              field that is gone (forgotten meanwhile) is not written again. Returns the count.
-- Everything is read before anything is written: a key of the wrong type fails the call whole.
local key, xkey, mode = KEYS[1], KEYS[2], ARGV[1]
if mode == 'assign' then
  local floor = tonumber(redis.call('GET', xkey) or '0') or 0
  local names = {}
  for k = 2, #ARGV, 3 do names[#names + 1] = ARGV[k] end
  if #names == 0 then return {} end
  local have = redis.call('HMGET', key, unpack(names))
  local out, writes = {}, {}
  for j = 1, #names do
    local k = 2 + (j - 1) * 3
    local v = have[j]
    if not v then
      if tonumber(ARGV[k + 2]) <= floor then
        v = ''
      else
        v = ARGV[k + 1] .. '|' .. ARGV[k + 2] .. '|0'
        writes[#writes + 1] = names[j]
        writes[#writes + 1] = v
      end
    end
    out[j] = v
  end
  if #writes > 0 then redis.call('HSET', key, unpack(writes)) end
  return out
elseif mode == 'published' then
  local names = {}
  for k = 2, #ARGV do names[#names + 1] = ARGV[k] end
  if #names == 0 then return 0 end
  local have = redis.call('HMGET', key, unpack(names))
  local writes = {}
  for j = 1, #names do
    local v = have[j]
    if v and string.sub(v, -2) == '|0' then
      writes[#writes + 1] = names[j]
      writes[#writes + 1] = string.sub(v, 1, -2) .. '1'
    end
  end
  if #writes > 0 then redis.call('HSET', key, unpack(writes)) end
  return #writes / 2
end
return redis.error_reply('segstream assign.lua: unknown mode ' .. tostring(mode))
