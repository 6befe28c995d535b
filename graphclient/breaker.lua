-- The circuit breaker's one atomic step; RedisBreaker (graphclient.breaker) runs it for every operation.
--
-- KEYS: [1] state hash, [2] set of the distinct requests in the current run of failures,
--       [3] the probe lease (a string taken with SET NX PX: one prober across all workers).
-- ARGV: op, now, request (op "fail": what failed, for the distinct count), token (the caller's probe
--       lease, '' if none; op "admit": the token to take the lease with), error text (op "fail"),
--       then FAILURES_TO_OPEN, DISTINCT_TO_OPEN, FIRST_PROBE_S, MAX_PROBE_S, LEASE_MS, TTL_S.
-- op: "admit" (may a call go out now?), "fail" / "ok" (how a call went), "peek".
-- Returns {verdict, state, next_probe_at, opened_at, failures, opens_total, last_error} as strings,
-- since Lua numbers returned to Redis are truncated to integers.
local key, streak, lease = KEYS[1], KEYS[2], KEYS[3]
local op, now, request, token, err = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local FAILURES, DISTINCT = tonumber(ARGV[6]), tonumber(ARGV[7])
local FIRST, MAX = tonumber(ARGV[8]), tonumber(ARGV[9])
local LEASE_MS, TTL = tonumber(ARGV[10]), tonumber(ARGV[11])

local f = redis.call('HMGET', key, 'state', 'next_probe_at', 'opened_at', 'failures', 'interval',
  'opens_total', 'last_error')
local state = f[1] or 'closed'
local next_probe_at = tonumber(f[2]) or 0
local opened_at = tonumber(f[3]) or 0
local failures = tonumber(f[4]) or 0
local interval = tonumber(f[5]) or FIRST
local opens_total = tonumber(f[6]) or 0
local last_error = f[7] or ''

local function s(x) return string.format('%.17g', x) end
local function reply(verdict)
  return {verdict, state, s(next_probe_at), s(opened_at), s(failures), s(opens_total), last_error}
end
local function save()
  redis.call('HSET', key, 'state', state, 'next_probe_at', s(next_probe_at), 'opened_at', s(opened_at),
    'failures', s(failures), 'interval', s(interval), 'opens_total', s(opens_total), 'last_error', last_error)
  redis.call('EXPIRE', key, TTL)
end
local function our_probe()
  return token ~= '' and redis.call('GET', lease) == token
end

if op == 'admit' then
  if state ~= 'open' then return reply('ok') end
  if now < next_probe_at then return reply('deny') end
  if redis.call('SET', lease, token, 'NX', 'PX', LEASE_MS) then return reply('probe') end
  return reply('deny')  -- another caller is probing right now
elseif op == 'fail' then
  if state == 'open' then
    -- Calls sent before it opened still come back failing: only the probe's failure counts.
    if not our_probe() then return reply('open') end
    interval = math.min(MAX, interval * 2)
    next_probe_at = now + interval
    last_error = err
    redis.call('DEL', lease)
    save()
    return reply('reopened')
  end
  failures = failures + 1
  last_error = err
  redis.call('SADD', streak, request)
  redis.call('EXPIRE', streak, TTL)
  if failures >= FAILURES and redis.call('SCARD', streak) >= DISTINCT then
    state = 'open'
    opened_at = now
    interval = FIRST
    next_probe_at = now + FIRST
    opens_total = opens_total + 1
    redis.call('DEL', streak)
    save()
    return reply('opened')
  end
  save()
  return reply('closed')
elseif op == 'ok' then
  if state == 'open' then
    -- An answer to a call sent before it opened says nothing about now; the probe's does.
    if not our_probe() then return reply('open') end
    state = 'closed'
    failures = 0
    interval = FIRST
    redis.call('DEL', lease, streak)
    save()
    return reply('closed_now')
  end
  if failures > 0 then
    failures = 0
    redis.call('DEL', streak)
    save()
  end
  return reply('ok')
end
return reply('peek')
