-- Add to the throttled/retries counters of a job that still exists.
-- KEYS: job hash. ARGV: throttled, retries.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'throttled', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'retries', ARGV[2])
return 1
