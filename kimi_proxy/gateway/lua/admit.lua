-- Admission of one request on sliding-window budgets, atomically: `window.py`'s
-- Allowances.admit, line for line. The request claims tokens of one or more subjects (a
-- user, a provider key); every claim's streams at once and windows are checked first, and only
-- when all fit is each taken, with a lease where streams at once are limited. One round trip;
-- nothing is half-taken.
--
-- KEYS, per claim: its leases (zset: request id -> expiry ms), then per window its log (zset:
--       id -> time ms) and its amounts (hash: id -> amount, and "_total")
-- ARGV: id, now ms ("" = the server's clock), lease ms, and the claims as one JSON array
--       (one argument: cheaper to send than many): per claim [concurrency (0 = none), tokens,
--       [[span ms, limit, kind ("requests" | "tokens" | "usd")], ...], micro-dollars, and the
--       bound tokens and micro-dollars taken instead while another of its requests runs]
-- Returns {1} admitted, or {0, claim, window, after, held}: refused by that claim's window (0:
-- its streams at once), retry after `after` ms (-1: never fits); `held`: the window's total.
local id, lease_ms, asked = ARGV[1], tonumber(ARGV[3]), cjson.decode(ARGV[4])
local now = tonumber(ARGV[2])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local plan = {}
local k = 1
for c, ask in ipairs(asked) do
  local claim = {lease = KEYS[k], concurrency = ask[1], windows = {}}
  k = k + 1
  for w, spec in ipairs(ask[3]) do
    local amount, bound = ask[2], math.max(ask[2], ask[5] or 0)
    if spec[3] == 'requests' then amount, bound = 1, 1 end
    if spec[3] == 'usd' then amount, bound = ask[4] or 0, math.max(ask[4] or 0, ask[6] or 0) end
    claim.windows[w] = {
      log = KEYS[k], sums = KEYS[k + 1], span = spec[1], limit = spec[2], amount = amount,
      bound = bound
    }
    k = k + 2
  end
  plan[c] = claim
end

for c, claim in ipairs(plan) do
  if claim.concurrency > 0 then
    redis.call('ZREMRANGEBYSCORE', claim.lease, '-inf', now)
    local running = redis.call('ZCARD', claim.lease)
    if running >= claim.concurrency then
      return {0, c, 0, 1000, 0}
    end
    if running > 0 then  -- another request of the subject's runs: the bound is taken
      for _, window in ipairs(claim.windows) do window.amount = window.bound end
    end
  end
  for w, window in ipairs(claim.windows) do
    local log, sums = window.log, window.sums
    -- prune what left the window
    local old = redis.call('ZRANGEBYSCORE', log, '-inf', now - window.span)
    if #old > 0 then
      local gone = 0
      for _, member in ipairs(old) do
        gone = gone + (tonumber(redis.call('HGET', sums, member)) or 0)
        redis.call('HDEL', sums, member)
      end
      redis.call('ZREMRANGEBYSCORE', log, '-inf', now - window.span)
      redis.call('HINCRBY', sums, '_total', 0 - gone)
    end
    local total = tonumber(redis.call('HGET', sums, '_total')) or 0
    if window.amount > window.limit then
      return {0, c, w, -1, total}
    end
    local excess = total + window.amount - window.limit
    if excess > 0 then
      local entries = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES')
      for j = 1, #entries, 2 do
        excess = excess - (tonumber(redis.call('HGET', sums, entries[j])) or 0)
        if excess <= 0 then
          return {0, c, w, tonumber(entries[j + 1]) + window.span - now, total}
        end
      end
      return {0, c, w, -1, total}
    end
  end
end

for _, claim in ipairs(plan) do
  for _, window in ipairs(claim.windows) do
    redis.call('ZADD', window.log, now, id)
    redis.call('HSET', window.sums, id, window.amount)
    redis.call('HINCRBY', window.sums, '_total', window.amount)
    redis.call('PEXPIRE', window.log, window.span + lease_ms)
    redis.call('PEXPIRE', window.sums, window.span + lease_ms)
  end
  if claim.concurrency > 0 then
    redis.call('ZADD', claim.lease, now + lease_ms, id)
    redis.call('PEXPIRE', claim.lease, lease_ms * 2)
  end
end
return {1}
