-- Hand out the next unsent chunk of one day of a job (its rows dated ahead), marking it queued; -1
-- when the day has none left. A day's first chunks (its window) wait in the due set; each that
-- completes sends the day's next one from here, so the broker never holds a whole day.
-- KEYS: the job's day cursors hash, live hash. ARGV: the day's first chunk, its end (exclusive),
-- the cursor's first value (the first chunk after the window), now, ttl_s.
local n = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or ARGV[3])
if n >= tonumber(ARGV[2]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], n + 1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
redis.call('HSET', KEYS[2], tostring(n), 'q:' .. ARGV[4])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[5]))
return n
