-- Register a write batch unless the job is cancelled (cancel waits for registered batches) or
-- paused, and count one more write attempt per row before the request goes out.
-- KEYS: job hash, inflight zset, attempts hash. ARGV: deadline, batch id, ttl_s, now, rows...
-- Returns 1 (registered), 2 (registered, the job's first write), 0 (cancelled) or -1 (paused).
if redis.call('HEXISTS', KEYS[1], 'cancel_requested') == 1 then return 0 end
if redis.call('HEXISTS', KEYS[1], 'paused_reason') == 1 then return -1 end
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
for i = 5, #ARGV do redis.call('HINCRBY', KEYS[3], ARGV[i], 1) end
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[3]))
return 1 + redis.call('HSETNX', KEYS[1], 'first_write_at', ARGV[4])
