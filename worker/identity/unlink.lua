-- segstream: remove a visitor's link to a customer, if it still names that customer.
--
-- Called with EVALSHA (KEYS[1], on a cluster, is {prefix}:counters: it only routes the call).
-- ARGV: 1 prefix (the visitor's space)   2 anonymous id   3 customer id
-- Compare-and-delete, so that a late or repeated call never removes a link the visitor made
-- since to someone else. Returns 1 if a link was removed, else 0.
local prefix, anon, cid = ARGV[1], ARGV[2], ARGV[3]
local key = prefix .. ':l:{' .. anon .. '}'
if redis.call('GET', key) == cid then
  redis.call('DEL', key)
  return 1
end
return 0
