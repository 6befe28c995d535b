-- Register a write batch unless the job is cancelled (cancel waits for registered batches) or
-- paused, and count one more write attempt per row before the request goes out.
-- KEYS: job hash, inflight zset, attempts hash, live hash. ARGV: deadline, batch id, ttl_s, now,
-- chunk n, the run's claim (its live state; '' for none), rows...
-- Returns 1 (registered), 2 (registered, the job's first write), 0 (cancelled), -1 (paused) or -2
-- (the chunk is no longer claimed by this run: its claim was lost with a failed-over primary, or
-- the chunk was requeued, and another run may hold it).
if ARGV[6] ~= '' and redis.call('HGET', KEYS[4], ARGV[5]) ~= ARGV[6] then return -2 end
if redis.call('HEXISTS', KEYS[1], 'cancel_requested') == 1 then return 0 end
if redis.call('HEXISTS', KEYS[1], 'paused_reason') == 1 then return -1 end
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
for i = 7, #ARGV do redis.call('HINCRBY', KEYS[3], ARGV[i], 1) end
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[3]))
return 1 + redis.call('HSETNX', KEYS[1], 'first_write_at', ARGV[4])
