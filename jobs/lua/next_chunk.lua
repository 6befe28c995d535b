-- Hand out the next undispatched chunk index, marking it queued; -1 when none are left.
-- KEYS: job hash, live hash. ARGV: now, ttl_s.
local job, live = KEYS[1], KEYS[2]
-- Chunks from held_from on wait for their day in the due set: they are never handed out here.
local chunks = tonumber(redis.call('HGET', job, 'held_from') or redis.call('HGET', job, 'chunks') or 0)
local nxt = tonumber(redis.call('HGET', job, 'next_chunk') or 0)
if nxt >= chunks then return -1 end
redis.call('HSET', job, 'next_chunk', nxt + 1)
redis.call('HSET', live, tostring(nxt), 'q:' .. ARGV[1])
redis.call('EXPIRE', live, tonumber(ARGV[2]))
return nxt
