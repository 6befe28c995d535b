-- Hand a job's seat reservation to another job (an approved job's run), in one step: no other job
-- can take the seats in between.
-- KEYS[1] the tenant's job set, KEYS[2] the giving job's hash, KEYS[3] the taking job's hash;
-- ARGV: giving job id, taking job id, ttl_s. Returns 1 if there was a reservation to hand over.
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('RENAME', KEYS[2], KEYS[3])
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[3]))
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[1], ARGV[2])
return 1
