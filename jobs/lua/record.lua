-- Record terminal results: each row at most once; counters move only for first writes.
-- KEYS: job hash, results hash. ARGV: now, ttl_s, this second's counter key, k, the k user counters
-- (one per status, named like it: jobs.counters.USER_COUNTERS), then per result: row, status,
-- result JSON. Returns how many rows were new.
local job, res = KEYS[1], KEYS[2]
local now, ttl, sec_key, k = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
-- A chunk still running when its job expired must not bring the job back without an expiry.
if redis.call('EXISTS', job) == 0 then return 0 end
local added = 0
for i = 5 + k, #ARGV, 3 do
  if redis.call('HSETNX', res, ARGV[i], ARGV[i + 2]) == 1 then
    redis.call('HINCRBY', job, ARGV[i + 1], 1)
    added = added + 1
  end
end
redis.call('EXPIRE', res, ttl)
if added > 0 then
  redis.call('INCRBY', sec_key, added)
  redis.call('EXPIRE', sec_key, 120)
  if redis.call('HEXISTS', job, 'started_at') == 0 then
    redis.call('HSET', job, 'started_at', ARGV[1])
  end
end
local c = redis.call('HMGET', job, 'total', unpack(ARGV, 5, 4 + k))
local total = tonumber(c[1]) or 0
local terminal = 0
for i = 2, #c do terminal = terminal + (tonumber(c[i]) or 0) end
if total > 0 and terminal >= total and redis.call('HEXISTS', job, 'finished_at') == 0 then
  redis.call('HSET', job, 'finished_at', ARGV[1])
end
return added
