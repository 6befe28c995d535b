-- Take the members of the due set whose time has come, leased: each is due again at the lease end.
-- Returns the members due (at most the limit, the earliest first).
-- KEYS: the due set. ARGV: now, lease end, limit.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], member) end
return due
