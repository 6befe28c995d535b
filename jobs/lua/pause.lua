-- Pause a job (the first pause wins; a later one only refreshes the next probe time).
-- KEYS: job hash, paused set. ARGV: job id, reason, message, now, next probe time ('' for none).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local first = redis.call('HSETNX', KEYS[1], 'paused_reason', ARGV[2])
if first == 1 then
  redis.call('HSET', KEYS[1], 'paused_message', ARGV[3], 'paused_at', ARGV[4])
  redis.call('SADD', KEYS[2], ARGV[1])
end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'next_probe_at', ARGV[5]) else redis.call('HDEL', KEYS[1], 'next_probe_at') end
return first
