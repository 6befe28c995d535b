-- Claim chunk n for a worker: skip if finished, or running on a live worker other than us.
-- KEYS: job hash, done bitmap, live hash. ARGV: chunk n, worker id, heartbeat key prefix, now,
-- heartbeat ttl in ms (0: none), heartbeat value.
-- A claimer without a heartbeat (it expired, or was lost with a failed-over primary, while its
-- worker could not reach Redis) gets one with the claim: a claim by a worker without one looks
-- orphaned to every reaper, which would requeue the chunk to a second runner while this one runs.
-- Returns 'ok', 'done', 'busy' or 'gone'.
local job, done, live = KEYS[1], KEYS[2], KEYS[3]
local n, wid, prefix, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('EXISTS', job) == 0 then return 'gone' end
if redis.call('GETBIT', done, tonumber(n)) == 1 then return 'done' end
local cur = redis.call('HGET', live, n)
if cur then
  local owner = string.match(cur, '^r:([^:]*):')
  if owner and owner ~= wid and redis.call('EXISTS', prefix .. owner) == 1 then return 'busy' end
end
redis.call('HSET', live, n, 'r:' .. wid .. ':' .. now)
local ttl_ms = tonumber(ARGV[5])
if ttl_ms > 0 then
  redis.call('SET', prefix .. wid, ARGV[6], 'PX', ttl_ms, 'NX')
end
if redis.call('HEXISTS', job, 'started_at') == 0 then
  redis.call('HSET', job, 'started_at', now)
end
return 'ok'
