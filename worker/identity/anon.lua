-- segstream: a batch's anonymous and identify clicks of one visitor space, atomically.
--
-- Called with EVALSHA (KEYS[1], on a cluster, is {prefix}:counters: it only routes the call;
-- every key is built from the prefix, the space of the visitors: worker/identity/keys.py). ARGV:
--   1 prefix   2 max events kept per unlinked visitor   3 visitor state TTL (ms)
--   4 link TTL (ms)   5 number of partitions N, then N times: topic, partition
--   then the number of visitors M, then M times: anonymous id, blob, number of customer ids C,
--   then C customer ids (the identify records of the blob name theirs by index)
-- A blob is a run of 54-byte little-endian records (worker/identity/records.py RECORD):
--   kind u8 (1 anonymous click, 2 identify), click u8, partition index u16, customer index u16,
--   offset i64, event time ms i64, fingerprint, session fp, marker fp, partner fp (8 bytes each)
-- Per record, unless it is at or below {prefix}:afence:<topic>'s offset for its partition:
--   * an anonymous click of an unlinked visitor is added to {prefix}:a:{<anon>} (skipped when
--     its event fingerprint is already there, or when the visitor holds max events already);
--   * an anonymous click of a linked visitor goes into this call's transfer for the customer;
--   * an identify links the visitor ({prefix}:l:{<anon>} = customer, if no link yet) and moves
--     the visitor's whole state into the transfer; an identify naming another customer than
--     the link's is counted (identify_conflicts) and otherwise ignored: the first link wins.
-- A transfer (per visitor and call at most one) is written to {prefix}:xfer under its id, the
-- first 16 hex digits of the SHA-1 of its value, in this same call: the value is
--   u16 BE customer length, u16 BE anonymous id length, customer id, anonymous id,
--   cmsgpack {last seen ms, link time ms (0 = not linked now), event fps, click codes (1 byte
--             per event), session fps, cart marker pairs, checkout marker pairs}
-- (marker pair = the marker fp and its partner's, 16 bytes). merge.lua applies it to the
-- customer; worker/identity/stage.py deletes it from the outbox once merged.
-- Returns {identify conflicts, then per transfer: id, customer id, value}.
-- Everything is read before anything is written (a key of the wrong type fails the call whole).
local prefix = ARGV[1]
local max_events = tonumber(ARGV[2])
local anon_ttl, link_ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local ntp = tonumber(ARGV[5])
local REC, FMT = 54, '<BBHHi8i8c8c8c8c8'
local IDENTIFY = 2
local ADD_TO_CART, CHECKOUT_START = 3, 6
local COUNTER_OF = {[1] = 'pv', [2] = 'iv', [3] = 'ac', [6] = 'co'}
local COUNTERS = {'s', 'pv', 'iv', 'ac', 'co', 'cs', 'cc'}
-- fields of a visitor's hash: the counters, then last seen, then the typed fingerprints
local READ = {'s', 'pv', 'iv', 'ac', 'co', 'cs', 'cc', 'ts', 'e', 'k', 'sf', 'xa', 'xk'}

local function int(n) return string.format('%d', n) end

local function expect(key, want_type)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want_type then
    error('segstream state key ' .. key .. ' holds a ' .. t .. ', expected a ' .. want_type)
  end
end
local counters_key, outbox = prefix .. ':counters', prefix .. ':xfer'
expect(counters_key, 'hash')
expect(outbox, 'hash')

local fence_key, fence_field, fence, top = {}, {}, {}, {}
local i = 6
for t = 1, ntp do
  fence_key[t] = prefix .. ':afence:' .. ARGV[i]
  fence_field[t] = ARGV[i + 1]
  expect(fence_key[t], 'hash')
  local f = redis.call('HGET', fence_key[t], fence_field[t])
  fence[t] = f and tonumber(f) or -1
  top[t] = fence[t]
  i = i + 2
end

local function split(s, width, list, seen, key_width)
  if not s then return end
  for j = 1, #s, width do
    local piece = string.sub(s, j, j + width - 1)
    list[#list + 1] = piece
    if seen then seen[string.sub(piece, 1, key_width or width)] = true end
  end
end

-- A bag of behaviour: what a visitor's hash holds, and what a transfer carries.
local function bag(h)
  local b = {c = {}, e = {}, k = {}, sf = {}, xa = {}, xk = {}, seen = {}, ts = nil}
  for j, name in ipairs(COUNTERS) do b.c[name] = h and tonumber(h[j]) or 0 end
  if h then
    b.ts = tonumber(h[8])
    split(h[9], 8, b.e, b.seen)
    split(h[10], 1, b.k)
    split(h[11], 8, b.sf, b.seen)
    split(h[12], 16, b.xa, b.seen, 8)
    split(h[13], 16, b.xk, b.seen, 8)
  end
  return b
end

-- the same rules as the state script's for one click (worker/state/apply.lua)
local function add_event(b, click, fp, sfp, mfp, pfp, ms)
  if b.seen[fp] then return false end
  b.seen[fp] = true
  b.e[#b.e + 1] = fp
  b.k[#b.k + 1] = string.char(click)
  if not b.seen[sfp] then b.seen[sfp] = true; b.sf[#b.sf + 1] = sfp; b.c.s = b.c.s + 1 end
  local name = COUNTER_OF[click]
  if name then
    b.c[name] = b.c[name] + 1
    if (click == ADD_TO_CART or click == CHECKOUT_START) and not b.seen[mfp] then
      b.seen[mfp] = true
      if click == ADD_TO_CART then
        b.xa[#b.xa + 1] = mfp .. pfp
        b.c.cs = b.c.cs + 1
      else
        b.xk[#b.xk + 1] = mfp .. pfp
      end
      if b.seen[pfp] then b.c.cc = b.c.cc + 1 end
    end
  end
  if not b.ts or ms > b.ts then b.ts = ms end
  return true
end

local c = {anonymous_kept = 0, anonymous_forwarded = 0, anonymous_duplicates = 0,
           anonymous_dropped = 0, identity_fenced = 0, identity_links = 0,
           identify_conflicts = 0, identity_transfers = 0}

-- Read phase: every visitor's link and state, then the records, in memory.
local groups = {}
local ngroups = tonumber(ARGV[i]); i = i + 1
for g = 1, ngroups do
  local anon, blob, ncid = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local cids = {}
  for j = 1, ncid do cids[j] = ARGV[i + 2 + j] end
  i = i + 3 + ncid
  local akey, lkey = prefix .. ':a:{' .. anon .. '}', prefix .. ':l:{' .. anon .. '}'
  local link = redis.call('GET', lkey)
  local h = redis.call('HMGET', akey, unpack(READ))
  local stored = h[9] ~= false or h[8] ~= false
  local st = bag(stored and h or nil)
  local gr = {anon = anon, akey = akey, lkey = lkey, link = link or nil, st = st,
              stored = stored, changed = false, link_new = false, used = false, xfer = nil,
              link_ms = 0}
  -- state kept while a link exists (the link came back after it had expired): moved now
  if gr.link and stored then gr.xfer = st end
  for r = 0, #blob / REC - 1 do
    local kind, click, tp, ci, off, ms, fp, sfp, mfp, pfp = struct.unpack(FMT, blob, r * REC + 1)
    if off <= fence[tp] then
      c.identity_fenced = c.identity_fenced + 1
    else
      if off > top[tp] then top[tp] = off end
      if kind == IDENTIFY then
        local cid = cids[ci]
        if not gr.link then
          gr.link, gr.link_new, gr.link_ms = cid, true, ms
          gr.xfer = st
          c.identity_links = c.identity_links + 1
        elseif gr.link ~= cid then
          c.identify_conflicts = c.identify_conflicts + 1
        else
          gr.used = true
        end
      elseif gr.link then
        gr.xfer = gr.xfer or bag(nil)
        gr.used = true
        if add_event(gr.xfer, click, fp, sfp, mfp, pfp, ms) then
          c.anonymous_forwarded = c.anonymous_forwarded + 1
        else
          c.anonymous_duplicates = c.anonymous_duplicates + 1
        end
      elseif #st.e >= max_events then
        c.anonymous_dropped = c.anonymous_dropped + 1
      elseif add_event(st, click, fp, sfp, mfp, pfp, ms) then
        c.anonymous_kept = c.anonymous_kept + 1
        gr.changed = true
      else
        c.anonymous_duplicates = c.anonymous_duplicates + 1
      end
    end
  end
  groups[g] = gr
end

-- Write phase. The first write is HINCRBY (deny-oom): out of memory fails the call before
-- anything changed.
redis.call('HINCRBY', counters_key, 'identity_transfers', 0)
local out = {0}
for g = 1, ngroups do
  local gr = groups[g]
  local x = gr.xfer
  if x == gr.st and gr.stored then
    redis.call('DEL', gr.akey)  -- moved into the transfer
  elseif gr.changed and x ~= gr.st then
    local st, set = gr.st, {}
    for _, name in ipairs(COUNTERS) do
      if st.c[name] ~= 0 then set[#set + 1] = name; set[#set + 1] = int(st.c[name]) end
    end
    set[#set + 1] = 'ts'; set[#set + 1] = int(st.ts)
    set[#set + 1] = 'e'; set[#set + 1] = table.concat(st.e)
    set[#set + 1] = 'k'; set[#set + 1] = table.concat(st.k)
    set[#set + 1] = 'sf'; set[#set + 1] = table.concat(st.sf)
    if #st.xa > 0 then set[#set + 1] = 'xa'; set[#set + 1] = table.concat(st.xa) end
    if #st.xk > 0 then set[#set + 1] = 'xk'; set[#set + 1] = table.concat(st.xk) end
    redis.call('HSET', gr.akey, unpack(set))
    redis.call('PEXPIRE', gr.akey, anon_ttl)
  end
  if gr.link_new then
    redis.call('SET', gr.lkey, gr.link, 'PX', link_ttl)
  elseif gr.used then
    redis.call('PEXPIRE', gr.lkey, link_ttl)
  end
  if x and (#x.e > 0 or gr.link_new) then
    local body = cmsgpack.pack({x.ts or 0, gr.link_ms, table.concat(x.e), table.concat(x.k),
                                table.concat(x.sf), table.concat(x.xa), table.concat(x.xk)})
    local value = struct.pack('>HH', #gr.link, #gr.anon) .. gr.link .. gr.anon .. body
    local id = string.sub(redis.sha1hex(value), 1, 16)
    redis.call('HSET', outbox, id, value)
    c.identity_transfers = c.identity_transfers + 1
    out[#out + 1] = id
    out[#out + 1] = gr.link
    out[#out + 1] = value
  end
end
for t = 1, ntp do
  if top[t] > fence[t] then redis.call('HSET', fence_key[t], fence_field[t], int(top[t])) end
end
for name, v in pairs(c) do
  if v ~= 0 then redis.call('HINCRBY', counters_key, name, int(v)) end
end
out[1] = c.identify_conflicts
return out
