-- The throttle's one atomic step; RedisThrottle (graphclient.throttle) runs it for every operation.
--
-- KEYS[1] = state hash. ARGV: op, now, n, capacity (0 = unlimited), max_rate, max_wait_s, arg,
-- then the constants. op: "acquire" (n tokens; n = 0 only checks the gate), "throttled"
-- (arg = retry_after_s), "percent" (arg = limit percentage as a fraction), "peek".
-- Returns {verdict, wait_s, rate, capacity, tokens, paused_until, throttled_total} as strings, since
-- Lua numbers returned to Redis are truncated to integers.
local key = KEYS[1]
local op = ARGV[1]
local now = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
local max_rate = tonumber(ARGV[5])
local max_wait = tonumber(ARGV[6])
local arg = tonumber(ARGV[7])
local DECREASE, FLOOR, RECOVER = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local NUDGE, NUDGE_INTERVAL, HOLD = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local COOLDOWN, TTL = tonumber(ARGV[14]), tonumber(ARGV[15])

local f = redis.call('HMGET', key, 'tokens', 'ts', 'rate', 'rate_ts', 'hold_until',
  'paused_until', 'cooldown_until', 'nudge_until', 'throttled_total')
local limited = cap > 0
local floor_rate = max_rate * FLOOR
local rate = tonumber(f[3]) or max_rate
if rate > max_rate then rate = max_rate end
if rate < floor_rate then rate = floor_rate end
local rate_ts = tonumber(f[4]) or now
local hold_until = tonumber(f[5]) or 0
local paused_until = tonumber(f[6]) or 0
local cooldown_until = tonumber(f[7]) or 0
local nudge_until = tonumber(f[8]) or 0
local total = tonumber(f[9]) or 0

-- Additive recovery, credited only for time that was neither paused nor held.
local from = math.max(rate_ts, hold_until, paused_until)
if now > from then
  rate = math.min(max_rate, rate + RECOVER * max_rate * (now - from))
end
if now > rate_ts then rate_ts = now end

-- Refill. State written by a host whose clock is ahead is as of `ts`: never refill backwards.
-- A caller behind `ts` (clock skew, or reading its clock just before another caller's script
-- ran) is treated as if at `ts`; the overshoot this allows is skew x rate tokens, which the
-- safety margin covers.
local eff_cap = 0
local tokens = 0
local ts = tonumber(f[2]) or now
if limited then
  eff_cap = cap * rate / max_rate
  tokens = tonumber(f[1]) or eff_cap
  if now > ts then
    tokens = tokens + (now - ts) * rate
    ts = now
  end
  if tokens > eff_cap then tokens = eff_cap end
end

local verdict = 'ok'
local wait = 0
if op == 'acquire' then
  if paused_until > now then
    verdict = 'pause'
    wait = paused_until - now
  elseif limited and n > 0 then
    -- A request larger than the bucket waits for a full bucket and leaves a debt, so it
    -- still makes progress; everyone after it waits the debt out.
    local need = math.min(n, eff_cap)
    if tokens < need then wait = (need - tokens) / rate end
    if wait > max_wait then
      verdict = 'long'
    else
      tokens = tokens - n
    end
  end
elseif op == 'throttled' then
  total = total + 1
  if now >= cooldown_until then
    rate = math.max(floor_rate, rate * DECREASE)
  end
  paused_until = math.max(paused_until, now + arg)
  if now >= cooldown_until then cooldown_until = paused_until + COOLDOWN end
  if limited then
    eff_cap = cap * rate / max_rate
    -- Drop what is in the bucket but keep debts: those requests are already promised.
    if tokens > 0 then tokens = 0 end
  end
elseif op == 'percent' then
  if arg >= 1.0 and now >= nudge_until then
    rate = math.max(floor_rate, rate * NUDGE)
    nudge_until = now + NUDGE_INTERVAL
    if limited then
      eff_cap = cap * rate / max_rate
      if tokens > eff_cap then tokens = eff_cap end
    end
  end
  if arg >= 0.8 then hold_until = math.max(hold_until, now + HOLD) end
end

local function s(x) return string.format('%.17g', x) end
if op ~= 'peek' then
  redis.call('HSET', key, 'tokens', s(tokens), 'ts', s(ts), 'rate', s(rate), 'rate_ts', s(rate_ts),
    'hold_until', s(hold_until), 'paused_until', s(paused_until),
    'cooldown_until', s(cooldown_until), 'nudge_until', s(nudge_until),
    'throttled_total', s(total))
  redis.call('EXPIRE', key, TTL)
end
return {verdict, s(wait), s(rate), s(eff_cap), s(tokens), s(paused_until), s(total)}
