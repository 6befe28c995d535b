-- Take the entries that are due: each gets a new due time (the lease) and its payload is returned.
-- An entry whose payload expired is dropped. Atomic, so two sweepers never take the same entry.
-- KEYS: due zset. ARGV: now, lease until, at most how many, payload key prefix.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local taken = {}
for _, id in ipairs(ids) do
  local payload = redis.call('GET', ARGV[4] .. id)
  if payload then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    table.insert(taken, payload)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return taken
