-- The scoring write: one round's segments, and its change events into the outbox, atomically.
--
-- ARGV: prefix, model version, as-of ms, outbox field, then the WritePlan as msgpack columns
-- (worker/scoring/store.py): customer ids, the unscored stamp each was read at, (row, expected
-- segment_seq) pairs to compare, (row, segment, new segment_seq) triples of real changes, rows
-- whose kept segment gets the model version; then the round's change events as the outbox
-- keeps them ('' = none). Rows count from 0. Returns the conflicting customer ids.
--
-- A customer is written only while its {prefix}:unscored stamp is still the one its state was
-- read at (else a newer state exists, or someone else scored it: a conflict, returned and
-- re-queued by the caller). Stamps only grow and every segment write deletes the stamp, so an
-- unchanged stamp also vouches for segment_seq and for the hash itself (whatever deletes a
-- customer's hash deletes its unscored entry in the same call), except where the stamp was 0
-- (a customer read while nothing was owed: rescore, sweep): the caller then sends the
-- segment_seq it read, as for a customer it found without a hash (EXISTS only where
-- segment_seq cannot tell). Comparing every written row would cost an HGET per change.
--
-- A real change writes segment, segment_seq, model_version and seg_as_of; a kept segment
-- writes model_version and seg_as_of only when the stored version is another; a kept segment
-- whose version is current writes nothing. Every customer not in conflict leaves unscored. The
-- round's change events go into the outbox as they came (the script never parses them: JSON
-- through Lua costs more than the rest of a row), with the conflicting customers beside them
-- under <field>:skip. Columns, not a table per customer: unpacking thousands of small tables
-- costs the script more than its writes.
local prefix, version, asof, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ids, stamps = cmsgpack.unpack(ARGV[5]), cmsgpack.unpack(ARGV[6])
local checks, changes, stale = cmsgpack.unpack(ARGV[7]), cmsgpack.unpack(ARGV[8]),
  cmsgpack.unpack(ARGV[9])
local unscored = prefix .. ':unscored'
local n = #ids
local ok, owed, gone = {}, {}, {}
for s = 1, n, 1000 do
  local got = redis.call('HMGET', unscored, unpack(ids, s, math.min(s + 999, n)))
  for j = 1, #got do
    local i = s + j - 1
    local cur = tonumber(got[j]) or 0
    ok[i], owed[i] = cur == stamps[i], cur ~= 0
  end
end
for k = 1, #checks, 2 do
  local i, seq = checks[k] + 1, checks[k + 1]
  if ok[i] then
    local key = prefix .. ':c:{' .. ids[i] .. '}'
    local stored = tonumber(redis.call('HGET', key, 'segment_seq')) or -1
    if stored == -1 and seq == -1 and redis.call('EXISTS', key) == 0 then
      gone[i] = true
    elseif stored ~= seq then
      ok[i] = false
    end
  end
end
for k = 1, #changes, 3 do
  local i = changes[k] + 1
  if ok[i] and not gone[i] then
    redis.call('HSET', prefix .. ':c:{' .. ids[i] .. '}', 'segment', changes[k + 1],
               'segment_seq', changes[k + 2], 'model_version', version, 'seg_as_of', asof)
  end
end
for k = 1, #stale do
  local i = stale[k] + 1
  if ok[i] and not gone[i] then
    redis.call('HSET', prefix .. ':c:{' .. ids[i] .. '}', 'model_version', version,
               'seg_as_of', asof)
  end
end
local conflicts, done = {}, {}
for i = 1, n do
  if not ok[i] then conflicts[#conflicts + 1] = ids[i]
  elseif owed[i] then done[#done + 1] = ids[i] end
end
for s = 1, #done, 1000 do
  redis.call('HDEL', unscored, unpack(done, s, math.min(s + 999, #done)))
end
if #ARGV[10] > 0 then
  redis.call('HSET', prefix .. ':outbox', token, ARGV[10])
  if #conflicts > 0 then
    redis.call('HSET', prefix .. ':outbox', token .. ':skip', cmsgpack.pack(conflicts))
  end
end
return conflicts
