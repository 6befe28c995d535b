-- Resume a paused job: clear the pause and requeue every parked chunk in one step.
-- KEYS: job hash, live hash, paused set. ARGV: job id, now. Returns the requeued chunk numbers,
-- or -1 when the job was not paused.
if redis.call('HEXISTS', KEYS[1], 'paused_reason') == 0 then return {-1} end
redis.call('HDEL', KEYS[1], 'paused_reason', 'paused_message', 'paused_at', 'next_probe_at')
redis.call('HSET', KEYS[1], 'resumed_at', ARGV[2])
redis.call('SREM', KEYS[3], ARGV[1])
local chunks = {}
local live = redis.call('HGETALL', KEYS[2])
for i = 1, #live, 2 do
  if string.sub(live[i + 1], 1, 2) == 'p:' then
    redis.call('HSET', KEYS[2], live[i], 'q:' .. ARGV[2])
    table.insert(chunks, tonumber(live[i]))
  end
end
return chunks
