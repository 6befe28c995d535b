-- Hand a chunk we run back: compare-and-set on a prefix of its live state (our own running claim).
-- KEYS: live hash. ARGV: chunk n, our claim's prefix ("r:<worker id>:"), new state.
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and string.sub(cur, 1, #ARGV[2]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
