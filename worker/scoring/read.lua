-- The scoring read: state and segment fields of customers without a snapshot (backlog,
-- repair, sweep, rescore, conflicts), with each one's unscored stamp, in one atomic call.
--
-- ARGV: prefix; msgpack list of customer ids; msgpack list of the fields to read (the state
-- fields wanted, then the segment fields: segment, model_version, segment_seq); how many of
-- them are state fields; the marker of an absent state field.
--
-- Returns a flat array of strings: per customer its state fields (the marker where absent),
-- then its segment fields ('' where absent); then each customer's unscored stamp ('0' = none),
-- read atomically with the state it vouches for (parsed by worker.scoring.vectors.from_flat).
-- The values go out as Redis stored them, and flat: per-customer tables, tonumber and a
-- msgpack reply cost the script more than the strings.
local prefix = ARGV[1]
local ids = cmsgpack.unpack(ARGV[2])
local fields = cmsgpack.unpack(ARGV[3])
local ns = tonumber(ARGV[4])
local absent = ARGV[5]
local nf = #fields
local out, n = {}, 0
for i = 1, #ids do
  local v = redis.call('HMGET', prefix .. ':c:{' .. ids[i] .. '}', unpack(fields))
  for j = 1, ns do out[n + j] = v[j] or absent end
  for j = ns + 1, nf do out[n + j] = v[j] or '' end
  n = n + nf
end
for s = 1, #ids, 1000 do
  local got = redis.call('HMGET', prefix .. ':unscored', unpack(ids, s, math.min(s + 999, #ids)))
  for j = 1, #got do out[n + j] = got[j] or '0' end
  n = n + #got
end
return out
