-- segstream: apply one batch of events to the customer state, atomically and exactly once.
--
-- Over 400 lines: one atomic call must read, decide and write all a batch changes, and Redis
-- cannot load one script from another.
--
-- Called with EVALSHA, no KEYS (every key is built from the prefix; this script targets a single
-- Redis primary). ARGV:
--   1 prefix   2 max fingerprints per customer
--   3 snapshot fields: comma-separated short state field names ('' = no snapshot)
--   4 the scoring model version (compared with each snapshot customer's stored one)
--   5 number of partitions N
--   then N times: topic, partition, high offset, dead-lettered count (-1 = given as records)
--   then the number of customer groups M, then M times: customer id ('' = no customer), blob
--   then the labels of the call: '' when no record has a category or device, else a msgpack
--   flat list of (group number from 1, record index in the group from 0, summary code 1 ks |
--   2 kv | 3 kd, name, amount) in record order (worker.core.rfm.EventDelta.labels)
--   then, only with recommendations and a placed order, the purchase lines of the call: a
--   msgpack flat list of (group number, record index in the group, the record's position in
--   the batch, member "<category>,<sku>", units), one per line of a placed order; then their
--   bought-hashes, 3 raw bytes per line in the same order (worker/recommend/rank.py sku_hash)
-- A blob is a run of 64-byte little-endian records (see worker/state/store.py RECORD):
--   kind u8, click u8, partition index u16, offset i64, event time ms i64, amount cents i64,
--   items i32, fingerprint, session fingerprint, marker fingerprint, partner fingerprint (8 bytes)
-- A record at or below its partition's fence (the last applied offset, stored with the state)
-- is skipped; so is an event whose fingerprint the customer already holds, and an event of a
-- forgotten customer stamped at or before their erasure ({prefix}:x:{<id>}: counter suppressed).
-- Hash field names are worker.core.rfm.HASH_FIELDS (short: they repeat in every customer).
-- The summaries ks/kv/kd (worker/core/attributes.py) change only by applied events, with the
-- rule of worker.core.memory.bump_summary (Space-Saving over SLOTS pairs, at most
-- SUMMARY_BYTES bytes); the hash fields of a group without labels are not even read.
-- A placed order applied here owes the recommendation counts its lines: the customer's field
-- 'rb' (their latest bought-hashes, newest last, 8 at most; a rebought sku moves to the end)
-- changes with the state, and the lines go to the list {prefix}:rbox as one msgpack blob per
-- call, flat (batch position, stored segment or '', event time, member, units) per line, which
-- worker/recommend/count.lua drains into the counts: so the counts take each applied order once,
-- by this script's fence and fingerprints, and never a record it skipped or refused.
-- Every changed customer goes into the hash {prefix}:unscored, customer -> stamp (one INCR of
-- {prefix}:stamp per call that changed anything): the record of what segmentation still owes.
-- With snapshot fields, the script also returns each changed customer's new state (those fields),
-- stored segment, segment_seq, whether its model_version is ARGV[4] and why it changed (0 an order
-- placed, 1 a cancellation or return, 2 clicks only: the strongest applied event), so that
-- scoring needs no read of its own (worker/scoring/snapshot.py).
-- Returns {applied, duplicates, stamp, snapshot numbers (msgpack), snapshot segments (msgpack),
-- changed customer ids...}; the snapshot blobs are '' without snapshot fields.
-- Nothing is written before everything is read: a key of the wrong type makes the call fail
-- before its first write, never half way through a batch
-- (Redis does not roll a script back), so the caller can retry or isolate the batch safely. The
-- sweep index is the one exception: a bucket of the wrong type is skipped, logged and counted
-- (counter index_errors); the state stays exact.
local prefix = ARGV[1]
local max_fp = tonumber(ARGV[2])
local want = {}
for name in string.gmatch(ARGV[3], '[^,]+') do want[#want + 1] = name end
local snap_version = ARGV[4]
local ntp = tonumber(ARGV[5])
local REC, FMT = 64, '<BBHi8i8i8i4c8c8c8c8'
local PLACED, CANCELLED, RETURNED, CLICK, DEAD = 1, 2, 3, 4, 5
local PAGE_VIEW, PRODUCT_VIEW, ADD_TO_CART, CHECKOUT_START = 1, 2, 3, 6
local LO_BUCKET_MS = 3600000
-- worker.core.attributes.SUMMARY_SLOTS and worker.core.memory.SUMMARY_BYTES (a test compares)
local SLOTS, SUMMARY_BYTES = 4, 64
local SUMMARY_FIELD = {'ks', 'kv', 'kd'}

local function int(n) return string.format('%d', n) end

local fence, high, tp_key, tp_field = {}, {}, {}, {}
local c = {received = 0, valid = 0, dead_lettered = 0, applied = 0, fenced = 0, deduped = 0,
           anonymous = 0, index_errors = 0, suppressed = 0}
local i = 6
for t = 1, ntp do
  tp_key[t] = prefix .. ':fence:' .. ARGV[i]
  tp_field[t] = ARGV[i + 1]
  local f = redis.call('HGET', tp_key[t], tp_field[t])
  fence[t] = f and tonumber(f) or -1
  high[t] = tonumber(ARGV[i + 2])
  local dl = tonumber(ARGV[i + 3])
  if dl > 0 and high[t] > fence[t] then c.dead_lettered = c.dead_lettered + dl end
  i = i + 4
end

-- keys every call writes: refuse the batch before any write when one holds the wrong type
local function expect(key, want_type)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want_type then
    error('segstream state key ' .. key .. ' holds a ' .. t .. ', expected a ' .. want_type)
  end
end
expect(prefix .. ':counters', 'hash')
expect(prefix .. ':unscored', 'hash')
expect(prefix .. ':stamp', 'string')

-- where fp sits in s at a multiple of width bytes, or nil (one plain find, not a sub per slot)
local function slot(s, fp, width)
  local init = 1
  while true do
    local p = string.find(s, fp, init, true)
    if not p then return nil end
    if (p - 1) % width == 0 then return p end
    init = p + 1
  end
end
-- true when fp is one of the 8-byte-aligned fingerprints in s
local function holds(s, fp) return slot(s, fp, 8) ~= nil end

-- Counter fields, in the order of the first ten fields of READ below.
local COUNTERS = {'f', 'm', 'i', 's', 'pv', 'iv', 'ac', 'co', 'cs', 'cc'}
local F, M, I, S, PV, IV, AC, CO, CS, CC = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
local T0, T1, TS, FP = 11, 12, 13, 14
local SEG, SEQ, VER = 15, 16, 17
local FIELD_INDEX = {t0 = T0, t1 = T1, ts = TS}
for k, name in ipairs(COUNTERS) do FIELD_INDEX[name] = k end
local nwant = #want
for k = 1, nwant do
  want[k] = FIELD_INDEX[want[k]] or error('unknown snapshot field ' .. want[k])
end
local ABSENT = -2 ^ 52
-- Fields read per customer, in the order of the indices above (the segment fields only for a
-- snapshot: they make every read longer).
local READ = {'f', 'm', 'i', 's', 'pv', 'iv', 'ac', 'co', 'cs', 'cc', 't0', 't1', 'ts', 'fp'}
if nwant > 0 then READ[SEG], READ[SEQ], READ[VER] = 'segment', 'segment_seq', 'model_version' end
-- the same plus the summaries, for a group with labels: cur[KBASE + code]
local KBASE, READ_K = #READ, {}
for k = 1, KBASE do READ_K[k] = READ[k] end
for code = 1, 3 do READ_K[KBASE + code] = SUMMARY_FIELD[code] end
-- and the recently bought hashes and the segment, for a group with purchase lines: cur[RB] ...
local RB, PSEG, HC, RB_KEEP = KBASE + 4, KBASE + 5, 3, 8
local READ_P = {}
for k = 1, KBASE + 3 do READ_P[k] = READ_K[k] end
READ_P[RB], READ_P[PSEG] = 'rb', 'segment'
local snap_nums, snap_segs, nnums = {}, {}, 0
local CLICK_FIELD = {[PAGE_VIEW] = PV, [PRODUCT_VIEW] = IV,
                     [ADD_TO_CART] = AC, [CHECKOUT_START] = CO}
-- Counters are read, summed in Lua and written back with one HSET (one redis.call instead of
-- one HINCRBY per field). Lua numbers are doubles, exact below 2^53; a value at or beyond that
-- falls back to HINCRBY of the batch's delta, so the result stays exact either way.
local EXACT = 2 ^ 53

-- per customer group: fingerprints already stored, and the ones this batch added
-- (tables reused from group to group: fewer allocations, less garbage for Lua's collector)
local old, new, added, nadded = nil, {}, {}, 0
local function has(fp) return new[fp] or holds(old, fp) end
local function add(fp) new[fp] = true; nadded = nadded + 1; added[nadded] = fp end
local d, set, ns = {}, {}, 0
local function put(field, value) set[ns + 1] = field; set[ns + 2] = value; ns = ns + 2 end

-- Summaries (worker.core.memory.bump_summary is the same rule, the oracle the tests compare):
-- {names, counts} parsed from 'name=count,...'.
local function parse(raw)
  local names, counts = {}, {}
  if raw then
    for name, count in string.gmatch(raw, '([^,=]+)=(%d+)') do
      names[#names + 1] = name; counts[#counts + 1] = tonumber(count)
    end
  end
  return {names, counts}
end
-- canonical order: larger count first, equal counts by name, compared byte by byte (Redis
-- sets LC_COLLATE from its environment, so Lua's '<' on strings may not be bytewise)
local function before(na, ca, nb, cb)
  if ca ~= cb then return ca > cb end
  local la, lb = #na, #nb
  for k = 1, math.min(la, lb) do
    local x, y = string.byte(na, k), string.byte(nb, k)
    if x ~= y then return x < y end
  end
  return la < lb
end
-- index of the last pair in canonical order (the smallest; ties: the name sorting last)
local function smallest(names, counts)
  local w = 1
  for k = 2, #names do
    if before(names[w], counts[w], names[k], counts[k]) then w = k end
  end
  return w
end
local function encode(sm)
  local names, counts = sm[1], sm[2]
  local order = {}
  for k = 1, #names do order[k] = k end
  table.sort(order, function(a, b) return before(names[a], counts[a], names[b], counts[b]) end)
  local parts = {}
  for k = 1, #order do parts[k] = names[order[k]] .. '=' .. int(counts[order[k]]) end
  return table.concat(parts, ',')
end
local function bump(sm, name, amount)
  local names, counts = sm[1], sm[2]
  local n, at = #names, nil
  for k = 1, n do if names[k] == name then at = k; break end end
  if at then
    local left = counts[at] + amount
    if left > 0 then counts[at] = left
    else table.remove(names, at); table.remove(counts, at) end
  elseif amount > 0 then
    if n < SLOTS then names[n + 1] = name; counts[n + 1] = amount
    else
      local w = smallest(names, counts)
      names[w] = name; counts[w] = counts[w] + amount
    end
  end
  -- the field must stay a listpack value: drop the smallest pairs until it fits
  while true do
    local len = #names - 1
    for k = 1, #names do len = len + #names[k] + 1 + #int(counts[k]) end
    if len <= SUMMARY_BYTES then break end
    local w = smallest(names, counts)
    table.remove(names, w); table.remove(counts, w)
  end
end

local changed = {}
local box, nbox = {}, 0  -- the purchase lines applied (see {prefix}:rbox above)
local ngroups = tonumber(ARGV[i]); i = i + 1
local first_group = i
-- A flat list of (group number, then 4 values) -> group -> its entries, flat, each the 4 values
-- and, with `more`, more(k) for the list's k-th entry (from 0)
local function by_group(t, more)
  local out = {}
  for p = 1, #t, 5 do
    local l = out[t[p]]
    if not l then l = {}; out[t[p]] = l end
    local n = #l
    l[n + 1], l[n + 2], l[n + 3], l[n + 4] = t[p + 1], t[p + 2], t[p + 3], t[p + 4]
    if more then l[n + 5] = more((p - 1) / 5) end
  end
  return out
end
-- group -> its labels, flat (record index, code, name, amount); none for most batches
local lab_of = {}
local all_labels = ARGV[first_group + 2 * ngroups]
if all_labels and all_labels ~= '' then lab_of = by_group(cmsgpack.unpack(all_labels)) end
-- group -> its purchase lines, flat (record index, batch position, member, units, hash)
local pur_of = {}
local all_lines = ARGV[first_group + 2 * ngroups + 1]
if all_lines and all_lines ~= '' then
  local hashes = ARGV[first_group + 2 * ngroups + 2]
  pur_of = by_group(cmsgpack.unpack(all_lines),
                    function(k) return string.sub(hashes, k * HC + 1, k * HC + HC) end)
  expect(prefix .. ':rbox', 'list')
end
-- Read phase: every customer's stored state and fingerprints (cur_of, old_of), no writes.
local cur_of, old_of, fp_in_key = {}, {}, {}
for g = 1, ngroups do
  local cid = ARGV[first_group + 2 * (g - 1)]
  if cid ~= '' then
    local fields = pur_of[g] and READ_P or (lab_of[g] and READ_K or READ)
    local cur = redis.call('HMGET', prefix .. ':c:{' .. cid .. '}', unpack(fields))
    local old = cur[FP]
    if not old then
      -- Past 8 fingerprints they live in their own key. A customer without `ts` never had an
      -- event applied (this script writes `ts` in the same call as its first fingerprints), so
      -- there is no key to look up. Whatever deletes a customer's hash must delete its
      -- fingerprint key too (worker/state/keys.py lists both).
      if cur[TS] then old = redis.call('GET', prefix .. ':f:{' .. cid .. '}') end
      if old then fp_in_key[g] = true else old = '' end
    end
    cur_of[g], old_of[g] = cur, old
  end
end
-- Forgotten customers (worker/erase, docs/forget.md): {prefix}:x:{<id>} holds the erasure time
-- of a customer `segstream forget` erased; their events stamped at or before it are dropped
-- (counted as suppressed), so a replay of their old events does not bring them back. While no
-- erasure is live ({prefix}:x:until absent) that costs one EXISTS per call; else one MGET per
-- 1000 customers of the batch.
local floor_of = {}
if redis.call('EXISTS', prefix .. ':x:until') == 1 then
  local xkeys, xgroup = {}, {}
  for g = 1, ngroups do
    local cid = ARGV[first_group + 2 * (g - 1)]
    if cid ~= '' then
      xkeys[#xkeys + 1] = prefix .. ':x:{' .. cid .. '}'
      xgroup[#xkeys] = g
    end
  end
  for s = 1, #xkeys, 1000 do
    local got = redis.call('MGET', unpack(xkeys, s, math.min(s + 999, #xkeys)))
    for j = 1, #got do
      if got[j] then floor_of[xgroup[s + j - 1]] = tonumber(got[j]) end
    end
  end
end

-- ZREM/ZADD on a sweep-index bucket; a bucket of the wrong type is skipped and counted
local function index(op, key, ...)
  local ok = redis.pcall(op, key, ...)
  if type(ok) == 'table' and ok.err then
    c.index_errors = c.index_errors + 1
    redis.log(redis.LOG_WARNING, 'segstream: sweep index ' .. key .. ': ' .. ok.err)
  end
end

-- Write phase. Its first write is one Redis refuses when it is out of memory (HINCRBY is
-- deny-oom; ZREM and HDEL are not): once a script has written, Redis lets every later write of it
-- through, so a batch that began with a ZREM would be applied whole past maxmemory.
redis.call('HINCRBY', prefix .. ':counters', 'received', 0)
for g = 1, ngroups do
  local cid, blob = ARGV[i], ARGV[i + 1]
  i = i + 2
  local n = #blob / REC
  if cid == '' then
    for r = 0, n - 1 do
      local kind, _, tp, off = struct.unpack('<BBHi8', blob, r * REC + 1)
      if off <= fence[tp] then c.fenced = c.fenced + 1
      elseif kind == DEAD then c.dead_lettered = c.dead_lettered + 1
      else c.valid = c.valid + 1; c.anonymous = c.anonymous + 1 end
    end
  else
    local hkey = prefix .. ':c:{' .. cid .. '}'
    local cur = cur_of[g]
    local first, last, seen = tonumber(cur[T0]), tonumber(cur[T1]), tonumber(cur[TS])
    local first0, last0, seen0 = first, last, seen
    local in_key = fp_in_key[g] or false
    for k = 1, nadded do new[added[k]] = nil end
    old, nadded = old_of[g], 0
    for k = 1, 10 do d[k] = 0 end
    local applied, why = 0, 2  -- why: 0 an order placed, 1 a cancel or return, 2 clicks only
    local floor = floor_of[g]  -- the customer was forgotten: drop their events up to then
    -- labels: lab is the flat list, lab_at[record index] its first entry for that record
    local lab, lab_at, sums = lab_of[g], nil, nil
    if lab then
      lab_at, sums = {}, {}
      for p = #lab - 3, 1, -4 do lab_at[lab[p]] = p end
    end
    -- purchase lines: pur_at[record index] is the first entry of that record's lines
    local pur, pur_at, rb, rb0, seg = pur_of[g], nil, nil, nil, nil
    if pur then
      pur_at = {}
      for p = #pur - 4, 1, -5 do pur_at[pur[p]] = p end
      rb = cur[RB]
      if not rb or #rb % HC ~= 0 then rb = '' end  -- not of this layout: taken as empty
      rb0, seg = rb, cur[PSEG] or ''
    end
    for r = 0, n - 1 do
      local kind, click, tp, off, ms, amount, items, fp, sfp, mfp, pfp =
        struct.unpack(FMT, blob, r * REC + 1)
      if off <= fence[tp] then
        c.fenced = c.fenced + 1
      else
        c.valid = c.valid + 1
        if floor and ms <= floor then
          c.suppressed = c.suppressed + 1
        elseif has(fp) then
          c.deduped = c.deduped + 1
        else
          add(fp)
          applied = applied + 1
          if not seen or ms > seen then seen = ms end
          if lab_at then
            local p = lab_at[r]
            while p and lab[p] == r do
              local code = lab[p + 1]
              local sm = sums[code]
              if not sm then sm = parse(cur[KBASE + code]); sums[code] = sm end
              bump(sm, lab[p + 2], lab[p + 3])
              p = p + 4
            end
          end
          if kind == PLACED then
            why = 0
            d[F] = d[F] + 1; d[M] = d[M] + amount; d[I] = d[I] + items
            if not first or ms < first then first = ms end
            if not last or ms > last then last = ms end
            local p = pur_at and pur_at[r]
            if p then
              while pur[p] == r do
                local h = pur[p + 4]
                local o = slot(rb, h, HC)
                if o then rb = string.sub(rb, 1, o - 1) .. string.sub(rb, o + HC) end
                rb = rb .. h
                box[nbox + 1], box[nbox + 2], box[nbox + 3] = pur[p + 1], seg, ms
                box[nbox + 4], box[nbox + 5] = pur[p + 2], pur[p + 3]
                nbox = nbox + 5
                p = p + 5
              end
              if #rb > RB_KEEP * HC then rb = string.sub(rb, #rb - RB_KEEP * HC + 1) end
            end
          elseif kind == CANCELLED then
            if why > 1 then why = 1 end
            d[F] = d[F] - 1; d[M] = d[M] - amount; d[I] = d[I] - items
          elseif kind == RETURNED then
            if why > 1 then why = 1 end
            d[M] = d[M] - amount; d[I] = d[I] - items
          else
            if not has(sfp) then add(sfp); d[S] = d[S] + 1 end
            local field = CLICK_FIELD[click]
            if field then
              d[field] = d[field] + 1
              if (field == AC or field == CO) and not has(mfp) then
                add(mfp)
                if click == ADD_TO_CART then d[CS] = d[CS] + 1 end
                if has(pfp) then d[CC] = d[CC] + 1 end
              end
            end
          end
        end
      end
    end
    if applied > 0 then
      c.applied = c.applied + applied
      changed[#changed + 1] = cid
      ns = 0
      for k = 1, 10 do
        local by = d[k]
        if by ~= 0 then
          local v = tonumber(cur[k]) or 0
          if math.abs(v) < EXACT and math.abs(v + by) < EXACT then
            put(COUNTERS[k], int(v + by))
          elseif string.match(cur[k] or '0', '^-?%d+$') and #(cur[k] or '0') <= 18 then
            redis.call('HINCRBY', hkey, COUNTERS[k], int(by))
          else
            -- not an integer HINCRBY can take (someone wrote it): start again from this batch
            -- rather than fail half way through it
            redis.log(redis.LOG_WARNING, 'segstream: ' .. hkey .. ' ' .. COUNTERS[k] ..
                      ' was not an integer; reset to this batch\'s change')
            put(COUNTERS[k], int(by))
          end
        end
      end
      if first ~= first0 then put('t0', int(first)) end
      if last ~= last0 then
        local t1 = int(last)
        put('t1', t1)
        -- the sweep index: one sorted set per hour of last order time (see worker/state/keys.py)
        local bucket = math.floor(last / LO_BUCKET_MS)
        if last0 and math.floor(last0 / LO_BUCKET_MS) ~= bucket then
          index('ZREM', prefix .. ':lo:' .. int(math.floor(last0 / LO_BUCKET_MS)), cid)
        end
        index('ZADD', prefix .. ':lo:' .. int(bucket), t1, cid)
      end
      if seen ~= seen0 then put('ts', int(seen)) end
      if rb ~= rb0 then put('rb', rb) end
      if sums then
        for code = 1, 3 do
          local sm = sums[code]
          if sm then
            local text, was = encode(sm), cur[KBASE + code]
            if text == '' then
              if was then redis.call('HDEL', hkey, SUMMARY_FIELD[code]) end
            elseif text ~= was then
              put(SUMMARY_FIELD[code], text)
            end
          end
        end
      end
      local fps = old .. table.concat(added, '', 1, nadded)
      if #fps > max_fp * 8 then fps = string.sub(fps, #fps - max_fp * 8 + 1) end
      -- Up to 8 fingerprints live in the hash (a small hash stays a compact listpack while its
      -- values are <= 64 bytes); more move to their own string key. (SET, not APPEND: APPEND
      -- leaves the string with spare capacity, ~10% more memory on customers with many events.)
      if not in_key and #fps <= 64 then
        put('fp', fps)
      else
        redis.call('SET', prefix .. ':f:{' .. cid .. '}', fps)
        -- HDEL only when the fingerprints were in the hash until now
        if cur[FP] then redis.call('HDEL', hkey, 'fp') end
      end
      if ns > 0 then redis.call('HSET', hkey, unpack(set, 1, ns)) end
      if nwant > 0 then
        -- the customer's state as this call left it, for scoring
        for w = 1, nwant do
          local k, v = want[w], nil
          if k <= 10 then v = (tonumber(cur[k]) or 0) + d[k]
          elseif k == T0 then v = first
          elseif k == T1 then v = last
          else v = seen end
          snap_nums[nnums + w] = v or ABSENT
        end
        snap_nums[nnums + nwant + 1] = tonumber(cur[SEQ]) or -1
        snap_nums[nnums + nwant + 2] = (cur[VER] == snap_version) and 1 or 0
        snap_nums[nnums + nwant + 3] = why
        nnums = nnums + nwant + 3
        snap_segs[#changed] = cur[SEG] or ''
      end
    end
  end
end

for t = 1, ntp do
  if high[t] > fence[t] then redis.call('HSET', tp_key[t], tp_field[t], int(high[t])) end
end
c.received = c.valid + c.dead_lettered
c.duplicates = c.fenced + c.deduped
local ckey = prefix .. ':counters'
for name, v in pairs(c) do
  if v ~= 0 then redis.call('HINCRBY', ckey, name, int(v)) end
end
if nbox > 0 then redis.call('RPUSH', prefix .. ':rbox', cmsgpack.pack(box)) end
local stamp = 0
if #changed > 0 then
  stamp = redis.call('INCR', prefix .. ':stamp')
  local pairs_, np_ = {}, 0
  for k = 1, #changed do
    pairs_[np_ + 1] = changed[k]; pairs_[np_ + 2] = stamp; np_ = np_ + 2
    if np_ == 2000 or k == #changed then
      redis.call('HSET', prefix .. ':unscored', unpack(pairs_, 1, np_))
      np_ = 0
    end
  end
end
local out = {c.applied, c.duplicates, stamp, '', ''}
if nwant > 0 and #changed > 0 then
  out[4] = cmsgpack.pack(snap_nums)
  out[5] = cmsgpack.pack(snap_segs)
end
for k = 1, #changed do out[#out + 1] = changed[k] end
return out
