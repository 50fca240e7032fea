-- A request ended: `window.py`'s Allowance.settle. Its lease ends; its tokens windows spend
-- what it used instead of what it reserved, or (give back) every window forgets it.
--
-- KEYS[1] the leases; KEYS[2i], [2i+1] window i's log and amounts (as in admit.lua)
-- ARGV: id, used tokens ("" = keep the reservation), give back ("1" | "0"),
--       then each window's kind ("requests" | "tokens")
local id, used, give_back = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
redis.call('ZREM', KEYS[1], id)
for i = 1, (#KEYS - 1) / 2 do
  local log, sums = KEYS[2 * i], KEYS[2 * i + 1]
  local held = tonumber(redis.call('HGET', sums, id))
  if held ~= nil then
    if give_back then
      redis.call('ZREM', log, id)
      redis.call('HDEL', sums, id)
      redis.call('HINCRBY', sums, '_total', 0 - held)
    elseif used ~= nil and ARGV[3 + i] == 'tokens' then
      redis.call('HSET', sums, id, used)
      redis.call('HINCRBY', sums, '_total', used - held)
    end
  end
end
return 1
