-- Give back seats of a job's reservation.
-- KEYS[1] this job's hash; ARGV: sku, n pairs. Lowers each reservation, never below zero; returns
-- what is left of the last one.
local last = 0
for i = 1, #ARGV, 2 do
  local left = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0') - tonumber(ARGV[i + 1])
  if left > 0 then redis.call('HSET', KEYS[1], ARGV[i], left) else redis.call('HDEL', KEYS[1], ARGV[i]) end
  last = math.max(left, 0)
end
return last
