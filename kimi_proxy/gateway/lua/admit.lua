-- Admission on a sliding-window budget, atomically: `window.py`'s Allowance.admit, line for
-- line. Every window is checked first; only when all fit is the request taken on each, with a
-- lease when streams at once are limited. One round trip; nothing is half-taken.
--
-- KEYS[1]            the leases (zset: request id -> expiry ms)
-- KEYS[2i], [2i+1]   window i: its log (zset: id -> time ms), its amounts (hash: id -> amount,
--                    and "_total")
-- ARGV: id, now ms ("" = the server's clock), lease ms, concurrency (0 = none), tokens,
--       then for each window: span ms, limit, kind ("requests" | "tokens")
-- Returns {1} admitted, or {0, i, after}: refused by window i (0 = concurrency), retry after
-- `after` ms (-1: never fits).
local id, lease_ms, concurrency, tokens = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local now = tonumber(ARGV[2])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local windows = (#KEYS - 1) / 2

if concurrency > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= concurrency then
    return {0, 0, 1000}
  end
end

local amounts = {}
for i = 1, windows do
  local log, sums = KEYS[2 * i], KEYS[2 * i + 1]
  local base = 5 + 3 * (i - 1)
  local span, limit = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  local amount = tokens
  if ARGV[base + 3] == 'requests' then amount = 1 end
  amounts[i] = amount
  -- prune what left the window
  local old = redis.call('ZRANGEBYSCORE', log, '-inf', now - span)
  if #old > 0 then
    local gone = 0
    for _, member in ipairs(old) do
      gone = gone + (tonumber(redis.call('HGET', sums, member)) or 0)
      redis.call('HDEL', sums, member)
    end
    redis.call('ZREMRANGEBYSCORE', log, '-inf', now - span)
    redis.call('HINCRBY', sums, '_total', 0 - gone)
  end
  if amount > limit then
    return {0, i, -1}
  end
  local total = tonumber(redis.call('HGET', sums, '_total')) or 0
  local excess = total + amount - limit
  if excess > 0 then
    local entries = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES')
    for j = 1, #entries, 2 do
      excess = excess - (tonumber(redis.call('HGET', sums, entries[j])) or 0)
      if excess <= 0 then
        return {0, i, tonumber(entries[j + 1]) + span - now}
      end
    end
    return {0, i, -1}
  end
end

for i = 1, windows do
  local log, sums = KEYS[2 * i], KEYS[2 * i + 1]
  local span = tonumber(ARGV[5 + 3 * (i - 1) + 1])
  redis.call('ZADD', log, now, id)
  redis.call('HSET', sums, id, amounts[i])
  redis.call('HINCRBY', sums, '_total', amounts[i])
  redis.call('PEXPIRE', log, span + lease_ms)
  redis.call('PEXPIRE', sums, span + lease_ms)
end
if concurrency > 0 then
  redis.call('ZADD', KEYS[1], now + lease_ms, id)
  redis.call('PEXPIRE', KEYS[1], lease_ms * 2)
end
return {1}
