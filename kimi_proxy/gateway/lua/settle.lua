-- A request ended: `window.py`'s Allowances.settle, for every subject it claimed. Its leases
-- end; its tokens windows spend what it used instead of what it reserved, its dollars windows
-- what it cost, or (give back) every window forgets it.
--
-- KEYS, per claim: its leases, then per window its log and amounts (as in admit.lua)
-- ARGV: id, used tokens ("" = keep the reservation), give back ("1" | "0"), per claim the
--       kinds of its windows as one JSON array: [["requests", "tokens", "usd"], ...], and the
--       micro-dollars it cost ("" = keep the reservation)
local id, used, give_back = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
local cost = tonumber(ARGV[5])
local k = 1
for _, kinds in ipairs(cjson.decode(ARGV[4])) do
  redis.call('ZREM', KEYS[k], id)
  k = k + 1
  for _, kind in ipairs(kinds) do
    local sums = KEYS[k + 1]
    local held = tonumber(redis.call('HGET', sums, id))
    if held ~= nil then
      if give_back then
        redis.call('ZREM', KEYS[k], id)
        redis.call('HDEL', sums, id)
        redis.call('HINCRBY', sums, '_total', 0 - held)
      elseif used ~= nil and kind == 'tokens' then
        redis.call('HSET', sums, id, used)
        redis.call('HINCRBY', sums, '_total', used - held)
      elseif cost ~= nil and kind == 'usd' then
        redis.call('HSET', sums, id, cost)
        redis.call('HINCRBY', sums, '_total', cost - held)
      end
    end
    k = k + 2
  end
end
return 1
