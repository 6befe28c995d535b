-- Park a chunk we run while its job is paused (the reaper leaves parked chunks alone; resume
-- requeues them). If the job was resumed meanwhile, nothing changes and the caller requeues it.
-- KEYS: job hash, live hash. ARGV: chunk n, our claim's prefix ("r:<worker id>:"), parked state.
if redis.call('HEXISTS', KEYS[1], 'paused_reason') == 0 then return 0 end
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if cur and string.sub(cur, 1, #ARGV[2]) == ARGV[2] then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
  return 1
end
return 0
