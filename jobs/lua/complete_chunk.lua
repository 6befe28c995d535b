-- Finish chunk n once and, on the first completion, reserve the job's next chunk in the same step
-- (marked queued, so the reaper resends it if the caller dies before sending it). Rows given after
-- the first four arguments must all have a result, or nothing changes (results a Redis failover
-- lost: the chunk must run again).
-- Returns {first_time, chunks_done, chunks, next chunk or -1}; {-1, 0, 0, -1} when a row has no result.
-- KEYS: job hash, done bitmap, live hash, active set, results hash. ARGV: chunk n, job id, ttl_s, now, rows...
local job, done, live, active = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local n, job_id = tonumber(ARGV[1]), ARGV[2]
if redis.call('EXISTS', job) == 0 then
  redis.call('SREM', active, job_id)
  return {0, 0, 0, -1}
end
for i = 5, #ARGV do
  if redis.call('HEXISTS', KEYS[5], ARGV[i]) == 0 then return {-1, 0, 0, -1} end
end
redis.call('HDEL', live, ARGV[1])
if redis.call('SETBIT', done, n, 1) == 1 then
  return {0, tonumber(redis.call('HGET', job, 'chunks_done') or 0), tonumber(redis.call('HGET', job, 'chunks')), -1}
end
redis.call('EXPIRE', done, tonumber(ARGV[3]))
local d = redis.call('HINCRBY', job, 'chunks_done', 1)
local chunks = tonumber(redis.call('HGET', job, 'chunks'))
if d >= chunks then
  redis.call('SREM', active, job_id)
  if redis.call('HEXISTS', job, 'finished_at') == 0 then redis.call('HSET', job, 'finished_at', ARGV[4]) end
end
local nxt = tonumber(redis.call('HGET', job, 'next_chunk') or 0)
-- Chunks from held_from on wait for their day in the due set (jobs.schedule): never sent from here.
if nxt < tonumber(redis.call('HGET', job, 'held_from') or chunks) then
  redis.call('HSET', job, 'next_chunk', nxt + 1)
  redis.call('HSET', live, tostring(nxt), 'q:' .. ARGV[4])
else
  nxt = -1
end
return {1, d, chunks, nxt}
